"""Pathfinder: generated labels equal marker connectivity (flood fill on the PNGs), the release reader, splits."""

from collections import deque

import numpy as np
import pytest
from PIL import Image

from ssmbench.data import build_data
from ssmbench.data.fixtures import data_config
from ssmbench.data.generators import pathfinder as gen
from ssmbench.data.pathfinder import metadata_files, read_metadata
from ssmbench.errors import DataError


def connected(image: np.ndarray, a: tuple[int, int], b: tuple[int, int], reach: int) -> bool:
    """Breadth-first flood fill over lit pixels, stepping to any lit pixel within Chebyshev distance `reach`."""
    lit = image > 0
    seen = np.zeros_like(lit)
    queue = deque([a])
    seen[a] = True
    n = lit.shape[0]
    while queue:
        i, j = queue.popleft()
        if (i, j) == b:
            return True
        for di in range(-reach, reach + 1):
            for dj in range(-reach, reach + 1):
                u, v = i + di, j + dj
                if 0 <= u < n and 0 <= v < n and lit[u, v] and not seen[u, v]:
                    seen[u, v] = True
                    queue.append((u, v))
    return False


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("pf")
    gen.write_release(out / "lra_release", 32, 14, n=30, seed=1, batch_size=20)
    return out


def test_labels_equal_marker_connectivity(release, monkeypatch):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(release))  # data files are read only inside an allowed root
    folder = release / "lra_release" / "pathfinder32" / "curv_contour_length_14"
    metas = metadata_files(folder)
    assert [m.name for m in metas] == ["0.npy", "1.npy"]
    labels = []
    for m in metas:
        for line in m.read_text().splitlines():
            x1, y1, x2, y2 = map(float, line.split()[4:8])
            subdir, name, _, label = line.split()[:4]
            label = int(label)
            image = np.asarray(Image.open(folder / subdir / name))
            assert image.shape == (32, 32) and image.dtype == np.uint8
            a, b = (int(y1), int(x1)), (int(y2), int(x2))
            assert image[a] > 0 and image[b] > 0
            assert connected(image, a, b, gen.PRESETS[32].reach) == bool(label), name
            labels.append(label)
    assert [r[2] for m in metas for r in read_metadata(m)] == labels  # the release reader agrees
    assert 0.2 < np.mean(labels) < 0.8


def test_flood_fill_detects_a_gap():
    img = np.zeros((10, 10), np.uint8)
    img[2, 1:4] = 255
    img[2, 6:9] = 255
    assert connected(img, (2, 1), (2, 8), reach=2) is False
    assert connected(img, (2, 1), (2, 8), reach=3) is True


def test_adapter_split_and_pixels(release, monkeypatch):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(release))
    b = build_data(data_config(release, "pathfinder"))
    assert b.sizes() == {"train": 24, "val": 3, "test": 3} and b.seq_len == 1024 and b.source == "generated"
    x, y = b.train[0]
    assert x.shape == (1024, 1) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and int(y) in (0, 1)


def test_corrupt_png_named_and_empty_file_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    gen.write_release(tmp_path / "lra_release", 32, 6, n=12, seed=0)
    folder = tmp_path / "lra_release" / "pathfinder32" / "curv_baseline"
    (folder / "imgs" / "0" / "sample_3.png").write_bytes(b"")  # the release's known empty file
    b = build_data(data_config(tmp_path, "pathfinder", difficulty="curv_baseline"))
    assert sum(b.sizes().values()) == 11 and b.facts["skipped_empty"] == 1
    (folder / "imgs" / "0" / "sample_5.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (folder / "metadata" / "0.npy").touch()
    with pytest.raises(DataError, match="sample_5.png"):
        build_data(data_config(tmp_path, "pathfinder", difficulty="curv_baseline"))
