"""ListOps: tokenization, the generator against an independent text evaluator, the adapter on release-format TSVs."""

import statistics
import sys

import numpy as np
import pytest

from ssmbench.data import build_data
from ssmbench.data.fixtures import data_config
from ssmbench.data.generators import listops as gen
from ssmbench.data.listops import VOCAB, encode, tokenize
from ssmbench.errors import DataError


def eval_text(source: str) -> int:
    """Independent evaluator: a stack machine over the release text (no tree from the generator)."""
    stack = [[]]
    for tok in source.replace("(", " ").replace(")", " ").split():
        if tok.startswith("["):
            stack.append([tok])
        elif tok == "]":
            op, *args = stack.pop()
            value = {"[MIN": min, "[MAX": max, "[SM": lambda a: sum(a) % 10,
                     "[MED": lambda a: int(statistics.median(a))}[op](args)
            stack[-1].append(value)
        else:
            stack[-1].append(int(tok))
    (result,) = stack[0]
    return result


def test_tokenization_of_a_known_expression():
    src = "( ( ( [MAX 2 ) ( ( [SM 0 ) 9 ) ] ) ] )"
    assert tokenize(src) == ["[MAX", "2", "[SM", "0", "9", "X", "X"]
    row, n = encode(src, 10, append_eos=True)
    # 0 <pad> 1 <unk> 2 <eos> 3..12 digits, 13 [MIN 14 [MAX 15 [MED 16 [SM 17 X
    assert row.tolist() == [14, 5, 16, 3, 12, 17, 17, 2, 0, 0] and n == 8
    assert VOCAB[14] == "[MAX" and VOCAB[17] == "X" and len(VOCAB) == 18


def test_generator_labels_lengths_and_text_form():
    samples, stats = gen.generate(40, seed=3)
    assert len({s for s, _ in samples}) == 40
    for text, label in samples:
        assert eval_text(text) == label
        assert 500 < len(tokenize(text)) < 2000
    assert 0.02 < stats["acceptance"] < 0.2
    assert gen.to_text(("[MAX", [2, 9])) == "( ( ( [MAX 2 ) 9 ) ] )"


def test_median_is_truncated_mean_of_middle_pair():
    assert gen.evaluate(("[MED", [1, 2, 3, 8])) == 2 and gen.evaluate(("[MED", [4, 1, 9])) == 4
    assert eval_text("( ( ( ( ( [MED 1 ) 2 ) 3 ) 8 ) ] )") == 2


def write(tmp_path, n=12):
    folder = tmp_path / "lra_release" / "listops-1000"
    gen.write_release(folder, n, 4, seed=0, min_length=5, max_length=60)
    return folder


def test_adapter_reads_release_tsv(tmp_path, monkeypatch):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    folder = write(tmp_path)
    b = build_data(data_config(tmp_path, "listops", max_length=64))
    assert b.sizes() == {"train": 12, "val": 4, "test": 4} and b.source == "generated"
    x, y = b.train[0]
    assert x.shape == (64,) and x.dtype.__str__() == "torch.int64" and b.io.input_kind == "tokens" and b.io.d_input == 18
    first = (folder / "basic_train.tsv").read_text().splitlines()[1].split("\t")
    assert int(y) == int(first[1]) == eval_text(first[0])
    assert x[:len(tokenize(first[0]))].tolist() == encode(first[0], 64, False)[0][:len(tokenize(first[0]))].tolist()
    assert list((tmp_path / "listops" / "prepared").iterdir())  # cached


def test_malformed_tsv_names_file_and_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    folder = write(tmp_path)
    with open(folder / "basic_val.tsv", "a") as f:
        f.write("( [MAX 1 ] )\n")  # no label column
    with pytest.raises(DataError, match=r"basic_val.tsv: line 6"):
        build_data(data_config(tmp_path, "listops"))
    assert not list((tmp_path / "listops" / "prepared").glob("*"))  # nothing half-written


def test_missing_data_cli_exit_2_and_nothing_written(tmp_path, monkeypatch, capsys):
    from ssmbench import cli

    (tmp_path / "r.yaml").write_text("name: t\ndata:\n  name: listops\n  root: data\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ssmbench", "train", "r.yaml", "--runs-dir", "runs", "-q"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "data/lra_release/listops-1000/basic_train.tsv" in err and "generate listops" in err
    assert not (tmp_path / "data").exists()


def test_source_outside_root_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    with pytest.raises(DataError, match="inside the data root"):
        build_data(data_config(tmp_path, "listops", source="../elsewhere"))


def test_label_statistics_of_generated_set():
    _, labels = zip(*gen.generate(150, seed=1)[0])
    share = np.bincount(labels, minlength=10) / len(labels)
    assert share[0] > 0.1 and share[9] > 0.1  # MIN/MAX pile up at the extremes (release: ~16% each)
