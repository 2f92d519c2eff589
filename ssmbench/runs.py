"""Run directories: `runs/<name>-<timestamp>-<hash>/` holding recipe.yaml, env.json, metrics.jsonl, results.json
and checkpoints/. Every file is written atomically (temp file, fsync, rename), so a reader never sees half a file.
The run directory is the only interface between training and reporting.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import secrets
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from ssmbench import safe_read
from ssmbench.errors import RecordError, SSMBenchError

RECIPE, ENV, METRICS, RESULTS, CHECKPOINTS = "recipe.yaml", "env.json", "metrics.jsonl", "results.json", "checkpoints"
LOCK, TEMP_SUFFIX = ".lock", ".tmp"
MAX_LINE_BYTES = 2**20  # a metrics line (~200 bytes); a longer one is dropped as damage. File caps: safe_read.LIMITS


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


def open_regular(path: Path, kind: str = "record"):
    """Open a run's file of `kind` (ssmbench/safe_read.py: `record`, `metrics`, `recipe`, `checkpoint`) for binary
    reading under the reading rule, or raise RecordError (FileNotFoundError if it is missing): a regular file under
    the kind's size cap whose links stay inside its run directory. The open is non-blocking, so a FIFO or device
    under a record's name never hangs the reader."""
    try:
        return safe_read.open_checked(path, kind, [run_folder(path)])
    except safe_read.FileRefused as e:
        raise RecordError(str(e)) from None


def run_folder(path: Path) -> Path:
    """The run directory a record or checkpoint path belongs to (resolved): its folder, or the folder above
    `checkpoints/`; the root its symlinks must stay inside."""
    parent = Path(path).parent
    return (parent.parent if parent.name == CHECKPOINTS else parent).resolve()


def read_record_bytes(path: Path, kind: str = "record") -> bytes:
    """The bytes of a run's file of `kind` (see `open_regular`)."""
    try:
        return safe_read.read_bytes(path, kind, [run_folder(path)])
    except safe_read.FileRefused as e:
        raise RecordError(str(e)) from None


def scan_jsonl(path: Path) -> tuple[list[dict], int]:
    """(rows, dropped): every line of a JSON-lines file that is a JSON object, and how many non-blank lines were
    not (a torn last line after a crash, bad bytes, a line over MAX_LINE_BYTES). Missing file: ([], 0).
    Read line by line (a regular file under the `metrics` size cap), so memory stays bounded by the rows kept."""
    rows, dropped = [], 0
    try:
        f = open_regular(path, "metrics")
    except FileNotFoundError:
        return rows, dropped
    with f:
        while line := f.readline(MAX_LINE_BYTES + 1):
            if len(line) > MAX_LINE_BYTES:  # skip the rest of an overlong line
                dropped += 1
                while line and not line.endswith(b"\n"):
                    line = f.readline(MAX_LINE_BYTES + 1)
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):  # bad JSON or UTF-8, a 5,000-digit integer, deep nesting
                row = None
            if isinstance(row, dict):
                rows.append(row)
            else:
                dropped += 1
    return rows, dropped


def read_jsonl(path: Path) -> list[dict]:
    """All complete JSON-object lines of a file (a torn last line from a crash is skipped)."""
    return scan_jsonl(path)[0]


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

    path = Path(run_dir) / LOCK
    if (path.exists() or path.is_symlink()) and (path.is_symlink() or not path.is_file()):
        raise SSMBenchError(f"{path}: not the lock file ssmbench writes (a FIFO, folder, device or link); remove "
                            f"it, then run again")
    f = open(path, "a+")
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


def code_version(root: Path | None = None) -> str:
    """sha256 (16 hex) of every ssmbench/**/*.py file (relative path and bytes, in path order; `root`: another
    package folder): the code that made a run, as it was on disk, committed or not. `make results` reruns records
    whose code_version differs."""
    root = Path(__file__).resolve().parent if root is None else Path(root)
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def environment(device: str) -> dict[str, Any]:
    """Versions, device and host facts for env.json."""
    import numpy
    import torch

    import ssmbench

    info = {
        "ssmbench": ssmbench.__version__,
        "git_commit": git_commit(),
        "code_version": code_version(),
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


def load_json(path: Path) -> dict:
    """A record file's JSON object. RecordError (naming the file) when it breaks the reading rule (`open_regular`)
    or does not hold one UTF-8 JSON object; FileNotFoundError when it is missing."""
    data = read_record_bytes(path)
    try:
        obj = json.loads(data)
    except UnicodeDecodeError:
        raise RecordError(f"{path}: not UTF-8 text") from None
    except RecursionError:
        raise RecordError(f"{path}: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, or an integer beyond Python's digit limit
        raise RecordError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise RecordError(f"{path}: holds a JSON {type(obj).__name__}, not an object")
    return obj


def load_yaml(path: Path) -> dict:
    """A record file's YAML mapping (recipe.yaml, under the `recipe` size cap and the YAML node bound of
    safe_read.BoundedLoader), with the checks of `load_json`."""
    import yaml

    data = read_record_bytes(path, "recipe")
    try:
        obj = safe_read.load_yaml(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise RecordError(f"{path}: not UTF-8 text") from None
    except RecursionError:
        raise RecordError(f"{path}: YAML nested too deeply") from None
    except (yaml.YAMLError, ValueError) as e:  # bad YAML, or an integer beyond Python's digit limit
        raise RecordError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise RecordError(f"{path}: holds a YAML {type(obj).__name__}, not a mapping")
    return obj


def test_problem(results: dict | None) -> str | None:
    """None if a results.json object holds a `test` object with possible values: a loss, every value a finite
    number, loss >= 0, accuracy in [0, 1], n a whole number >= 0; else what is wrong (one phrase)."""
    test = (results or {}).get("test")
    if not isinstance(test, dict) or "loss" not in test:
        return "no `test` object with a loss"
    for k, v in test.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"test.{k} is {v!r}, not a finite number"
        if (k == "loss" and v < 0) or (k == "accuracy" and not 0 <= v <= 1) or (k == "n" and (v < 0 or v != int(v))):
            return f"test.{k} = {v!r} is impossible"
    return None


def is_finished(results: dict | None) -> bool:
    """Whether a results.json object records a finished run: status "finished" and a `test` object with possible
    values (`test_problem`); a damaged record is not finished: resuming the run evaluates it again and rewrites
    results.json. The full definition of a finished run (every record valid) is ssmbench/finished.py."""
    return (results or {}).get("status") == "finished" and test_problem(results) is None


def read_json(path: Path) -> dict | None:
    """A JSON file's object, or None if it is missing, unreadable or not a JSON object (see `load_json`)."""
    try:
        return load_json(path)
    except (OSError, RecordError):
        return None
