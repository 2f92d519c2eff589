"""Checkpoints: a one-line header carrying the SHA-256 of the payload, then a `torch.save` payload.

    SSMBENCH-CHECKPOINT v1 sha256=<64 hex>\\n<torch.save bytes>

Files are written atomically (temp file, fsync, rename; `runs.atomic_write_bytes`) and the previous good one is
kept (`last.pt` -> `prev.pt` at the moment the new `last.pt` takes its place), so:
- a kill at any moment leaves `last.pt` or `prev.pt` complete (and perhaps a stale temp file);
- a truncated or corrupt file is detected by its checksum and `load_latest` falls back to the one before;
- a failed write (a full disk) raises `CheckpointError` and leaves the existing files as they were.
Loading uses `torch.load(weights_only=True)`: a checkpoint is data, never code.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, Callable

import torch

from ssmbench import runs
from ssmbench.errors import CheckpointError, RecordError

MAGIC = b"SSMBENCH-CHECKPOINT v1 sha256="
LAST, PREV = "last.pt", "prev.pt"


def to_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def from_bytes(data: bytes, source: str) -> dict[str, Any]:
    header, sep, payload = data.partition(b"\n")
    if not sep or not header.startswith(MAGIC):
        raise CheckpointError(f"{source}: not an ssmbench checkpoint (bad header; the file is empty, truncated or "
                              f"of another format)")
    expected = header[len(MAGIC):].decode("ascii", "replace")
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise CheckpointError(f"{source}: checksum mismatch (file truncated or corrupt): sha256 {actual[:12]}... "
                              f"!= recorded {expected[:12]}...")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # a payload that hashes right but does not unpickle as plain data
        raise CheckpointError(f"{source}: cannot load checkpoint payload ({type(e).__name__}: {e})") from None


def save(path: Path, state: dict[str, Any], keep_previous: bool = False) -> None:
    """Atomically write a checkpoint; with keep_previous, the current file becomes `prev.pt` as the new one lands."""
    path = Path(path)
    data = to_bytes(state)
    try:
        runs.atomic_write_bytes(path, data, previous=path.with_name(PREV) if keep_previous else None)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write checkpoint ({e.strerror or e}); the existing checkpoint files "
                              f"are unchanged. Free disk space, then resume the run.") from None


def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with runs.open_regular(path, "checkpoint") as f:  # a FIFO, device or oversized file is refused, not read
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror})") from None
    except RecordError as e:
        raise CheckpointError(str(e)) from None
    return from_bytes(data, str(path))


def load_latest(directory: Path, warn: Callable[[str], None] = print,
                use: Callable[[dict[str, Any], Path], None] | None = None) -> tuple[dict[str, Any], Path] | None:
    """The newest good checkpoint among last.pt and prev.pt, or None if neither was ever written.

    A corrupt or truncated one is reported through `warn` and skipped; so is one that passes its checksum but
    that `use(state, path)` cannot apply (a KeyError, shape mismatch or impossible value raised there: e.g. a
    last.pt written by other code or edited, with its checksum recomputed). If every file present is bad, that
    is a CheckpointError naming each file and its problem.
    """
    errors = []
    for name in (LAST, PREV):
        path = Path(directory) / name
        if not (path.exists() or path.is_symlink()):
            continue
        try:
            state = load(path)
            if use is not None:
                try:
                    use(state, path)
                except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError,
                        ZeroDivisionError) as e:
                    raise CheckpointError(f"{path}: passes its checksum but does not fit this run "
                                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        except CheckpointError as e:
            errors.append(str(e))
            warn(f"warning: {e}; trying the previous checkpoint")
            continue
        if errors:
            warn(f"warning: resuming from the previous checkpoint {path}")
        return state, path
    if not errors:
        return None
    raise CheckpointError(f"{directory}: no usable checkpoint to resume from ({'; '.join(errors)}); "
                          f"start a new run from the recipe instead")
