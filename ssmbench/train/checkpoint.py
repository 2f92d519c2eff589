"""Checkpoints: a one-line header carrying the SHA-256 of the payload, then a `torch.save` payload.

Files are written atomically and the previous good one is kept (`last.pt` -> `prev.pt`), so a truncated or
corrupt file is detected by its checksum and resume falls back to the one before. Loading uses
`torch.load(weights_only=True)`: a checkpoint is data, never code.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from ssmbench.errors import CheckpointError
from ssmbench.runs import atomic_write_bytes

MAGIC = b"SSMBENCH-CHECKPOINT v1 sha256="


def to_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def from_bytes(data: bytes, source: str) -> dict[str, Any]:
    header, sep, payload = data.partition(b"\n")
    if not sep or not header.startswith(MAGIC):
        raise CheckpointError(f"{source}: not an ssmbench checkpoint (bad header)")
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
    """Atomically write a checkpoint; with keep_previous, the current file becomes `prev.pt` first."""
    path = Path(path)
    data = to_bytes(state)
    if keep_previous and path.exists():
        os.replace(path, path.with_name("prev.pt"))
    atomic_write_bytes(path, data)


def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror})") from None
    return from_bytes(data, str(path))


def load_latest(directory: Path, warn=print) -> tuple[dict[str, Any], Path]:
    """The newest good checkpoint among last.pt and prev.pt; a corrupt one is reported and skipped."""
    errors = []
    for name in ("last.pt", "prev.pt"):
        path = Path(directory) / name
        if not path.exists():
            continue
        try:
            return load(path), path
        except CheckpointError as e:
            errors.append(str(e))
            warn(f"warning: {e}; trying the previous checkpoint")
    detail = "; ".join(errors) if errors else "no last.pt or prev.pt"
    raise CheckpointError(f"{directory}: no usable checkpoint to resume from ({detail})")
