"""Resumable download of one file over http(s) or from a file URL, with urllib (standard library only).

Bytes go to `<dest>.part`; the file takes its final name only when complete. A `.part` left by an interrupted
run (a dropped connection, Ctrl-C, kill -9) is continued with an HTTP `Range: bytes=<have>-` request: a `206`
answer whose `Content-Range` starts at `<have>` is appended; a server that ignores ranges (`200`) or refuses this
one (`416`) makes the download start again from byte 0, cleanly (the part file is truncated, never mixed). Within
one run a connection that drops after delivering bytes is resumed at once; two attempts in a row that deliver
nothing end the download with an error naming the URL. A `file:` URL is read from its local path, resuming by
seeking. Completeness is checked against the length the server announces; integrity is the caller's checksum.
"""

from __future__ import annotations

import http.client
import shutil
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlparse

from ssmbench.errors import DataError

CHUNK = 1 << 20
TIMEOUT = 60  # seconds without a byte before a connection counts as dropped
STALLS = 2  # attempts in a row that deliver nothing before giving up
WAIT = 1.0  # seconds between attempts

Progress = Callable[[int, int | None], None]


class Failed(DataError):
    """The download could not be completed; the message names the URL and the reason."""


class Incomplete(Exception):
    """The connection closed before the announced length arrived."""


NETWORK = (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError, http.client.HTTPException, Incomplete)


def check_url(url: str) -> str:
    """`url` if its scheme is http, https or file, else a DataError."""
    if urlparse(url).scheme not in ("http", "https", "file"):
        raise DataError(f"--url {url}: give an http://, https:// or file:// URL")
    return url


def part_of(dest: Path) -> Path:
    return dest.parent / f"{dest.name}.part"


def fetch(url: str, dest: Path, progress: Progress, log: Callable[[str], None]) -> None:
    """Download `url` to `dest` through `<dest>.part`, resuming a part file left by an earlier run."""
    part = part_of(dest)
    stalls = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            attempt(url, part, progress, log)
            break
        except urllib.error.HTTPError as e:
            if e.code == 416 and before:
                log(f"{url}: the server refused to continue at byte {before:,} (416); starting again from byte 0")
                part.unlink()
                continue
            if e.code < 500 and e.code not in (408, 429):  # trying again will not help
                raise Failed(f"{url}: the server answered {e.code} {e.reason}") from None
            error = f"the server answered {e.code} {e.reason}"
        except NETWORK as e:  # not a local disk error (a full disk): that one stops the download as it is
            error = f"{type(e).__name__}: {getattr(e, 'reason', None) or e}"
        have = part.stat().st_size if part.exists() else 0
        stalls = 0 if have > before else stalls + 1
        if stalls >= STALLS:
            raise Failed(f"{url}: {error}")
        log(f"{url}: connection lost at byte {have:,} ({error}); trying again")
        time.sleep(WAIT)
    part.replace(dest)


def attempt(url: str, part: Path, progress: Progress, log: Callable[[str], None]) -> None:
    """One request: continue `part` from its current length to the end of the file, or start it over."""
    have = part.stat().st_size if part.exists() else 0
    parsed = urlparse(url)
    if parsed.scheme == "file":
        source = Path(unquote(parsed.path))
        if not source.is_file():
            raise Failed(f"{url}: {source} is not a file")
        with open(source, "rb") as src, open(part, "ab" if have else "wb") as out:
            src.seek(have)
            total = source.stat().st_size
            copy(src, out, have, total, progress)
        return
    headers = {"User-Agent": "ssmbench", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT) as r:
        length = r.headers.get("Content-Length")
        if have and r.status == 206 and (r.headers.get("Content-Range") or "").startswith(f"bytes {have}-"):
            log(f"resuming {part} at byte {have:,}")
        elif have:
            log(f"{url}: the server does not resume downloads (status {r.status}); starting again from byte 0")
            have = 0
        total = have + int(length) if length and length.isdigit() else None
        with open(part, "ab" if have else "wb") as out:
            copy(r, out, have, total, progress)


def copy(src, out, done: int, total: int | None, progress: Progress) -> None:
    """Append `src` to `out` as bytes arrive (`read1`: what is there, at most CHUNK), each chunk flushed to the
    file so that a killed process leaves every byte it received; report (done, total); Incomplete if the bytes
    end short of `total`."""
    progress(done, total)
    while chunk := src.read1(CHUNK):
        out.write(chunk)
        out.flush()
        done += len(chunk)
        progress(done, total)
    if total is not None and done < total:
        raise Incomplete(f"the connection closed at byte {done:,} of {total:,}")


def free_bytes(folder: Path) -> int:
    """Free space on the disk that holds `folder` (or its nearest existing parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free
