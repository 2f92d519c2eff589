"""Fuzzing the data files of every file-reading adapter: hypothesis damages one file of a valid fixture data
root (truncation, flipped or inserted bytes, random binary, an empty file, a junk or overlong line) and builds
the dataset. Every case must either build or raise a DataError naming a file; anything else (a traceback) and a
case running past a time limit (a hang) fail. A short pass runs in the fast suite, a long one under
`make test-slow`; each prints the inputs tried."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
from hypothesis import strategies as st

from test_recipe_fuzz import COUNTS, fuzz, write_mnist_idx
from ssmbench.data import build_data
from ssmbench.data.fixtures import data_config, write_all
from ssmbench.errors import DataError
from ssmbench.paths import DATA_ROOT_ENV

HANG_SECONDS = 60

# adapter -> (recipe data options, files under the data root that the fuzzer damages)
TARGETS = {
    "listops": ({}, ["lra_release/listops-1000/basic_train.tsv", "lra_release/listops-1000/basic_test.tsv"]),
    "retrieval": ({"max_length": 64}, ["lra_release/tsv_data/new_aan_pairs.train.tsv"]),
    "text": ({"max_length": 64}, ["aclImdb/train/pos/0_7.txt"]),
    "scifar": ({}, ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"]),
    "pathfinder": ({}, ["lra_release/pathfinder32/curv_contour_length_14/metadata/0.npy",
                        "lra_release/pathfinder32/curv_contour_length_14/imgs/0/sample_0.png"]),
    "speech": ({}, ["SpeechCommands/speech_commands_v0.02/validation_list.txt",
                    "SpeechCommands/speech_commands_v0.02/yes/00210000_nohash_0.wav"]),
    "smnist": ({"source": "idx", "permute": False}, ["MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"]),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A data root with every adapter's fixture files (plus small MNIST IDX files)."""
    root = tmp_path_factory.mktemp("pristine")
    write_all(root)
    write_mnist_idx(root)
    return root


@st.composite
def damage(draw, data: bytes) -> bytes:
    """One kind of damage to a file's bytes."""
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "binary", "empty", "line", "long"]))
    if kind == "truncate":
        return data[:draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            if out:
                out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    if kind == "insert":
        i = draw(st.integers(0, len(data)))
        return data[:i] + draw(st.binary(min_size=1, max_size=16)) + data[i:]
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "empty":
        return b""
    lines = data.split(b"\n")
    i = draw(st.integers(0, len(lines) - 1))
    if kind == "line":
        lines[i] = draw(st.sampled_from([b"", b"\t", b"inf\ta\tb\tc\td", b"nan", b"-1", b"/etc/passwd x 0 1",
                                         b"../../x y 0 1", b"\xff\xfe", b"Source\tTarget", b"1e999\t9" * 3]))
    else:
        lines[i] = lines[i] + b"9" * draw(st.integers(1, 200_000))
    return b"\n".join(lines)


class Hang(Exception):
    pass


def build_with_limit(cfg) -> None:
    def alarm(signum, frame):
        raise Hang(f"building {cfg.name} took over {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_SECONDS)
    try:
        build_data(cfg)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("examples", [5, pytest.param(150, marks=pytest.mark.slow)])
@pytest.mark.parametrize("adapter", list(TARGETS))
def test_fuzz_data_files(adapter, examples, pristine, tmp_path, monkeypatch):
    options, files = TARGETS[adapter]
    root = tmp_path / "root"
    shutil.copytree(pristine, root, symlinks=True)
    monkeypatch.setenv(DATA_ROOT_ENV, str(root))
    cfg = data_config(root, adapter, **options)
    build_with_limit(cfg)  # the undamaged files build

    @st.composite
    def cases(draw):
        rel = draw(st.sampled_from(files))
        return rel, draw(damage((pristine / rel).read_bytes()))

    def body(case) -> None:
        rel, data = case
        (root / rel).write_bytes(data)
        shutil.rmtree(root / adapter / "prepared", ignore_errors=True)  # read the files, not a cache
        try:
            build_with_limit(cfg)
            COUNTS[f"data files ({adapter}, built)"] += 1
        except DataError as e:
            assert str(root) in str(e) or adapter in str(e), e
        finally:
            COUNTS[f"data files ({adapter})"] += 1
            shutil.copyfile(pristine / rel, root / rel)

    fuzz(examples, cases(), body)
