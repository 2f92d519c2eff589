"""The reading rule for files ssmbench did not just write (ssmbench/safe_read.py): regular files only, inside the
allowed roots after resolving links, under a size cap per kind, YAML bounded by its expanded size; one line
naming the file. Cases 3, 4, 7, 9 and 10 (Pathfinder FIFO) of issue 28."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from ssmbench import safe_read
from ssmbench.errors import CheckpointError, DataError, RecipeError
from ssmbench.recipe import read_yaml_mapping
from ssmbench.train import checkpoint

from test_data_listops import data_config, write as write_listops
from test_finished_runs import bomb


def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of `size` bytes that takes no disk space (zeros after `head`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def finishes(fn, seconds: float = 60.0):
    """fn()'s exception (or None) if it returns within `seconds`; a hang (a FIFO opened for reading) fails."""
    out: list = []

    def target():
        try:
            fn()
            out.append(None)
        except Exception as e:  # noqa: BLE001 - handed to the test
            out.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert out, f"still running after {seconds} s (hangs)"
    return out[0]


# ---- YAML ----------------------------------------------------------------------------------------------------


def test_a_yaml_bomb_recipe_is_refused_and_anchors_still_work(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text("name: x\ndata: {name: smnist}\nextra:\n  " + bomb().replace("\n", "\n  ") + "\n")
    with pytest.raises(RecipeError, match=r"bomb.yaml: invalid YAML.*expands to over 100,000 values"):
        read_yaml_mapping(path)
    path.write_text("a: &a [1, 2]\nb: *a\n")  # ordinary anchors stay usable
    assert read_yaml_mapping(path) == {"a": [1, 2], "b": [1, 2]}
    path.write_text("a: &a [1, *a]\n")  # a recursive document
    with pytest.raises(RecipeError, match="refers to the node that contains it"):
        read_yaml_mapping(path)


def test_sweep_dry_run_on_a_bomb_recipe_does_not_hang(tmp_path: Path) -> None:
    """`sweep --dry-run` computed the run key (json.dumps of the raw recipe) before validating it: it hung."""
    (tmp_path / "r.yaml").write_text("name: x\ndata: {name: smnist}\nmodel:\n  " + bomb().replace("\n", "\n  ") + "\n")
    (tmp_path / "s.yaml").write_text("name: s\nrecipe: r.yaml\ngrid: {variants: [a]}\n")
    proc = subprocess.run([sys.executable, "-m", "ssmbench", "sweep", "s.yaml", "--dry-run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "expands to over 100,000 values" in proc.stderr + proc.stdout


# ---- size caps -----------------------------------------------------------------------------------------------


def test_an_oversized_checkpoint_is_refused_unread(tmp_path: Path) -> None:
    """A 2 GiB + 1 sparse best.pt: refused by its size (before, read whole into memory, then a checksum error)."""
    path = sparse(tmp_path / "checkpoints" / "best.pt", safe_read.LIMITS["checkpoint"] + 1, checkpoint.MAGIC)
    with pytest.raises(CheckpointError, match=r"best.pt: 2,147,483,649 bytes, over the 2,147,483,648-byte limit"):
        checkpoint.load(path)


def test_an_oversized_last_pt_falls_back_to_prev_pt(tmp_path: Path) -> None:
    d = tmp_path / "checkpoints"
    d.mkdir()
    checkpoint.save(d / "prev.pt", {"step": 1})
    sparse(d / "last.pt", safe_read.LIMITS["checkpoint"] + 1)
    warnings: list[str] = []
    state, path = checkpoint.load_latest(d, warn=warnings.append)
    assert state == {"step": 1} and path.name == "prev.pt" and "over the" in warnings[0]


def test_an_oversized_recipe_is_refused_unread(tmp_path: Path) -> None:
    path = sparse(tmp_path / "big.yaml", 20 * 2**30, b"name: x\n")
    with pytest.raises(RecipeError, match=r"big.yaml: 21,474,836,480 bytes, over the 1,048,576-byte limit"):
        read_yaml_mapping(path)


def test_a_sparse_listops_tsv_is_refused_unread(tmp_path: Path, monkeypatch) -> None:
    """A line without a line break as large as the file (before: MemoryError), and a file over the data cap."""
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    folder = write_listops(tmp_path)
    sparse(folder / "basic_train.tsv", 64 * 2**20, b"Source\tTarget\n")
    with pytest.raises(DataError, match=r"basic_train.tsv: line 2 is longer than 16,777,216 bytes"):
        from ssmbench.data import build_data

        build_data(data_config(tmp_path, "listops"))
    sparse(folder / "basic_train.tsv", safe_read.LIMITS["data"] + 1, b"Source\tTarget\n")
    with pytest.raises(DataError, match=r"basic_train.tsv: 8,589,934,593 bytes, over the 8,589,934,592-byte limit"):
        build_data(data_config(tmp_path, "listops"))


# ---- containment and special files -------------------------------------------------------------------------


SECRET = "root:$6$secret-hash-never-printed:19000:0:99999:7:::"


@pytest.mark.parametrize("dataset", ["listops", "cifar"])
def test_a_data_file_linked_out_of_the_roots_is_refused_and_not_echoed(tmp_path: Path, monkeypatch, dataset) -> None:
    from ssmbench.data import build_data
    from ssmbench.data.fixtures import write_cifar

    root, outside = tmp_path / "root", tmp_path / "outside" / "shadow"
    outside.parent.mkdir()
    outside.write_text(SECRET + "\n")
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(root))
    if dataset == "listops":
        target = write_listops(root) / "basic_train.tsv"
        config = data_config(root, "listops")
    else:
        write_cifar(root / "cifar-10-batches-py", n=4)
        target = root / "cifar-10-batches-py" / "data_batch_1"
        config = data_config(root, "image")
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(DataError) as err:
        build_data(config)
    assert f"{target}: is outside the allowed roots (it leads to {outside})" in str(err.value)
    assert "secret" not in str(err.value) and "\n" not in str(err.value)


def test_a_pathfinder_metadata_fifo_does_not_hang(tmp_path: Path, monkeypatch) -> None:
    from ssmbench.data.generators import pathfinder
    from ssmbench.data.pathfinder import read_metadata

    root = tmp_path / "root"
    pathfinder.write_release(root / "lra_release", 32, 14, n=6, seed=0, batch_size=6)
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(root))
    meta = root / "lra_release" / "pathfinder32" / "curv_contour_length_14" / "metadata" / "0.npy"
    meta.unlink()
    os.mkfifo(meta)
    error = finishes(lambda: read_metadata(meta))
    assert isinstance(error, DataError) and f"{meta}: is a FIFO, not a regular file" in str(error)


# ---- concurrent preparation ----------------------------------------------------------------------------------


def _prepare(root: str, log: str, out, barrier) -> None:
    import time

    from ssmbench.data.cache import prepared_splits

    def build():
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(1.0)  # every process finds no cache, and all would build at once
        return {s: (np.arange(12, dtype=np.uint8).reshape(4, 3), np.arange(4)) for s in ("train", "val", "test")}

    barrier.wait()  # all four look for the cache at the same moment
    try:
        splits, _ = prepared_splits(Path(root), "toy", "k", build, lambda r: torch.from_numpy(r.astype(np.int64)))
        out.put(("ok", len(splits["train"])))
    except Exception as e:  # noqa: BLE001 - reported to the test
        out.put(("error", f"{type(e).__name__}: {e}"))


def test_concurrent_preparation_of_one_cache_builds_once_and_every_process_loads_it(tmp_path: Path) -> None:
    """Four processes on a fresh root (before: each built and replaced the cache another had just published,
    so one of them could fail loading it)."""
    import datasets  # noqa: F401 - imported once here, not by each process while the others race ahead

    ctx = multiprocessing.get_context("fork")
    out, log, barrier = ctx.Queue(), tmp_path / "builds.log", ctx.Barrier(4)
    procs = [ctx.Process(target=_prepare, args=(str(tmp_path), str(log), out, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    assert results == [("ok", 4)] * 4
    assert log.read_text() == "built\n"  # prepared once; the others waited and loaded it
