"""`ssmbench data download` against a test HTTP server on 127.0.0.1 (no other address is contacted).

The server serves small archives in the official layouts (written here from ssmbench/data/fixtures.py, without
the fixtures' GENERATED.json markers, as the real archives have none) and can drop a connection mid-file, hold
it (so a process can be killed mid-download), ignore Range requests or corrupt a byte. Every downloaded dataset
is then prepared and trained for 3 steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from rich.filesize import decimal

from killpoint import cli_run, one_thread  # noqa: F401 (fixture)
from ssmbench.data import fixtures, sources

LRA_TASKS = ["listops", "retrieval", "pathfinder", "pathx"]


class Server(ThreadingHTTPServer):
    """Serves `files` {name: bytes}; the switches change how (see the module docstring). Records every request."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.ranges, self.corrupt = True, False
        self.drop_at: int | None = None  # the next response stops after this many bytes and closes the connection
        self.hold: threading.Event | None = None  # the next response sends half its bytes, then waits for this
        self.requests: list[tuple[str, str | None]] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        s: Server = self.server
        name = self.path.lstrip("/")
        s.requests.append((name, self.headers.get("Range")))
        if name not in s.files:
            self.send_error(404)
            return
        body = s.files[name]
        if s.corrupt:
            body = body[:len(body) // 2] + bytes([body[len(body) // 2] ^ 1]) + body[len(body) // 2 + 1:]
        start = int(self.headers["Range"][6:-1]) if s.ranges and self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        data = body[start:]
        drop, s.drop_at = s.drop_at, None
        hold, s.hold = s.hold, None
        if drop is not None:
            self.wfile.write(data[:drop])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if hold is not None:
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            hold.wait(60)
            data = data[len(data) // 2:]
        try:
            self.wfile.write(data)
        except OSError:  # the client was killed
            pass


@pytest.fixture
def server():
    s = Server()
    thread = threading.Thread(target=s.serve_forever, daemon=True)
    thread.start()
    yield s
    s.shutdown()
    s.server_close()


def tar_gz(stage: Path, arcname: str, extra=None) -> bytes:
    """A .tar.gz of `stage` under `arcname`, without GENERATED.json markers; `extra(tar)` may add members."""
    for marker in stage.rglob("GENERATED.json"):
        marker.unlink()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(stage, arcname=arcname)
        if extra:
            extra(tar)
    return buf.getvalue()


def write_pathfinder(folder: Path, resolution: int, n: int = 20) -> None:
    """Random-noise PNGs and a metadata file in the Pathfinder release layout (the generator is slow at 128)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(resolution)
    (folder / "imgs" / "0").mkdir(parents=True)
    (folder / "metadata").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (resolution, resolution), dtype=np.uint8)).save(folder / "imgs" / "0" / f"sample_{i}.png")
    (folder / "metadata" / "0.npy").write_text("".join(f"imgs/0 sample_{i}.png {i} {i % 2} 14\n" for i in range(n)))


def lra_archive(tmp: Path) -> bytes:
    """lra_release.gz in the release layout: lra_release/lra_release/{listops-1000,tsv_data,pathfinder32,128}."""
    stage = tmp / "stage-lra" / "lra_release"
    fixtures.write_listops(stage / "listops-1000")
    fixtures.write_aan(stage / "tsv_data")
    for res in (32, 128):
        write_pathfinder(stage / f"pathfinder{res}" / "curv_contour_length_14", res)
    return tar_gz(stage, "lra_release/lra_release")


def archive_of(task: str, tmp: Path) -> tuple[str, bytes]:
    """(archive file name, bytes) of the archive the catalog downloads for `task`."""
    from ssmbench.data.speech import WORDS35

    stage = tmp / f"stage-{task}"
    if task in LRA_TASKS:
        return "lra_release.gz", lra_archive(tmp)
    if task in ("image", "scifar"):
        fixtures.write_cifar(stage / "cifar-10-batches-py")
        return "cifar-10-python.tar.gz", tar_gz(stage / "cifar-10-batches-py", "cifar-10-batches-py")
    if task == "speech":
        fixtures.write_speech(stage, WORDS35)
        return "speech_commands_v0.02.tar.gz", tar_gz(stage, ".")  # the release has no top folder
    fixtures.write_imdb(stage / "aclImdb")
    return "aclImdb_v1.tar.gz", tar_gz(stage / "aclImdb", "aclImdb")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(server: Server, task: str, name: str, data: bytes, *more: str) -> tuple[int, str]:
    server.files[name] = data
    return cli_run("data", "download", task, "--root", "data", "--url", server.url(name), "--sha256", sha(data), *more)


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def row(task: str) -> list[str]:
    code, out = cli_run("data", "list", "--root", "data")
    assert code == 0, out
    return next(ln for ln in out.splitlines() if ln.startswith(f"{task} ")).split()


# Tiny models and short rows, so that 3 steps on each dataset take seconds on a CPU.
OPTIONS = {"listops": {"max_length": 128}, "retrieval": {"max_length": 128}, "text": {"max_length": 256}}


def train_3_steps(task: str, **data) -> dict:
    recipe = {"name": f"dl-{task}", "data": {"name": task, "root": "data", **OPTIONS.get(task, {}), **data},
              "model": {"d_model": 8, "n_layers": 1, "ssm": {"d_state": 8}},
              "train": {"max_steps": 3, "batch_size": 4, "eval_every": 3, "max_eval_batches": 1,
                        "max_test_batches": 1, "device": "cpu", "lr": 0.01, "warmup_steps": 1}}
    Path(f"{task}.yaml").write_text(yaml.safe_dump(recipe))
    before = set(Path("runs").glob(f"dl-{task}-*"))
    code, out = cli_run("train", f"{task}.yaml", "--runs-dir", "runs", "--quiet")
    assert code == 0, out
    (run,) = set(Path("runs").glob(f"dl-{task}-*")) - before
    return json.loads((run / "env.json").read_text())


@pytest.mark.parametrize("task", ["lra", "image", "scifar", "speech", "text"])
def test_download_prepare_and_train(task, server, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    tasks = LRA_TASKS if task == "lra" else [task]
    name, data = archive_of(tasks[0], tmp_path)
    for t in tasks:
        code, out = download(server, t, name, data)
        assert code == 0 and "Traceback" not in out, out
        assert ("checksum sha256 verified" in out) == (t == tasks[0]), out  # later tasks reuse the verified archive
        assert row(t)[1:3] == ["present", "official"], out
        record = json.loads((Path("data") / download_folder(t) / "DOWNLOAD.json").read_text())
        assert record["sha256"] == sha(data) and record["bytes"] == len(data) and record["files"] > 0
        code, out = cli_run("data", "prepare", t, "--root", "data", *[f"--set={k}={v}" for k, v in OPTIONS.get(t, {}).items()])
        assert code == 0 and "(official data)" in out, out
        env = train_3_steps(t)
        assert env["data"]["source"] == "official" and sha(data) in env["data"]["provenance"], env["data"]
    # The LRA tasks share one archive: it was downloaded once and extracted four times.
    assert [n for n, _ in server.requests] == [name]
    assert not list(Path("data").rglob(".extract-*")) and not list(Path("data/downloads").glob("*.part"))


def default_source(task: str) -> str:
    from ssmbench.registry import DATASETS

    return DATASETS.get(task).Options().source


def download_folder(task: str) -> str:
    return sources.DOWNLOADS[task].folder.format(source=default_source(task))


@pytest.fixture
def imdb(tmp_path, monkeypatch) -> bytes:
    """The working directory is tmp_path (an allowed data root); returns a small aclImdb_v1.tar.gz."""
    monkeypatch.chdir(tmp_path)
    return archive_of("text", tmp_path)[1]


def downloaded(data: bytes) -> None:
    """The IMDB fixture is in place, recorded with its SHA-256, and no partial file or extraction is left."""
    assert row("text")[1:3] == ["present", "official"]
    assert json.loads(Path("data/aclImdb/DOWNLOAD.json").read_text())["sha256"] == sha(data)
    assert Path("data/downloads/aclImdb_v1.tar.gz").read_bytes() == data
    assert not list(Path("data").rglob("*.part")) and not list(Path("data").rglob(".extract-*"))


def test_a_dropped_connection_is_resumed_with_a_range_request(server, imdb):
    server.drop_at = len(imdb) // 2
    code, out = download(server, "text", "aclImdb_v1.tar.gz", imdb)
    assert code == 0 and "connection lost" in out and f"resuming data/downloads/aclImdb_v1.tar.gz.part at byte {len(imdb) // 2:,}" in out, out
    assert [r for _, r in server.requests] == [None, f"bytes={len(imdb) // 2}-"]
    downloaded(imdb)


def test_a_download_killed_with_sigkill_resumes_where_it_stopped(server, imdb):
    server.files["aclImdb_v1.tar.gz"] = imdb
    server.hold = release = threading.Event()
    part = Path("data/downloads/aclImdb_v1.tar.gz.part")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "ssmbench", "data", "download", "text", "--root", "data", "--url",
                             server.url("aclImdb_v1.tar.gz"), "--sha256", sha(imdb)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open("killed.log", "w"))
    try:
        deadline = time.monotonic() + 120
        while not (part.is_file() and part.stat().st_size == len(imdb) // 2):
            assert proc.poll() is None and time.monotonic() < deadline, Path("killed.log").read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
    assert row("text")[1] == "missing"
    code, out = cli_run("data", "download", "text", "--root", "data", "--url", server.url("aclImdb_v1.tar.gz"),
                        "--sha256", sha(imdb))
    assert code == 0 and f"{decimal(len(imdb) // 2)} of it already in data/downloads" in out, out
    assert server.requests[-1] == ("aclImdb_v1.tar.gz", f"bytes={len(imdb) // 2}-"), server.requests
    downloaded(imdb)


def test_a_server_without_range_support_restarts_cleanly(server, imdb):
    part = Path("data/downloads/aclImdb_v1.tar.gz.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\xff" * (len(imdb) // 2))  # junk: kept, it would corrupt the archive
    server.ranges = False
    code, out = download(server, "text", "aclImdb_v1.tar.gz", imdb)
    assert code == 0 and "does not resume downloads (status 200); starting again from byte 0" in out, out
    assert server.requests == [("aclImdb_v1.tar.gz", f"bytes={len(imdb) // 2}-")]
    downloaded(imdb)


def test_a_corrupted_byte_is_a_checksum_error_and_the_file_is_set_aside(server, imdb):
    server.corrupt = True
    code, out = download(server, "text", "aclImdb_v1.tar.gz", imdb)
    error = [ln for ln in out.splitlines() if ln.startswith("error:")]
    found = sha(imdb[:len(imdb) // 2] + bytes([imdb[len(imdb) // 2] ^ 1]) + imdb[len(imdb) // 2 + 1:])
    assert code == 2 and "Traceback" not in out and len(error) == 1, out
    assert f"data/downloads/aclImdb_v1.tar.gz: checksum mismatch: expected sha256 {sha(imdb)}, found {found}" in error[0]
    assert Path("data/downloads/aclImdb_v1.tar.gz.bad").is_file() and not Path("data/downloads/aclImdb_v1.tar.gz").exists()
    assert not Path("data/aclImdb").exists() and row("text")[1] == "missing"
    server.corrupt = False  # the next run downloads it anew
    code, out = download(server, "text", "aclImdb_v1.tar.gz", imdb)
    assert code == 0, out
    downloaded(imdb)


def test_the_published_checksum_applies_to_a_mirror(server, imdb):
    server.files["aclImdb_v1.tar.gz"] = imdb
    code, out = cli_run("data", "download", "text", "--root", "data", "--url", server.url("aclImdb_v1.tar.gz"))
    expected = sources.IMDB.checksum[1]
    assert code == 2 and f"checksum mismatch: expected sha256 {expected}, found {sha(imdb)}" in out, out


def test_offline_names_the_url_and_how_to_place_the_file_by_hand(imdb):
    with socket.socket() as s:  # a port on 127.0.0.1 that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/aclImdb_v1.tar.gz"
    code, out = cli_run("data", "download", "text", "--root", "data", "--url", url)
    assert code == 2 and "Traceback" not in out, out
    assert f"text: downloading failed: {url}: " in out and "put it at data/downloads/aclImdb_v1.tar.gz" in out, out
    assert sources.IMDB.url in out and "https_proxy" in out
    code, out = cli_run("data", "download", "text", "--root", "data", "--url", "ftp://127.0.0.1/x.tar.gz")
    assert code == 2 and "give an http://, https:// or file:// URL" in out, out


def test_a_file_url_and_an_archive_placed_by_hand(imdb, tmp_path):
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "aclImdb_v1.tar.gz").write_bytes(imdb)
    code, out = cli_run("data", "download", "text", "--root", "data", "--url",
                        (tmp_path / "mirror" / "aclImdb_v1.tar.gz").as_uri(), "--sha256", sha(imdb))
    assert code == 0, out
    downloaded(imdb)
    shutil.rmtree("data/aclImdb")
    code, out = cli_run("data", "download", "text", "--root", "data", "--sha256", sha(imdb))  # no URL is contacted
    assert code == 0 and "computing the checksum" not in out, out  # the verified archive is reused
    downloaded(imdb)
    code, out = cli_run("data", "download", "text", "--root", "data")
    assert code == 0 and "already holds data; nothing downloaded" in out, out


def member(name: str, data: bytes = b"x", **attrs) -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    return info, io.BytesIO(data) if info.isfile() and data else None


def hostile(tmp_path: Path, kind: str) -> bytes:
    """The IMDB fixture with one hostile member (or two: a link out, then a file written through it)."""
    outside = tmp_path / "outside"
    members = {
        "dotdot": [member("aclImdb/train/../../../outside/evil.txt")],
        "absolute": [member(str(outside / "evil.txt"))],
        "symlink-out": [member("aclImdb/train/out", type=tarfile.SYMTYPE, linkname="../../../outside", size=0),
                        member("aclImdb/train/out/evil.txt")],
        "hardlink": [member("aclImdb/train/pos/passwd", type=tarfile.LNKTYPE, linkname="/etc/passwd", size=0)],
        "device": [member("aclImdb/train/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3, size=0)],
        "huge": [member("aclImdb/train/pos/huge.txt", b"", size=10 ** 12)],  # a header declaring 1 TB, no data
    }[kind] if kind != "sparse" else []

    def extra(tar: tarfile.TarFile) -> None:
        for info, data in members:
            tar.addfile(info, data)

    stage = tmp_path / f"stage-{kind}"
    fixtures.write_imdb(stage / "aclImdb")
    data = tar_gz(stage / "aclImdb", "aclImdb", extra)
    if kind == "sparse":  # a 5 GB sparse file, stored in a few bytes by GNU tar (--sparse)
        with open(stage / "aclImdb" / "train" / "pos" / "sparse.txt", "wb") as f:
            f.truncate(5 * 10 ** 9)
        subprocess.run(["tar", "--sparse", "-czf", str(tmp_path / "sparse.tar.gz"), "-C", str(stage), "aclImdb"],
                       check=True)
        data = (tmp_path / "sparse.tar.gz").read_bytes()
    return data


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink-out", "hardlink", "device", "huge", "sparse"])
def test_a_hostile_archive_is_refused_and_writes_nothing_outside(kind, server, tmp_path, monkeypatch):
    if kind == "sparse" and not shutil.which("tar"):
        pytest.skip("GNU tar writes the sparse member")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outside").mkdir()
    data = hostile(tmp_path, kind)
    before = listing(tmp_path)
    code, out = download(server, "text", "aclImdb_v1.tar.gz", data)
    error = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert code == 2 and "Traceback" not in out and len(error) == 1 and "nothing was extracted" in error[0], out
    assert "data/downloads/aclImdb_v1.tar.gz: member" in error[0], error
    new = {p for p in listing(tmp_path) - before if not p.startswith("data/downloads/")}
    assert new == {"data", "data/downloads"}, new  # no extracted file, not even inside the data root
    assert listing(tmp_path / "outside") == set() and row("text")[1] == "missing"


def test_recipe_download_true_uses_the_same_code(server, imdb, monkeypatch, one_thread):
    server.files["aclImdb_v1.tar.gz"] = imdb
    mirror = dataclasses.replace(sources.IMDB, url=server.url("aclImdb_v1.tar.gz"), checksum=("sha256", sha(imdb)))
    monkeypatch.setitem(sources.DOWNLOADS, "text", dataclasses.replace(sources.DOWNLOADS["text"], archive=mirror))
    env = train_3_steps("text", download=True)
    assert env["data"]["source"] == "official" and sha(imdb) in env["data"]["provenance"], env["data"]
    assert server.requests == [("aclImdb_v1.tar.gz", None)]
    downloaded(imdb)
    train_3_steps("text", download=True, validation="carve")  # present: nothing downloaded again
    assert len(server.requests) == 1


def test_a_killed_extraction_leaves_nothing_that_counts_as_present(server, imdb):
    stale = Path("data/.extract-aclImdb-0badc0de/train/pos")
    stale.mkdir(parents=True)
    (stale / "1_7.txt").write_text("half of an extraction")
    assert row("text")[1] == "missing"
    code, out = download(server, "text", "aclImdb_v1.tar.gz", imdb)
    assert code == 0, out
    downloaded(imdb)  # and the stale folder is gone


def test_generated_data_is_never_overwritten(server, imdb):
    fixtures.write_imdb(Path("data/aclImdb"))
    code, out = download(server, "text", "aclImdb_v1.tar.gz", imdb)
    assert code == 2 and "holds generated or synthetic data" in out and "move it aside" in out, out
    assert not server.requests and row("text")[2] == "synthetic"


def test_data_list_shows_what_can_be_downloaded_and_its_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert row("image")[3:7] == ["170.5", "MB+~190.0", "MB", "-"] and row("listops")[3:6] == ["~7.7", "GB+~800.0", "MB"]
    assert row("smnist")[3] == "-" and row("synthetic-memory")[3] == "-"
    code, out = cli_run("data", "download", "smnist", "--root", "data")
    assert code == 2 and "smnist has no public archive to download; those that do: listops," in out, out


def test_free_space_is_checked_before_download_and_before_each_member(server, imdb, monkeypatch):
    from ssmbench.data import archive, download as dl

    monkeypatch.setattr(dl, "free_bytes", lambda folder: 10 ** 6)
    code, out = download(server, "text", "aclImdb_v1.tar.gz", imdb)
    assert code == 2 and "text: needs about 584.1 MB free on the disk of data, which has 1.0 MB" in out, out
    assert not server.requests
    monkeypatch.setattr(dl, "free_bytes", lambda folder: 10 ** 12)
    monkeypatch.setattr(archive, "free_bytes", lambda folder: archive.RESERVE + 10)
    code, out = download(server, "text", "aclImdb_v1.tar.gz", imdb)
    assert code == 2 and "but data has" in out and "free some space and run again" in out, out
    assert row("text")[1] == "missing" and not list(Path("data").glob(".extract-*"))


def test_progress_shows_size_rate_and_eta(monkeypatch):
    from rich.console import Console

    from ssmbench.progress import TransferLines, transfer

    clock = iter([0.0, 1.0, 2.0, 3.0])
    monkeypatch.setattr("ssmbench.progress.time.monotonic", lambda: next(clock))
    lines = []
    report = TransferLines("a.tar.gz", lines.append)
    for done in (0, 100_000, 150_000, 400_000):
        report(done, 400_000)
    assert lines == ["a.tar.gz: 0 bytes of 400.0 kB (0%)", "a.tar.gz: 100.0 kB of 400.0 kB (25%), 100.0 kB/s, 3 s left",
                     "a.tar.gz: 150.0 kB of 400.0 kB (38%), 75.0 kB/s, 3 s left",
                     "a.tar.gz: 400.0 kB of 400.0 kB (100%), 133.3 kB/s, 0 s left"]
    out = io.StringIO()
    with transfer("a.tar.gz", Console(file=out, force_terminal=True, width=120)) as progress:
        progress(200_000, 400_000)
    assert "a.tar.gz" in out.getvalue() and "200.0/400.0 kB" in out.getvalue(), out.getvalue()


def test_an_unverifiable_archive_that_is_not_a_tar_is_refused(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = lra_archive(tmp_path)
    server.files["lra_release.gz"] = data[:len(data) // 2]  # truncated; the LRA release publishes no checksum
    code, out = cli_run("data", "download", "listops", "--root", "data", "--url", server.url("lra_release.gz"))
    assert code == 2 and "lra_release.gz: no published checksum; sha256 " in out, out
    assert "data/downloads/lra_release.gz: not a readable tar archive (" in out and "delete it and download" in out
    assert row("listops")[1] == "missing" and not list(Path("data").rglob(".extract-*"))
