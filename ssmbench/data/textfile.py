"""Line-by-line reading of the datasets' text files (ListOps and Retrieval TSVs, Speech Commands lists), so that
every problem names the file and the line: a line that is not UTF-8, or a file that cannot be read at all.

Every raw data file is read under the reading rule of ssmbench/safe_read.py (`data_file`, `data_bytes`): a
regular file under the `data` size cap that, with its symlinks followed, lies inside the allowed roots of
ssmbench/paths.py; a file linked out of them is refused before any of its bytes is read (or echoed in an error)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Iterator

from ssmbench import safe_read
from ssmbench.errors import DataError
from ssmbench.paths import allowed_roots


def data_file(path: Path) -> BinaryIO:
    """A raw data file opened for binary reading under the reading rule; DataError (naming it) if it breaks it."""
    try:
        return safe_read.open_checked(path, "data", allowed_roots())
    except safe_read.FileRefused as e:
        raise DataError(f"{e}; data files must be regular files inside the allowed roots.") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e}); get the file again.") from None


def data_bytes(path: Path) -> bytes:
    """The bytes of a raw data file read under the reading rule (`data_file`)."""
    with data_file(path) as f:
        return f.read()


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, text without its line ending) for every line of a UTF-8 text file read under the
    reading rule (`data_file`; a line over safe_read.MAX_LINE_BYTES is refused)."""
    try:
        with data_file(path) as f:
            i = 0
            while raw := f.readline(safe_read.MAX_LINE_BYTES + 1):
                i += 1
                if len(raw) > safe_read.MAX_LINE_BYTES:
                    raise DataError(f"{path}: line {i} is longer than {safe_read.MAX_LINE_BYTES:,} bytes; the file "
                                    f"is corrupt (or not a text file) — get it again.")
                try:
                    yield i, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}: line {i} is not UTF-8 text (byte {e.start} of the line is "
                                    f"0x{raw[e.start]:02x}); the file is corrupt — get it again.") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e}); get the file again.") from None
