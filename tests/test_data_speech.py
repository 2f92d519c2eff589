"""Speech Commands: the official hash split rule, clip lengths, SC10/SC35, resampling, bad WAVs, synthesis."""

import hashlib
import shutil

import numpy as np
import pytest
import soundfile as sf

from ssmbench.data import build_data
from ssmbench.data.fixtures import data_config, write_speech
from ssmbench.data.speech import WORDS10, WORDS35, which_set
from ssmbench.errors import DataError


def split_by_bits(name: str) -> str:
    """The rule re-derived with integer bit masking instead of modulo (2^27 is a power of two)."""
    h = int.from_bytes(hashlib.sha1(name.split("_nohash_")[0].encode()).digest(), "big")
    pct = (h & (2 ** 27 - 1)) * 100.0 / (2 ** 27 - 1)
    return "validation" if pct < 10 else "testing" if pct < 20 else "training"


def test_split_rule_on_known_names():
    names = [f"{i:08x}_nohash_{k}.wav" for i in range(3000) for k in (0,)]
    got = [which_set(n) for n in names]
    assert got == [split_by_bits(n) for n in names]
    share = {s: got.count(s) / len(got) for s in ("training", "validation", "testing")}
    assert abs(share["validation"] - 0.1) < 0.02 and abs(share["testing"] - 0.1) < 0.02
    # one speaker never crosses splits: the utterance number and word folder do not matter
    assert which_set("right/0a7c2a8d_nohash_0.wav") == which_set("0a7c2a8d_nohash_4.wav")


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    folder = tmp_path / "SpeechCommands" / "speech_commands_v0.02"
    write_speech(folder, WORDS35, per_word=2)
    return tmp_path, folder


def test_sc35_official_lists_and_padding(root):
    tmp, folder = root
    short = folder / "yes" / "ffff0000_nohash_0.wav"
    sf.write(short, np.full(8000, 1000, np.int16), 16000, subtype="PCM_16")
    b = build_data(data_config(tmp, "speech"))
    assert sum(b.sizes().values()) == 35 * 2 + 1 and b.io.n_outputs == 35 and b.source == "synthetic"
    val = set((folder / "validation_list.txt").read_text().split())
    assert len(b.val) == len(val)
    for ds in (b.train, b.val, b.test):
        x, y = ds[0]
        assert x.shape == (16000, 1) and x.dtype.__str__() == "torch.float32"
    assert abs(b.facts["std"]) > 0
    x = np.concatenate([b.train.chunks[0]])
    assert x.shape[1] == 16000 and (x[:, 8000:] == 0).any(axis=1).sum() >= 1  # the short clip is zero-padded


def test_sc10_drops_short_clips_and_halves_rate(tmp_path, monkeypatch):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    tmp, folder = tmp_path, tmp_path / "SpeechCommands" / "speech_commands_v0.02"
    write_speech(folder, WORDS10, per_word=7)
    sf.write(folder / "yes" / "ffff0000_nohash_0.wav", np.full(8000, 1000, np.int16), 16000, subtype="PCM_16")
    b = build_data(data_config(tmp, "speech", variant="sc10", sample_rate=8000))
    assert sum(b.sizes().values()) == 10 * 7 and b.sizes()["train"] == 50 and b.io.n_outputs == 10 and b.seq_len == 8000
    x, y = b.train[0]
    assert x.shape == (8000, 1)
    word = int(y)  # fixture tone for word w is 200 + 40 w Hz
    spectrum = np.abs(np.fft.rfft(x[:, 0].numpy()))
    assert abs(np.argmax(spectrum) * 8000 / 8000 - (200 + 40 * word)) <= 1


def test_bad_wav_is_named(root):
    tmp, folder = root
    bad = folder / "go" / "eeee0000_nohash_0.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")
    with pytest.raises(DataError, match="eeee0000_nohash_0.wav"):
        build_data(data_config(tmp, "speech"))


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("flite")), reason="espeak-ng / flite not installed")
def test_synthesis_is_deterministic_and_in_layout(tmp_path):
    from ssmbench.data.generators.speech_synth import write_release

    for out in ("a", "b"):
        write_release(tmp_path / out, ["yes"], 2, seed=5)
    for word in ("yes",):
        files = sorted(p.name for p in (tmp_path / "a" / word).glob("*.wav"))
        assert len(files) == 2 and all("_nohash_" in f for f in files)
        for f in files:
            x, rate = sf.read(tmp_path / "a" / word / f, dtype="int16")
            assert rate == 16000 and x.shape == (16000,) and np.abs(x).max() > 1000
            assert (tmp_path / "a" / word / f).read_bytes() == (tmp_path / "b" / word / f).read_bytes()
