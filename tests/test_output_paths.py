"""Output paths that cannot be written are one-line errors with exit status 2, found before any work: a file
where a folder is needed and the reverse, a path under /dev/null, an unwritable folder; bench's --device and
--d-state; a disk that is full while the run record is written."""

from __future__ import annotations

import errno
import os

import pytest

from killpoint import cli_run
from ssmbench.errors import SSMBenchError
from ssmbench.paths import output_file, output_folder


@pytest.fixture
def place(tmp_path):
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "DIR").mkdir()
    return tmp_path


def one_line_error(code, text: str, *words: str) -> None:
    assert code == 2, text
    assert text.startswith("error: ") and text.count("\n") == 1 and "Traceback" not in text, text
    for w in words:
        assert w in text, text


def test_output_checks(place):
    assert output_file(place / "new" / "deeper" / "f.json", "--out") == place / "new" / "deeper" / "f.json"
    assert output_file(place / "FILE", "--out") == place / "FILE"  # an existing file may be replaced
    assert output_folder(place / "DIR", "--plots") == place / "DIR"
    assert output_folder(place / "a" / "b", "--plots") == place / "a" / "b"
    for check, path, words in [(output_file, place / "DIR", "is a folder"),
                               (output_file, place / "FILE" / "x.json", "is not a folder"),
                               (output_file, "/dev/null/x.pt", "/dev/null is not a folder"),
                               (output_folder, place / "FILE", "is a file, not a folder"),
                               (output_folder, place / "FILE" / "a" / "b", "is not a folder")]:
        with pytest.raises(SSMBenchError, match=words):
            check(path, "--opt")
    (place / "dangling").symlink_to(place / "nowhere")
    with pytest.raises(SSMBenchError, match="broken symbolic link"):
        output_folder(place / "dangling" / "x", "--opt")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_folder_is_refused(place):
    (place / "ro").mkdir(mode=0o500)
    with pytest.raises(SSMBenchError, match="no permission"):
        output_file(place / "ro" / "x", "--out")


@pytest.mark.parametrize("args, words", [
    (["train", "{recipe}", "--runs-dir", "{place}/FILE"], ["--runs-dir", "is a file, not a folder"]),
    (["train", "{recipe}", "--runs-dir", "/dev/null/x"], ["/dev/null is not a folder"]),
    (["sweep", "{sweep}", "--runs-dir", "{place}/FILE"], ["--runs-dir", "is a file"]),
    (["report", "{place}", "--out", "{place}/DIR"], ["--out", "is a folder; give a file name"]),
    (["report", "{place}", "--plots", "{place}/FILE"], ["--plots", "is a file, not a folder"]),
    (["data", "generate", "listops", "--out", "{place}/FILE", "--n", "4"], ["--out", "is a file"]),
    (["data", "generate", "pathfinder", "--out", "{place}/FILE", "--n", "4"], ["--out", "is a file"]),
    (["data", "synth-speech", "--out", "{place}/FILE"], ["--out", "is a file"]),
    (["init-tdi", "--dataset", "smnist", "--out", "/dev/null/x.pt"], ["--out /dev/null/x.pt"]),
    (["bench", "--device", "banana"], ["bench --device: 'banana' is not a device"]),
    (["bench", "--d-state", "3"], ["bench --d-state", "must be even (got 3)"]),
    (["bench", "--out", "{place}/DIR"], ["--out", "is a folder"]),
])
def test_cli_output_errors(place, repo_root, args, words):
    fill = {"place": place, "recipe": repo_root / "recipes" / "quickstart.yaml",
            "sweep": repo_root / "recipes" / "sweeps" / "smnist-table.yaml"}
    code, text = cli_run(*[a.format(**fill) for a in args])
    one_line_error(code, text, *words)
    assert (place / "FILE").read_text() == "x" and not list((place / "DIR").iterdir())


def test_full_disk_while_writing_the_run_record(tmp_path, repo_root, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, text = cli_run("train", str(repo_root / "recipes" / "quickstart.yaml"), "--runs-dir", str(tmp_path / "runs"),
                         "--set", "train.max_steps=1", "-q")
    one_line_error(code, text, "No space left on device", str(tmp_path / "runs"), ".yaml")
