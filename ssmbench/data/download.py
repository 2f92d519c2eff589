"""`ssmbench data download NAME` and `data.download: true`: fetch an adapter's official archive, verify it,
extract the folders the adapter needs, and record where they came from (sources in ssmbench/data/sources.py).

Steps, under a lock on `<root>/downloads/<archive>.lock` (so parallel runs and DDP ranks download once):
1. say what will be downloaded and extracted and how much space that takes; stop if the disk has less free;
2. download to `<root>/downloads/<archive>.part` and rename when complete (ssmbench/data/fetch.py: resumable);
   an archive already in `downloads/` (from an earlier task of the LRA release, or put there by hand) is reused;
3. compute its size and SHA-256 (and the published checksum's algorithm, e.g. torchvision's MD5 for CIFAR-10);
   on a mismatch the archive is renamed `<archive>.bad` and the error names file, expected and found digests;
4. extract safely and atomically (ssmbench/data/archive.py) with `DOWNLOAD.json` (URL, size, SHA-256, published
   checksum) in the folder, which the adapters add to the prepared data's provenance.
A mirror (`--url`) serves the same archive: the published checksum still applies unless `--sha256` replaces it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
from pathlib import Path

from rich.console import Console
from rich.filesize import decimal

from ssmbench import safe_read
from ssmbench.data.archive import extract
from ssmbench.data.catalog import present
from ssmbench.data.fetch import Failed, check_url, fetch, free_bytes, part_of
from ssmbench.data.layout import MARKER, RECORD, resolve_source
from ssmbench.data.sources import DOWNLOADS, Download
from ssmbench.errors import DataError, SSMBenchError
from ssmbench.paths import escape
from ssmbench.progress import transfer

DOWNLOADS_DIR = "downloads"


def spec(name: str) -> Download:
    if name not in DOWNLOADS:
        raise SSMBenchError(f"data download: {name} has no public archive to download; those that do: "
                            f"{', '.join(DOWNLOADS)} (`ssmbench data list` says how to get the others)")
    return DOWNLOADS[name]


def default_options(name: str):
    from ssmbench.registry import DATASETS

    return DATASETS.get(name).Options()


def target(name: str, root: Path, options) -> Path:
    """The folder the download of `name` becomes, for the adapter `options` (its `source`), under the data root."""
    return resolve_source(root, spec(name).folder.format(source=options.source), name)


def ensure(name: str, root: str | Path, options, console: Console | None = None) -> None:
    """`data.download: true`: download `name` when the adapter has an archive that holds the data these `options`
    name (e.g. not Pathfinder at resolution 64) and its folder holds no files; otherwise the adapter reports."""
    s = DOWNLOADS.get(name)
    if s and all(getattr(options, k) == v for k, v in s.fixed) and not present(target(name, Path(root), options)):
        download(name, root, options=options, console=console)


def download(name: str, root: str | Path, url: str | None = None, sha256: str | None = None, options=None,
             console: Console | None = None) -> dict:
    """Download, verify and extract adapter `name`'s data under `root`; return the download record."""
    s, root = spec(name), Path(root)
    problem = escape(root)
    if problem:
        raise SSMBenchError(f"data root {problem}")
    console = console or Console(stderr=True, soft_wrap=True)
    log = lambda text: console.print(text, highlight=False, markup=False)  # noqa: E731
    dest = target(name, root, options or default_options(name))
    url = check_url(url or s.archive.url)
    expected = s.archive.checksum
    if sha256 is not None:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256.lower()):
            raise SSMBenchError(f"--sha256 {sha256}: give the 64 hex digits of the archive's SHA-256")
        expected = ("sha256", sha256.lower())
    downloads = root / DOWNLOADS_DIR
    downloads.mkdir(parents=True, exist_ok=True)
    with open(downloads / f"{s.archive.filename}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if present(dest):
            return already(dest, log)
        archive = downloads / s.archive.filename
        plan(name, s, archive, dest, log)
        if not archive.is_file():
            try:
                with transfer(s.archive.filename, console) as progress:
                    fetch(url, archive, progress, log)
            except Failed as e:
                raise DataError(f"{name}: downloading failed: {e}. {by_hand(name, s, archive, dest)}") from None
        facts = verified(archive, expected, log)
        log(f"extracting {' or '.join(m + '/' for m in s.members if m) or 'the archive'} into {dest}")
        with transfer(f"extracting {s.archive.filename}", console) as progress:
            record = extract(archive, s.members, dest, s.limit,
                             {"url": url, "archive": s.archive.filename, **facts,
                              "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
                             progress)
    log(f"{name}: {record['files']:,} files ({decimal(record['extracted_bytes'])}) in {dest}; the archive stays in "
        f"{archive} (delete it to free {decimal(record['bytes'])})")
    return record


def already(dest: Path, log) -> dict:
    """The folder holds files already: nothing is downloaded; generated data must be moved aside first."""
    marker = next(dest.rglob(MARKER), None)
    if marker:
        raise DataError(f"{dest} holds generated or synthetic data ({marker}); move it aside to download the "
                        f"official data there.")
    log(f"{dest} already holds data; nothing downloaded (move it aside to download it again)")
    record = dest / RECORD
    return json.loads(safe_read.read_bytes(record, "record")) if record.is_file() else {"folder": str(dest)}


def plan(name: str, s: Download, archive: Path, dest: Path, log) -> None:
    """Say what is downloaded and extracted and the space it takes; a DataError if the disk has less free."""
    size = s.archive.size or s.archive.approx
    have = next((f.stat().st_size for f in (archive, part_of(archive)) if f.is_file()), 0)
    about = "" if s.archive.size else "about "
    need = max(size - have, 0) + s.extracted
    free = free_bytes(dest.parent)
    log(f"{name}: {s.archive.filename} ({about}{decimal(size)}, {decimal(have)} of it already in {archive.parent}) "
        f"-> {dest} (about {decimal(s.extracted)} extracted): needs about {decimal(need)} free, "
        f"{decimal(free)} free")
    if free < need:
        raise DataError(f"{name}: needs about {decimal(need)} free on the disk of {dest.parent}, which has "
                        f"{decimal(free)}; free some space or give --root on a larger disk.")


def verified(archive: Path, expected: tuple[str, str] | None, log) -> dict:
    """{bytes, sha256, checksum} of `archive` (cached in `<archive>.json` while the file is unchanged); a
    mismatch with `expected` renames the file `<archive>.bad` and raises a one-line DataError."""
    st = archive.stat()
    cache = archive.parent / f"{archive.name}.json"
    stamp = [st.st_size, st.st_mtime_ns]
    with contextlib.suppress(ValueError, OSError, KeyError, TypeError, safe_read.FileRefused):
        facts = json.loads(safe_read.read_bytes(cache, "record"))
        if facts.pop("stamp") == stamp and facts["checksum"] == (f"{expected[0]} {expected[1]}" if expected else None):
            return facts
    log(f"computing the checksum of {archive} ({decimal(st.st_size)})")
    algos = {"sha256": hashlib.sha256()}
    if expected:
        algos.setdefault(expected[0], hashlib.new(expected[0]))
    with open(archive, "rb") as f:
        while chunk := f.read(1 << 20):
            for h in algos.values():
                h.update(chunk)
    if expected and algos[expected[0]].hexdigest() != expected[1]:
        bad = archive.parent / f"{archive.name}.bad"
        archive.replace(bad)
        raise DataError(f"{archive}: checksum mismatch: expected {expected[0]} {expected[1]}, found "
                        f"{algos[expected[0]].hexdigest()}; the file was moved aside to {bad} and not used "
                        f"(run the command again to download it anew).")
    facts = {"bytes": st.st_size, "sha256": algos["sha256"].hexdigest(),
             "checksum": f"{expected[0]} {expected[1]}" if expected else None}
    log(f"{archive.name}: {'checksum ' + expected[0] + ' verified' if expected else 'no published checksum'}; "
        f"sha256 {facts['sha256']}")
    cache.write_text(json.dumps({**facts, "stamp": stamp}))
    return facts


def by_hand(name: str, s: Download, archive: Path, dest: Path) -> str:
    """How to get the data without this machine reaching the URL."""
    return (f"Offline or behind a proxy? Set https_proxy / http_proxy, or give a mirror with --url; or get "
            f"{s.archive.url} elsewhere, put it at {archive} and run `ssmbench data download {name}` again (it is "
            f"verified and extracted), or extract it yourself so that {dest} holds the files (docs/data.md).")
