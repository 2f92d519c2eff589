"""LRA Pathfinder (`pathfinder`, 32 x 32, L = 1024) and Path-X (`pathx`, 128 x 128, L = 16384) (docs/methods.md §G).

Layout: `pathfinder<R>/<difficulty>/imgs/<batch>/sample_<i>.png` (8-bit gray) and `metadata/<batch>.npy`, a
*text* file with one whitespace-separated line per image, `[subdir, file, index, label, ...]` (the image is
`<difficulty>/<subdir>/<file>`, the label the 4th field). As in state-spaces/s4: all metadata files in numeric
order, a seed-42 80/10/10 random split, pixels / 255 in [0, 1]; empty image files (the release has one) are
skipped and counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ssmbench.contracts import ModelIO
from ssmbench.data.base import Adapter, DataBundle
from ssmbench.data.cache import cache_key, prepared_splits
from ssmbench.data.layout import data_origin, missing_data, resolve_source
from ssmbench.data.textfile import data_bytes
from ssmbench.errors import DataError
from ssmbench.paths import escape
from ssmbench.registry import DATASETS

SPLIT_SEED = 42
FRACTIONS = (0.8, 0.1, 0.1)
PUBLIC = "the LRA release (lra_release.gz from github.com/google-research/long-range-arena), folders pathfinder32/, pathfinder128/"


def read_metadata(path: Path) -> list[tuple[str, str, int, str]]:
    """(subdir, file, label, "<path>: line <i>") per line of a Pathfinder metadata file (text despite `.npy`)."""
    rows = []
    try:
        text = data_bytes(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text metadata file ({type(e).__name__}); the release folder is corrupt.") from None
    for i, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) < 4:
                raise ValueError
            label = int(fields[3])
            if label not in (0, 1):
                raise ValueError
        except ValueError:
            raise DataError(f"{path}: line {i} is malformed (expected 'subdir file index label ...' with label "
                            f"0/1, got {line!r:.80}); the file is truncated or corrupt.") from None
        rows.append((fields[0], fields[1], label, f"{path}: line {i}"))
    return rows


def metadata_files(folder: Path) -> list[Path]:
    files = list((folder / "metadata").glob("*.npy"))
    return sorted(files, key=lambda f: (0, int(f.stem)) if f.stem.isdigit() else (1, f.stem))


def read_image(path: Path, resolution: int, folder: Path, where: str) -> np.ndarray | None:
    """uint8 (R*R,) pixels, or None for an empty file. The image must lie, with symlinks followed, inside the
    difficulty `folder` (the containment rule of ssmbench/paths.py with that folder as the only root) and exist;
    otherwise a DataError names the metadata line (`where`). A bad PNG raises a DataError naming it."""
    from PIL import Image

    problem = escape(path, [folder.resolve()])
    if problem:
        raise DataError(f"{where}: the image {problem}; metadata may only name images inside the release folder.")
    if not path.is_file():
        raise DataError(f"{where}: names {path}, which does not exist; the release folder is incomplete.")
    if path.stat().st_size == 0:
        return None
    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("L"))
    except Exception as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e}); the release folder is corrupt.") from None
    if a.shape != (resolution, resolution):
        raise DataError(f"{path}: image is {a.shape[1]}x{a.shape[0]}, expected {resolution}x{resolution}; "
                        f"is `resolution` right for this folder?")
    return a.reshape(-1)


def seeded_split(n: int) -> dict[str, np.ndarray]:
    """80/10/10 of a seed-42 permutation of range(n)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).numpy()
    n_train, n_val = int(FRACTIONS[0] * n), int(FRACTIONS[1] * n)
    return {"train": perm[:n_train], "val": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:]}


def pixels_to_unit(row: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(row.astype(np.float32) / 255.0).unsqueeze(-1)


class PathfinderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resolution: Literal[32, 64, 128, 256] = Field(32, description="image side; the sequence length is its square")
    difficulty: Literal["curv_baseline", "curv_contour_length_9", "curv_contour_length_14"] = Field(
        "curv_contour_length_14", description="release folder (contour length 6 / 9 / 14)")
    source: str = Field("lra_release", description="folder under data.root that holds pathfinder<resolution>/")


class PathXOptions(PathfinderOptions):
    resolution: Literal[32, 64, 128, 256] = Field(128, description="image side; the sequence length is its square")


class Pathfinder(Adapter):
    Options = PathfinderOptions
    description = "LRA Pathfinder: are the two dots connected? 32 x 32 pixels, L = 1024, 2 classes"
    name = "pathfinder"

    def folder(self, cfg, options) -> Path:
        return resolve_source(cfg.root, options.source, self.name) / f"pathfinder{options.resolution}" / options.difficulty

    def generate_command(self, options) -> str:
        length = {"curv_baseline": 6, "curv_contour_length_9": 9, "curv_contour_length_14": 14}[options.difficulty]
        return (f"ssmbench data generate pathfinder --resolution {options.resolution} --contour-length {length} "
                f"--n 200000 --out data/{options.source}")

    def build(self, cfg, options: PathfinderOptions) -> DataBundle:
        folder = self.folder(cfg, options)
        meta = metadata_files(folder)
        if not meta:
            raise missing_data(self.name, [folder / "metadata" / "0.npy", folder / "imgs" / "0" / "sample_0.png"],
                               PUBLIC, self.generate_command(options))
        rows = [r for m in meta for r in read_metadata(m)]

        def prepare():
            images, labels = [], []
            for subdir, name, label, where in rows:
                a = read_image(folder / subdir / name, options.resolution, folder, where)
                if a is None:
                    continue
                images.append(a)
                labels.append(label)
            if not images:
                raise DataError(f"{folder}: the metadata lists no readable images.")
            x, y = np.stack(images), np.array(labels, dtype=np.int64)
            return {split: (x[idx], y[idx]) for split, idx in seeded_split(len(y)).items()}

        key = cache_key(meta, Path(cfg.root), options.model_dump(exclude={"source"}))
        splits, cache = prepared_splits(Path(cfg.root), self.name, key, prepare, pixels_to_unit)
        source, provenance = data_origin(folder, f"LRA pathfinder{options.resolution}/{options.difficulty} release")
        return DataBundle(train=splits["train"], val=splits["val"], test=splits["test"],
                          io=ModelIO(d_input=1, input_kind="real", n_outputs=2), seq_len=options.resolution ** 2,
                          task="classification", source=source, provenance=provenance,
                          facts={"cache": str(cache), "listed": len(rows),
                                 "skipped_empty": len(rows) - sum(len(d) for d in splits.values())})


DATASETS.register("pathfinder")(Pathfinder)


@DATASETS.register("pathx")
class PathX(Pathfinder):
    Options = PathXOptions
    description = "LRA Path-X: Pathfinder at 128 x 128 pixels, L = 16384, 2 classes"
    name = "pathx"
