"""The containment rule: where a path written in a recipe, a sweep file or a data file may point.

A shared recipe (or a downloaded dataset) must not make ssmbench read or write arbitrary places. One rule covers
`data.root`, the adapters' file options, `init.artifact`, `model.stu.cache_dir`, a sweep file's `runs_dir`, the
adapters' `source` folders and the image paths listed in Pathfinder metadata:

    the path, resolved against the working directory with every symlink followed (`Path.resolve`), must lie
    inside an allowed root: the working directory, the repository's data/ folder, or a folder listed in
    $SSMBENCH_DATA_ROOT (separated by os.pathsep).

Resolving first means a relative symlink, a `..` component or an absolute path are judged by where they really
lead. Paths the user types on the command line (`--runs-dir`, `--out`, `--plots`, `--root`) are the user's own
choice and are not restricted; they are checked up front instead (`output_file`, `output_folder`), so a command
that cannot write its result says so in one line before doing any work.
"""

from __future__ import annotations

import os
from pathlib import Path

from ssmbench.errors import SSMBenchError

DATA_ROOT_ENV = "SSMBENCH_DATA_ROOT"
REPO_DATA = Path(__file__).resolve().parents[1] / "data"


def allowed_roots() -> list[Path]:
    """The working directory, the repository's data/ and the folders listed in $SSMBENCH_DATA_ROOT, resolved."""
    listed = [Path(p).expanduser() for p in os.environ.get(DATA_ROOT_ENV, "").split(os.pathsep) if p.strip()]
    return [p.resolve() for p in [Path.cwd(), REPO_DATA, *listed]]


def escape(path: str | Path, roots: list[Path] | None = None) -> str | None:
    """None if `path` (resolved, symlinks followed) lies inside one of `roots` (default `allowed_roots()`, and then
    the reason says how to allow a folder), else a one-line reason naming the path and where it leads."""
    text = str(path)
    if not text.strip() or "\0" in text:
        return "must be a non-empty path without NUL characters"
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop, a name too long
        return f"'{text}' cannot be resolved ({type(e).__name__}: {e})"
    fix = "" if roots is not None else f"; use a path inside one of them, or add its folder to ${DATA_ROOT_ENV}"
    roots = allowed_roots() if roots is None else roots
    if any(real.is_relative_to(r) for r in roots):
        return None
    leads = "" if str(real) == text else f" (it leads to {real})"
    return f"'{text}' is outside the allowed roots{leads}: {', '.join(map(str, roots))}{fix}"


def _writable_ancestor(path: Path, option: str) -> None:
    """The nearest existing ancestor of `path` must be a folder this process can write into."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link
            raise SSMBenchError(f"{option} {path}: {parent} is a broken symbolic link; choose another path")
        parent = parent.parent
    if not parent.is_dir():
        raise SSMBenchError(f"{option} {path}: {parent} is not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SSMBenchError(f"{option} {path}: no permission to write in {parent}; choose another path")


def output_file(path: Path, option: str) -> Path:
    """Check that a command can write the file `path` (given with the command-line `option`); return it."""
    path = Path(path)
    if path.is_dir():
        raise SSMBenchError(f"{option} {path}: is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise SSMBenchError(f"{option} {path}: the file is not writable; choose another path")
    _writable_ancestor(path, option)
    return path


def output_folder(path: Path, option: str) -> Path:
    """Check that a command can create (or write into) the folder `path` given with `option`; return it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SSMBenchError(f"{option} {path}: is a file, not a folder; give a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise SSMBenchError(f"{option} {path}: no permission to write in this folder; choose another")
        return path
    _writable_ancestor(path, option)
    return path
