"""Broken data files name the file and the line: non-UTF-8 ListOps / Retrieval TSVs and Speech Commands lists,
Retrieval labels that are not 0/1 (inf, nan, 0.5), a ListOps line longer than csv's 131,072-character field
limit (read, then truncated like any row)."""

from __future__ import annotations

import csv

import pytest

from ssmbench.data.fixtures import write_aan, write_listops
from ssmbench.data.listops import read_tsv
from ssmbench.data.retrieval import read_pairs
from ssmbench.data.speech import read_list
from ssmbench.data.textfile import numbered_lines
from ssmbench.errors import DataError


@pytest.fixture(autouse=True)
def data_root(tmp_path, monkeypatch):
    """The test's folder is an allowed root (data files are read only inside one: ssmbench/safe_read.py)."""
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))


def test_numbered_lines_keep_text_and_count_from_one(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes("a\tb\r\nsecond é\n\nlast".encode())
    assert list(numbered_lines(path)) == [(1, "a\tb"), (2, "second é"), (3, ""), (4, "last")]
    with pytest.raises(DataError, match=f"{tmp_path}: is a folder, not a regular file"):
        list(numbered_lines(tmp_path))


def corrupt_line(path, line: int, junk: bytes = b"\xff\xfe") -> None:
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = lines[line - 1][:3] + junk + lines[line - 1][3:]
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize("reader", ["listops", "retrieval", "speech"])
def test_non_utf8_names_file_and_line(tmp_path, reader):
    if reader == "listops":
        write_listops(tmp_path, n=8)
        path, read = tmp_path / "basic_train.tsv", read_tsv
    elif reader == "retrieval":
        write_aan(tmp_path, n=6)
        path, read = tmp_path / "new_aan_pairs.train.tsv", (lambda p: read_pairs(p, 64))
    else:
        path, read = tmp_path / "validation_list.txt", read_list
        path.write_text("yes/a_nohash_0.wav\nno/b_nohash_0.wav\nup/c_nohash_0.wav\n")
    corrupt_line(path, 3)
    with pytest.raises(DataError, match=rf"{path}: line 3 is not UTF-8 text \(byte 3 of the line is 0xff\)"):
        read(path)


@pytest.mark.parametrize("label", ["inf", "-inf", "nan", "0.5", "2.0", "x"])
def test_retrieval_label_that_is_not_0_or_1_names_the_line(tmp_path, label):
    write_aan(tmp_path, n=4)
    path = tmp_path / "new_aan_pairs.eval.tsv"
    lines = path.read_text().splitlines()
    lines[1] = label + lines[1][3:]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"{path}: line 2 is malformed .* label '{label}'"):
        read_pairs(path, 64)


def test_listops_line_beyond_the_csv_field_limit_is_read(tmp_path):
    path = tmp_path / "basic_train.tsv"
    long = "[MAX " + "1 " * 70_000 + "]"  # 140,006 characters > csv.field_size_limit() = 131,072
    path.write_text(f"Source\tTarget\n( [MIN 2 3 ] )\t2\n{long}\t1\n")
    rows = read_tsv(path)
    assert [label for _, label in rows] == [2, 1] and rows[1][0] == long
    path.write_text(f"Source\tTarget\n( [MIN 2 3 ] )\t2\n{long}\t1\textra\n")
    with pytest.raises(DataError, match=f"{path}: line 3 is malformed"):
        read_tsv(path)


def test_listops_reader_agrees_with_the_csv_module(tmp_path):
    """The plain tab split reads the generator's files exactly as Python's csv reader (QUOTE_NONE) does."""
    write_listops(tmp_path, n=12)
    path = tmp_path / "basic_train.tsv"
    with open(path, newline="", encoding="utf-8") as f:
        expected = [(r[0], int(r[1])) for r in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    assert read_tsv(path) == expected and len(expected) == 12
