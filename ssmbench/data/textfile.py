"""Line-by-line reading of the datasets' text files (ListOps and Retrieval TSVs, Speech Commands lists), so that
every problem names the file and the line: a line that is not UTF-8, or a file that cannot be read at all."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ssmbench.errors import DataError


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, text without its line ending) for every line of a UTF-8 text file."""
    try:
        with open(path, "rb") as f:
            for i, raw in enumerate(f, start=1):
                try:
                    yield i, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}: line {i} is not UTF-8 text (byte {e.start} of the line is "
                                    f"0x{raw[e.start]:02x}); the file is corrupt — get it again.") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e}); get the file again.") from None
