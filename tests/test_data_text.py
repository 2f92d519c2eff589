"""Byte-level IMDB and AAN retrieval in their release layouts, and the two-document matching head."""

import pickle

import numpy as np
import pytest
import torch

from ssmbench.data import build_data
from ssmbench.data.fixtures import data_config, write_aan, write_cifar, write_imdb
from ssmbench.data.images import to_gray
from ssmbench.data.text import encode_bytes
from ssmbench.errors import DataError


def test_byte_tokens():
    assert encode_bytes("hé", 5).tolist() == [ord("h") + 1, 0xC3 + 1, 0xA9 + 1, 0, 0]
    assert encode_bytes("abcdef", 3).tolist() == [98, 99, 100]


def test_imdb_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    write_imdb(tmp_path / "aclImdb", n=3)
    b = build_data(data_config(tmp_path, "text", max_length=64))
    assert b.sizes() == {"train": 6, "val": 6, "test": 6} and b.io.d_input == 257
    texts = sorted((tmp_path / "aclImdb" / "train" / "neg").glob("*.txt"))
    x, y = b.train[0]
    assert int(y) == 0 and x.tolist() == encode_bytes(texts[0].read_text(), 64).tolist()
    assert int(b.train[5][1]) == 1
    carved = build_data(data_config(tmp_path, "text", max_length=64, validation="carve", val_fraction=0.5))
    assert len(carved.train) == 3 and len(carved.val) == 3


def test_aan_pairs_and_bad_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    folder = tmp_path / "lra_release" / "tsv_data"
    write_aan(folder, n=4)
    b = build_data(data_config(tmp_path, "retrieval", max_length=50))
    x, y = b.val[1]
    assert x.shape == (2, 50) and int(y) == 1 and b.io.pair
    first = (folder / "new_aan_pairs.eval.tsv").read_text().splitlines()[1].split("\t")
    assert x[0].tolist() == encode_bytes(first[3], 50).tolist() and x[1].tolist() == encode_bytes(first[4], 50).tolist()
    with open(folder / "new_aan_pairs.test.tsv", "a") as f:
        f.write("1.0\tonly-three\tfields\n")
    with pytest.raises(DataError, match=r"new_aan_pairs.test.tsv: line 5"):
        build_data(data_config(tmp_path, "retrieval", max_length=50))


def test_pair_head_encodes_each_document_alone():
    from ssmbench.contracts import ModelIO
    from ssmbench.models.backbone import SequenceModel
    from ssmbench.recipe import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(d_model=8, n_layers=2, ssm={"d_state": 4})
    model = SequenceModel(cfg, "s4d-lin", ModelIO(d_input=257, input_kind="tokens", n_outputs=2, pair=True)).eval()
    x = torch.randint(1, 257, (3, 2, 20))
    with torch.no_grad():
        z1, z2 = model.encode(x[:, 0]), model.encode(x[:, 1])
        expect = model.decoder(torch.cat([z1, z2, z1 * z2, z1 - z2], -1))
        assert torch.allclose(model(x), expect, atol=1e-6)
        assert not torch.allclose(model(x), model(x.flip(1)), atol=1e-4)  # the head sees the order (x1 - x2)


def test_cifar_layout_gray_and_rgb(tmp_path, monkeypatch):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, n=10)
    with open(folder / "data_batch_1", "rb") as f:
        d = pickle.load(f, encoding="bytes")
    d[b"data"][0] = 0
    d[b"data"][0, 1] = 255  # red channel of pixel (row 0, col 1): channel-major layout
    d[b"labels"][0] = 7
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump(d, f)
    rgb = build_data(data_config(tmp_path, "scifar", val_fraction=0.0))
    gray = build_data(data_config(tmp_path, "image", val_fraction=0.0))
    assert len(rgb.train) == 50 and len(rgb.test) == 10 and rgb.io.d_input == 3 and gray.io.d_input == 1
    raw = rgb.train.dataset.chunks[0][0]  # uint8 (1024, 3) rows before standardization
    assert raw[1].tolist() == [255, 0, 0] and raw[0].tolist() == [0, 0, 0]
    assert gray.train.dataset.chunks[0][0][1, 0] == round(0.2989 * 255) and int(gray.train[0][1]) == 7
    m, s = np.array(rgb.facts["pixel_mean"]), np.array(rgb.facts["pixel_std"])
    x = rgb.train[0][0].numpy()
    assert np.allclose(x[1], (np.array([1.0, 0, 0]) - m) / s, atol=1e-5)
    assert to_gray(np.array([[[[10, 200, 30]]]], np.uint8)).item() == round(0.2989 * 10 + 0.587 * 200 + 0.114 * 30)


def test_missing_cifar_names_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    with pytest.raises(DataError, match=r"cifar-10-batches-py/data_batch_1.*cifar-10-python.tar.gz"):
        build_data(data_config(tmp_path, "image"))
