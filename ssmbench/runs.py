"""Run directories: `runs/<name>-<timestamp>-<hash>/` holding recipe.yaml, env.json, metrics.jsonl, results.json
and checkpoints/. Every file is written atomically (temp file, fsync, rename), so a reader never sees half a file.
The run directory is the only interface between training and reporting.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from ssmbench.errors import SSMBenchError

RECIPE, ENV, METRICS, RESULTS, CHECKPOINTS = "recipe.yaml", "env.json", "metrics.jsonl", "results.json", "checkpoints"
LOCK, TEMP_SUFFIX = ".lock", ".tmp"


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, previous: Path | None = None) -> None:
    """Write `data` to a temp file beside `path`, fsync it, then rename over `path`.

    If anything fails (a full disk, a kill), the previous `path` is left intact and the temp file is removed
    (after a kill, a stale `.*.tmp` may remain; `remove_temp_files` clears it on resume). With `previous`, the
    current `path` is renamed to `previous` just before the new file takes its place, so the last two versions
    are kept; a crash between the two renames leaves `previous` (complete) and no `path`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):  # name the file being written, not the temp file (or none, for a full disk)
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    fsync_dir(path.parent)


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete the temp files (`.*.tmp`) a killed writer left in `directory`; return them."""
    stale = sorted(Path(directory).glob(f".*{TEMP_SUFFIX}"))
    for f in stale:
        f.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def append_jsonl(path: Path, obj: dict) -> None:
    """Append one JSON line and fsync (a line is either wholly there or, after a crash, dropped on resume)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """All complete JSON lines of a file (a torn last line from a crash is skipped)."""
    rows = []
    if not Path(path).exists():
        return rows
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def rewrite_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def create_run_dir(runs_root: Path, name: str) -> Path:
    """Make a new, unique `<name>-<YYYYmmdd-HHMMSS>-<8 hex>` directory (exclusive mkdir, so no two runs share one)."""
    runs_root = Path(runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        path = runs_root / f"{name}-{stamp}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        (path / CHECKPOINTS).mkdir()
        return path


@contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock (`flock` on `RUN_DIR/.lock`) while a process trains in a run directory.

    Two processes (e.g. two sweeps resuming one preempted run) can then never write the same record. The OS
    drops the lock when its holder dies, even by SIGKILL, so a killed run can always be resumed.
    """
    import fcntl

    f = open(Path(run_dir) / LOCK, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise SSMBenchError(f"{run_dir}: another ssmbench process is training in this run directory; "
                            f"let it finish (or stop it) before resuming") from None
    try:
        yield
    finally:
        f.close()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str) -> dict[str, Any]:
    """Versions, device and host facts for env.json."""
    import numpy
    import torch

    import ssmbench

    info = {
        "ssmbench": ssmbench.__version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda,
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return info


def read_json(path: Path) -> dict | None:
    """A JSON file's content, or None if it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
