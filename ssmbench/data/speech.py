"""Speech Commands v0.02 (`speech`), raw audio, SC35 or SC10 (docs/methods.md §G "Speech Commands v0.02").

Layout: `<source>/<word>/<speaker>_nohash_<n>.wav` (16 kHz mono 16-bit, at most 1 s), `validation_list.txt`
and `testing_list.txt` (relative paths); `_background_noise_/` is not a class. WAVs are read with soundfile.
- SC35: all 35 words, the official lists (training = everything else), zero-padded to 16000 samples,
  standardized with the training split's mean and std.
- SC10: yes no up down left right on off stop go; clips shorter than 16000 are dropped; a stratified random
  70/15/15 split (seed `data.split_seed`); audio / 2^15.
`sample_rate: 8000` resamples every clip with torchaudio (the half-rate resolution test); clips are stored in
the cache as int16 at the chosen rate.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ssmbench.contracts import ModelIO
from ssmbench.data.base import Adapter, DataBundle
from ssmbench.data.cache import cache_key, prepared_splits
from ssmbench.data.layout import data_origin, missing_data, resolve_source
from ssmbench.data.textfile import data_file, numbered_lines
from ssmbench.errors import DataError
from ssmbench.registry import DATASETS

WORDS35 = ["backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go",
           "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
           "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero"]
WORDS10 = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
RATE, CLIP = 16000, 16000
MAX_NUM_WAVS_PER_CLASS = 2 ** 27 - 1
PUBLIC = ("http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz (extract to "
          "data/SpeechCommands/speech_commands_v0.02)")


def which_set(filename: str, validation_percentage: float = 10.0, testing_percentage: float = 10.0) -> str:
    """The official split rule: SHA-1 of the name before `_nohash_`, so one speaker never crosses splits."""
    base = Path(filename).name.split("_nohash_")[0]
    h = int(hashlib.sha1(base.encode("utf-8")).hexdigest(), 16)
    pct = (h % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if pct < validation_percentage:
        return "validation"
    if pct < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def read_wav(path: Path) -> np.ndarray:
    """int16 samples of a 16 kHz mono clip of at most 1 s; anything else raises a DataError naming the file."""
    import soundfile as sf

    f = data_file(path)
    try:
        with f:
            audio, rate = sf.read(f, dtype="int16", always_2d=True)
    except Exception as e:
        raise DataError(f"{path}: unreadable WAV ({type(e).__name__}: {e}); the file is truncated or corrupt.") from None
    if rate != RATE or audio.shape[1] != 1:
        raise DataError(f"{path}: {rate} Hz with {audio.shape[1]} channel(s); Speech Commands clips are 16 kHz mono.")
    if len(audio) > CLIP or len(audio) == 0:
        raise DataError(f"{path}: {len(audio)} samples; Speech Commands clips have 1..16000 samples.")
    return audio[:, 0]


def read_list(path: Path) -> set[str]:
    """The clips (`word/file.wav`) named by a validation or testing list, one per line."""
    return {line.strip() for _, line in numbered_lines(path) if line.strip()}


def stratified_split(labels: np.ndarray, seed: int, fractions=(0.7, 0.15, 0.15)) -> dict[str, np.ndarray]:
    """Per class, a seeded permutation cut 70/15/15; returns sorted indices per split."""
    g = torch.Generator().manual_seed(seed)
    out = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[torch.randperm(len(idx), generator=g).numpy()]
        n_tr, n_va = int(round(fractions[0] * len(idx))), int(round(fractions[1] * len(idx)))
        out["train"].append(idx[:n_tr])
        out["val"].append(idx[n_tr:n_tr + n_va])
        out["test"].append(idx[n_tr + n_va:])
    return {k: np.sort(np.concatenate(v)) for k, v in out.items()}


def resample(x: np.ndarray, rate: int) -> np.ndarray:
    """int16 clips (S, 16000) -> int16 clips (S, 16000 * rate / 16000) with torchaudio's windowed-sinc resampler."""
    if rate == RATE:
        return x
    import torchaudio.functional as AF

    out = []
    for i in range(0, len(x), 1024):
        y = AF.resample(torch.from_numpy(x[i:i + 1024].astype(np.float32)), RATE, rate)
        out.append(y.round().clamp(-32768, 32767).to(torch.int16).numpy())
    return np.concatenate(out)


