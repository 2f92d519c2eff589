"""Prepared splits on disk: Hugging Face `datasets` (memory-mapped Arrow) under `<root>/<task>/prepared/<key>/`.

An adapter reads its raw files once, turns every split into fixed-length integer rows (tokens, pixels or audio
samples) plus a label column, and stores them with `Dataset.save_to_disk`. The key is a hash of the source
files' fingerprints (relative path, size, modification time) and the preprocessing options, so changing either
prepares again, and a second run only memory-maps the Arrow files. A split is written to a temporary folder
next to its final place and renamed, so an interrupted run never leaves a half-written cache behind. Processes
preparing the same cache at once (several `data prepare` or sweep workers on a fresh root) take turns on a lock
(`flock` on `<root>/<task>/.locks/<key>.lock`): the first prepares, the others then load what it published.

`ArrowRows` serves `(x, y)` pairs straight from the memory map: rows are zero-copy numpy views of the Arrow
buffers, gathered per index, and converted by the adapter's `transform` (e.g. uint8 pixels -> float).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset

from ssmbench import safe_read
from ssmbench.errors import DataError

FORMAT_VERSION = 1  # bump when the stored layout changes, so old caches are not misread


def fingerprint(files: Iterable[Path], base: Path) -> list[tuple[str, int, int]]:
    """(path relative to `base`, size, mtime in ns) of every file: cheap, and changes whenever a file does."""
    out = []
    for f in sorted(Path(p) for p in files):
        st = f.stat()
        out.append((str(f.relative_to(base)) if f.is_relative_to(base) else str(f), st.st_size, st.st_mtime_ns))
    return out


def cache_key(files: Iterable[Path], base: Path, options: dict) -> str:
    """sha256 of the source fingerprints and the (JSON-encoded, key-sorted) preprocessing options, 16 hex digits."""
    payload = json.dumps({"v": FORMAT_VERSION, "files": fingerprint(files, base), "options": options}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def to_arrow(x: np.ndarray, y: np.ndarray) -> pa.Table:
    """Rows of x (S, ...) as a fixed-size-list column `x` (row shape kept in the metadata) and labels `y`."""
    x = np.ascontiguousarray(x)
    flat = pa.array(x.reshape(-1))
    width = int(np.prod(x.shape[1:]))
    table = pa.table({"x": pa.FixedSizeListArray.from_arrays(flat, width), "y": pa.array(np.asarray(y))})
    return table.replace_schema_metadata({"row_shape": json.dumps(list(x.shape[1:]))})


class ArrowRows(Dataset):
    """`(transform(x_row), y)` items of a prepared split; rows are zero-copy views of the memory-mapped Arrow file."""

    def __init__(self, table: pa.Table, row_shape: tuple[int, ...], transform: Callable[[np.ndarray], torch.Tensor]):
        col = table.column("x")
        self.chunks = [c.flatten().to_numpy(zero_copy_only=False).reshape(len(c), *row_shape)
                       for c in col.chunks if len(c)]
        self.starts = np.cumsum([0] + [len(c) for c in self.chunks])
        self.y = torch.from_numpy(table.column("y").to_numpy().astype(np.int64))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def row(self, i: int) -> np.ndarray:
        c = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.chunks[c][i - self.starts[c]]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.row(int(i))), self.y[int(i)]


def prepared_splits(root: Path, task: str, key: str, build: Callable[[], dict[str, tuple[np.ndarray, np.ndarray]]],
                    transform: Callable[[np.ndarray], torch.Tensor], log: Callable[[str], None] = lambda _: None,
                    ) -> tuple[dict[str, ArrowRows], Path]:
    """Load `<root>/<task>/prepared/<key>/`, or run `build()` -> {split: (x, y)} and store it there first.

    Returns the splits as `ArrowRows` datasets and the cache folder.
    """
    import datasets

    datasets.disable_progress_bars()
    final = Path(root) / task / "prepared" / key
    if not (final / "splits.json").is_file():
        with preparing(final):
            if not (final / "splits.json").is_file():  # else another process published it while this one waited
                build_and_publish(final, task, key, build, log)
    try:
        meta = json.loads(safe_read.read_bytes(final / "splits.json", "record"))
        out = {}
        for split, (_, row_shape) in meta.items():
            table = datasets.load_from_disk(str(final / split)).data.table
            out[split] = ArrowRows(table, tuple(row_shape), transform)
    except Exception as e:
        raise DataError(f"{task}: the prepared cache {final} is unreadable ({type(e).__name__}: {e}); "
                        f"delete that folder and run again to prepare it anew.") from None
    return out, final


@contextmanager
def preparing(final: Path) -> Iterator[None]:
    """Hold the lock of the cache folder `final` (an exclusive `flock`, released by the OS even on SIGKILL)."""
    import fcntl

    locks = final.parent.parent / ".locks"  # beside prepared/, which holds only caches
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{final.name}.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def build_and_publish(final: Path, task: str, key: str, build: Callable[[], dict[str, tuple[np.ndarray, np.ndarray]]],
                      log: Callable[[str], None]) -> None:
    """Run `build()` and store its splits in `final` (under the lock of `preparing`)."""
    import datasets

    log(f"preparing {task} into {final} (once; later runs load the cache)")
    arrays = build()
    empty = [split for split, (_, y) in arrays.items() if len(y) == 0]
    if empty:
        sizes = {split: len(y) for split, (_, y) in arrays.items()}
        raise DataError(f"{task}: the {', '.join(empty)} split(s) would be empty (sizes {sizes}); the data "
                        f"folder holds too few samples for this split rule.")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    try:
        for split, (x, y) in arrays.items():
            datasets.Dataset(to_arrow(x, y)).save_to_disk(str(tmp / split))
        (tmp / "splits.json").write_text(json.dumps({s: [int(len(y)), list(x.shape[1:])] for s, (x, y) in arrays.items()}))
        if final.exists():  # an incomplete folder from an older layout (a complete one is never replaced)
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
