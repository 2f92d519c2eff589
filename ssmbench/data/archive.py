"""Safe, atomic extraction of part of a tar archive (gzip, bz2, xz or plain), which is untrusted input.

`extract(archive, members, dest, limit)` streams the archive once and writes only the members under one of the
folders `members` (their contents become `dest`) into a temporary folder beside `dest`, `.extract-<name>-<id>`,
renamed to `dest` only when every member is in place; on any error the temporary folder is removed, and one left
by a killed process is removed by the next extraction. So `dest` either holds the complete extraction or does not
exist, and `ssmbench data list` never reports a half-extracted folder as present.

Stricter than Python's `tarfile` filter `data`, which is applied to every member as well: the extraction stops
with a one-line error (nothing is kept) at a member whose name is absolute or has a `..` component, a hard link,
a device file or FIFO, a symbolic link that leads out of the folder, a member larger than `limit`, a total beyond
`limit`, or a member that would leave less than `RESERVE` bytes free on the disk. Permissions are those of the
`data` filter (no set-uid, no executable bits from the archive, no group/other write).
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import uuid
from pathlib import Path, PurePosixPath
from typing import Callable

from rich.filesize import decimal

from ssmbench.data.fetch import free_bytes
from ssmbench.data.layout import RECORD
from ssmbench.errors import DataError

RESERVE = 64 * 1024 * 1024  # bytes always left free on the disk


def member_name(name: str, archive: Path) -> PurePosixPath:
    """The member's path without a leading `./`; a DataError if it is absolute or has a `..` component."""
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")) or ".." in path.parts or "\\" in name:
        raise DataError(f"{archive}: member '{name}' has an absolute path or '..'; refused (the archive is not an "
                        f"official release: nothing was extracted)")
    return PurePosixPath(*[p for p in path.parts if p != "."])


def inside(path: PurePosixPath, folders: tuple[str, ...]) -> PurePosixPath | None:
    """`path` relative to the first of `folders` that holds it ("" holds everything), or None."""
    for folder in folders:
        top = PurePosixPath(folder)
        if folder == "" or path == top or top in path.parents:
            return path.relative_to(top) if folder else path
    return None


def stale(dest: Path) -> list[Path]:
    """Temporary folders of earlier extractions into `dest` (killed processes)."""
    return sorted(dest.parent.glob(f".extract-{dest.name}-*")) if dest.parent.is_dir() else []


def extract(archive: Path, members: tuple[str, ...], dest: Path, limit: int, record: dict,
            progress: Callable[[int, int], None]) -> dict:
    """Extract the members of `archive` under `members` into `dest` (absent, or a folder without files),
    atomically, reporting progress(archive bytes read, archive size). `record` (where the archive came from),
    with the number of files and bytes extracted added, is written to `dest/RECORD` before the rename; return
    that record."""
    for old in stale(dest):
        shutil.rmtree(old, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".extract-{dest.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    files = total = 0
    size = archive.stat().st_size
    try:
        with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for member in tar:
                tar.members.clear()  # a streamed archive keeps every header otherwise (millions for LRA)
                progress(raw.tell(), size)
                rel = inside(member_name(member.name, archive), members)
                if rel is None or rel == PurePosixPath("."):
                    continue
                total += check(member, archive, limit, total, tmp)
                try:
                    tar.extract(member.replace(name=str(rel), deep=False), tmp, filter="data")
                except tarfile.FilterError as e:  # the `data` filter: a link out of the folder, a device file
                    raise DataError(f"{archive}: member '{member.name}': {e}; refused (nothing was extracted).") from None
                files += member.isfile()
        progress(size, size)
        if not files:
            raise DataError(f"{archive}: no files under {' or '.join(m + '/' for m in members)}; is it the right "
                            f"archive?")
        record = {**record, "files": files, "extracted_bytes": total}
        (tmp / RECORD).write_text(json.dumps(record, indent=1))
        if dest.is_dir() and not dest.is_symlink():  # empty folders only: the caller found no file in it
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except (tarfile.TarError, EOFError) as e:  # not a tar archive, or a corrupt or truncated one
        raise DataError(f"{archive}: not a readable tar archive ({type(e).__name__}: {e}); nothing was extracted: "
                        f"delete it and download it again.") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return record


def check(member: tarfile.TarInfo, archive: Path, limit: int, total: int, tmp: Path) -> int:
    """The bytes `member` will write; a DataError for a member this module refuses (see the module docstring)."""
    where = f"{archive}: member '{member.name}'"
    if member.islnk() or not (member.isfile() or member.isdir() or member.issym()):
        raise DataError(f"{where} is a {'hard link' if member.islnk() else 'device file or FIFO'}; refused "
                        f"(nothing was extracted).")
    if member.size > limit or total + member.size > limit:
        raise DataError(f"{where} declares {decimal(member.size)}, which takes the extraction beyond its stated "
                        f"limit of {decimal(limit)}; refused (nothing was extracted).")
    free = free_bytes(tmp)
    if member.size + RESERVE > free:
        raise DataError(f"{where} needs {decimal(member.size)} but {tmp.parent} has {decimal(free)} free; free "
                        f"some space and run again.")
    return member.size