class Scale:
    """int16 row (L,) -> float32 (L, 1) of (x / 2^15 - mean) / std."""

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        self.mean, self.std = mean, std

    def __call__(self, row: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((row.astype(np.float32) / 32768.0 - self.mean) / self.std).unsqueeze(-1)


class SpeechOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field("SpeechCommands/speech_commands_v0.02", description="folder under data.root in the Speech Commands layout")
    variant: Literal["sc35", "sc10"] = Field("sc35", description="sc35: 35 words, official lists; sc10: 10 words, 70/15/15 stratified split")
    sample_rate: Literal[16000, 8000] = Field(16000, description="8000 resamples every clip (half-rate test)")


def scan(folder: Path, words: list[str]) -> list[tuple[str, int]]:
    return [(f"{w}/{f.name}", c) for c, w in enumerate(words) for f in sorted((folder / w).glob("*.wav"))]


@DATASETS.register("speech")
class SpeechCommands(Adapter):
    Options = SpeechOptions
    description = "Speech Commands v0.02 raw audio, L = 16000 (8000 at half rate), SC35 or SC10"
    generate_command = "ssmbench data synth-speech --words 35 --speakers 40 --out data/SpeechCommands/speech_commands_v0.02"

    def build(self, cfg, options: SpeechOptions) -> DataBundle:
        folder = resolve_source(cfg.root, options.source, "speech")
        words = WORDS35 if options.variant == "sc35" else WORDS10
        lists = [folder / "validation_list.txt", folder / "testing_list.txt"]
        if not all((folder / w).is_dir() for w in words) or not all(f.is_file() for f in lists):
            raise missing_data("speech", [folder / w for w in words[:2]] + lists, PUBLIC, self.generate_command)
        items = scan(folder, words)
        if not items:
            raise DataError(f"{folder}: no .wav files in the word folders; the copy is incomplete.")

        def prepare():
            x = np.zeros((len(items), CLIP), dtype=np.int16)
            lengths = np.zeros(len(items), dtype=np.int64)
            for i, (rel, _) in enumerate(items):
                a = read_wav(folder / rel)
                x[i, :len(a)], lengths[i] = a, len(a)
            y = np.array([c for _, c in items], dtype=np.int64)
            if options.variant == "sc10":
                keep = np.flatnonzero(lengths == CLIP)
                x, y = x[keep], y[keep]
                parts = stratified_split(y, cfg.split_seed)
            else:
                val, test = read_list(lists[0]), read_list(lists[1])
                split = np.array(["val" if r in val else "test" if r in test else "train" for r, _ in items])
                parts = {s: np.flatnonzero(split == s) for s in ("train", "val", "test")}
            x = resample(x, options.sample_rate)
            return {s: (x[idx], y[idx]) for s, idx in parts.items()}

        files = [folder / r for r, _ in items] + lists
        key = cache_key(files, Path(cfg.root), {**options.model_dump(exclude={"source"}),
                                                 "split_seed": cfg.split_seed if options.variant == "sc10" else None})
        splits, cache = prepared_splits(Path(cfg.root), "speech", key, prepare, Scale())
        facts = {"cache": str(cache), "variant": options.variant, "sample_rate": options.sample_rate}
        if options.variant == "sc35":
            mean, std = clip_stats(splits["train"].chunks)
            for d in splits.values():
                d.transform = Scale(mean, std)
            facts.update(mean=mean, std=std)
        source, provenance = data_origin(folder, "Speech Commands v0.02")
        return DataBundle(train=splits["train"], val=splits["val"], test=splits["test"],
                          io=ModelIO(d_input=1, input_kind="real", n_outputs=len(words)),
                          seq_len=options.sample_rate, task="classification", source=source,
                          provenance=f"{provenance} ({options.variant}, {options.sample_rate} Hz)", facts=facts)


def clip_stats(chunks: list[np.ndarray]) -> tuple[float, float]:
    """Mean and std of x / 2^15 over all samples of the given int16 arrays (float64 sums, chunked)."""
    s1 = s2 = 0.0
    n = 0
    for c in chunks:
        for i in range(0, len(c), 2048):
            v = c[i:i + 2048].astype(np.float64) / 32768.0
            s1, s2, n = s1 + v.sum(), s2 + (v * v).sum(), n + v.size
    mean = s1 / max(n, 1)
    return float(mean), float(np.sqrt(max(s2 / max(n, 1) - mean * mean, 1e-12)))
