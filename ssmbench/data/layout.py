"""Where datasets live under the data root, where they came from, and the error when they are missing.

Every adapter reads from `<root>/<source>`, with `source` a folder relative to the data root (`data.root`,
default `data/`); a `source` that leaves the root is refused. Generators and synthesizers write a
`GENERATED.json` next to the files they produce, so an adapter reports "generated" / "synthetic" data as such
instead of "official".
"""

from __future__ import annotations

import json
from pathlib import Path

from ssmbench import safe_read
from ssmbench.errors import DataError
from ssmbench.paths import escape

MARKER = "GENERATED.json"
RECORD = "DOWNLOAD.json"  # written by `ssmbench data download`: URL, size and SHA-256 of the archive


def resolve_source(root: str | Path, source: str, task: str) -> Path:
    """`<root>/<source>`, refusing absolute paths and `..`, and (the containment rule of ssmbench/paths.py) a folder
    that, with symlinks followed, leads outside the allowed roots."""
    root = Path(root)
    rel = Path(source)
    if rel.is_absolute() or ".." in rel.parts:
        raise DataError(f"{task}: data option `source: {source}` must be a folder inside the data root {root} "
                        f"(no absolute path, no '..'); move the data under {root}/ or set `data.root` instead.")
    problem = escape(root / rel)
    if problem:
        raise DataError(f"{task}: data option `source: {source}`: {problem}")
    return root / rel


def write_marker(folder: Path, kind: str, description: str, **params) -> None:
    """Record that `folder` holds generated (`kind="generated"`) or synthetic data, and how it was made."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(json.dumps({"source": kind, "description": description, "params": params}, indent=1))


def data_origin(folder: Path, official: str) -> tuple[str, str]:
    """(source, provenance) of a data folder: the generator's marker if present, else ("official", `official`);
    the provenance ends with the archive's URL, size and SHA-256 when the folder (or the folder holding it, as
    for a Pathfinder difficulty) was downloaded by `ssmbench data download`."""
    marker = folder / MARKER
    source, provenance = "official", f"{official} in {folder}"
    if marker.is_file():
        try:
            info = json.loads(safe_read.read_bytes(marker, "record"))
            source, provenance = info["source"], f"{info['description']} in {folder}"
        except (ValueError, KeyError, TypeError, OSError, safe_read.FileRefused):
            raise DataError(f"{marker}: unreadable generator marker; delete it if the data is official, "
                            f"or generate the data again.") from None
    for record in (folder / RECORD, folder.parent / RECORD):
        if record.is_file():
            try:
                info = json.loads(safe_read.read_bytes(record, "record"))
                provenance += f" (downloaded from {info['url']}, {info['bytes']} bytes, sha256 {info['sha256']})"
            except (ValueError, KeyError, TypeError, OSError, safe_read.FileRefused):
                raise DataError(f"{record}: unreadable download record; delete it, or download the data again.") from None
            break
    return source, provenance


def missing_data(task: str, expected: list[Path], public: str, generate: str | None = None) -> DataError:
    """The error for absent data: which files, where they go, where the public release is, how to generate."""
    files = ", ".join(str(p) for p in expected[:4]) + (" ..." if len(expected) > 4 else "")
    how = f" Or generate a stand-in with `{generate}`." if generate else ""
    return DataError(f"{task}: data not found; expected {files}. Get it from {public} and put it there "
                     f"(or point `data.root` / `data.source` at your copy).{how}")
