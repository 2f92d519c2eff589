"""Checkpoint files: checksum header, atomic writes, fallback to prev.pt, full disks, data-only loading."""

from __future__ import annotations

import errno
import hashlib
import io
import threading
from pathlib import Path

import pytest
import torch

from killpoint import assert_same_run, one_thread, run_dir, tiny  # noqa: F401 (fixture)
from ssmbench import runs
from ssmbench.errors import CheckpointError
from ssmbench.train import checkpoint, engine


def state(value: float) -> dict:
    return {"model": {"w": torch.full((3, 4), value, dtype=torch.float64)}, "step": int(value)}


def test_roundtrip_and_header_checksum(tmp_path):
    path = tmp_path / "a.pt"
    checkpoint.save(path, state(1.5))
    data = path.read_bytes()
    header, payload = data.split(b"\n", 1)
    assert header == checkpoint.MAGIC + hashlib.sha256(payload).hexdigest().encode()  # independent hash
    loaded = checkpoint.load(path)
    assert torch.equal(loaded["model"]["w"], state(1.5)["model"]["w"]) and loaded["step"] == 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "header"])
def test_corrupt_last_is_detected_and_resume_falls_back_to_prev(tmp_path, damage):
    checkpoint.save(tmp_path / "last.pt", state(1.0), keep_previous=True)
    checkpoint.save(tmp_path / "last.pt", state(2.0), keep_previous=True)
    last = tmp_path / "last.pt"
    data = bytearray(last.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "flip":
        data[-10] ^= 0xFF
    elif damage == "empty":
        data = bytearray()
    else:
        data[:8] = b"PK\x03\x04xxxx"
    last.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=str(last)):
        checkpoint.load(last)
    warnings = []
    loaded, path = checkpoint.load_latest(tmp_path, warn=warnings.append)
    assert path.name == "prev.pt" and loaded["step"] == 1
    assert any(str(last) in w for w in warnings) and any("prev.pt" in w for w in warnings)


def test_no_checkpoint_and_all_corrupt(tmp_path):
    assert checkpoint.load_latest(tmp_path, warn=lambda _: None) is None
    (tmp_path / "last.pt").write_bytes(b"junk")
    (tmp_path / "prev.pt").write_bytes(checkpoint.MAGIC + b"0" * 64 + b"\npayload")
    with pytest.raises(CheckpointError) as e:
        checkpoint.load_latest(tmp_path, warn=lambda _: None)
    assert "last.pt: not an ssmbench checkpoint" in str(e.value) and "prev.pt: checksum mismatch" in str(e.value)


class Exploit:
    """Unpickling this would run code (create a file); weights_only loading must refuse it."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_checkpoints_load_as_data_not_code(tmp_path):
    target = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"model": {}, "x": Exploit(target)}, buf)
    payload = buf.getvalue()
    path = tmp_path / "evil.pt"
    path.write_bytes(checkpoint.MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    with pytest.raises(CheckpointError, match="cannot load checkpoint payload"):
        checkpoint.load(path)
    assert not target.exists()


def full_disk(monkeypatch, fail_on: str, after: int = 0):
    """Make writes of temp files for `fail_on` raise ENOSPC after `after` bytes (the rest of the disk works)."""
    real_open = open

    class FullFile(io.FileIO):
        def write(self, data):
            super().write(bytes(data)[:after])
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(file, mode="r", *args, **kwargs):
        if f".{fail_on}." in Path(file).name and "w" in mode:
            return FullFile(file, "w")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(runs, "open", fake_open, raising=False)


def test_full_disk_leaves_previous_files_intact(tmp_path, monkeypatch):
    checkpoint.save(tmp_path / "last.pt", state(1.0), keep_previous=True)
    checkpoint.save(tmp_path / "last.pt", state(2.0), keep_previous=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    full_disk(monkeypatch, "last.pt", after=100)
    with pytest.raises(CheckpointError, match="No space left on device.*unchanged"):
        checkpoint.save(tmp_path / "last.pt", state(3.0), keep_previous=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp file left either


@pytest.mark.usefixtures("one_thread")
def test_full_disk_during_training_fails_cleanly_and_resumes_identically(tmp_path, monkeypatch):
    """ENOSPC on the third last.pt write (step 6): the run fails with a CheckpointError, results.json says so,
    last.pt (step 4) and prev.pt (step 2) are intact, and after "freeing space" the resume matches a run that
    never failed."""
    engine.train(tiny(), runs_root=tmp_path / "ref", quiet=True, log=lambda *_: None)
    writes = [0]
    real_write = runs.atomic_write_bytes

    def failing_write(path, data, previous=None):
        if Path(path).name == "last.pt":
            writes[0] += 1
            if writes[0] == 3:
                full_disk(monkeypatch, "last.pt", after=1000)
        return real_write(path, data, previous)

    monkeypatch.setattr(runs, "atomic_write_bytes", failing_write)
    with pytest.raises(CheckpointError, match="No space left"):
        engine.train(tiny(), runs_root=tmp_path / "runs", quiet=True, log=lambda *_: None)
    rd = run_dir(tmp_path / "runs")
    results = runs.read_json(rd / runs.RESULTS)
    assert results["status"] == "failed" and "No space left" in results["error"] and results["step"] == 6
    assert checkpoint.load(rd / "checkpoints" / "last.pt")["progress"]["step"] == 4
    assert checkpoint.load(rd / "checkpoints" / "prev.pt")["progress"]["step"] == 2
    monkeypatch.undo()
    engine.train(resume=rd, quiet=True, log=lambda *_: None)
    assert_same_run(run_dir(tmp_path / "ref"), rd)


def test_concurrent_atomic_writers_never_mix_files(tmp_path):
    """Threads writing different payloads to one path: the file is always exactly one whole payload."""
    path = tmp_path / "results.json"
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    threads = [threading.Thread(target=runs.atomic_write_bytes, args=(path, p)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert path.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
