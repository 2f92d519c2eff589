"""Tiny datasets in the official on-disk formats, for `ssmbench smoke` and the tests (never for results).

`write_all(root)` fills a data root with every adapter's default layout: generated ListOps and Pathfinder /
Path-X (the real generators, few samples, short ListOps), random IMDB reviews, AAN pairs and CIFAR batches,
and Speech Commands clips of pure tones. Each folder gets a marker, so a run on it says "generated" or
"synthetic".
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ssmbench.data.layout import write_marker

LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz      .,"))


def random_text(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(LETTERS, size=n))


def write_listops(folder: Path, n: int = 40, seed: int = 0) -> None:
    from ssmbench.data.generators.listops import write_release

    write_release(folder, n, max(4, n // 4), seed, min_length=5, max_length=100)


def write_imdb(folder: Path, n: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            (folder / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / split / label / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(
                    random_text(rng, int(rng.integers(20, 300))) + (" great" if label == "pos" else " awful"))
    write_marker(folder, "synthetic", "random-text IMDB fixture")


def write_aan(folder: Path, n: int = 8, seed: int = 0) -> None:
    from ssmbench.data.retrieval import SPLIT_FILES

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPLIT_FILES.values():
        rows = [f"{float(i % 2)}\tid{i}a\tid{i}b\t{random_text(rng, 100)}\t{random_text(rng, 80)}" for i in range(n)]
        (folder / name).write_text("\n".join(rows) + "\n")
    write_marker(folder, "synthetic", "random-text AAN pairs fixture")


def write_cifar(folder: Path, n: int = 20, seed: int = 0) -> None:
    from ssmbench.data.images import BATCHES

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in BATCHES["train"] + BATCHES["test"]:
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, size=n)], b"batch_label": name.encode()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    write_marker(folder, "synthetic", "random-pixel CIFAR-10 fixture")


def write_speech(folder: Path, words: list[str], per_word: int = 7, seed: int = 0) -> None:
    """Tone clips (one frequency per word) in the Speech Commands layout, with lists from the hash rule."""
    import soundfile as sf

    from ssmbench.data.speech import which_set

    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    lists = {"validation": [], "testing": []}
    for w, word in enumerate(words):
        (folder / word).mkdir(parents=True, exist_ok=True)
        for i in range(per_word):
            name = f"{w:04x}{i:04x}_nohash_0.wav"
            x = 0.3 * np.sin(2 * np.pi * (200 + 40 * w) * t) + 0.01 * rng.standard_normal(16000)
            sf.write(folder / word / name, (x * 32767).astype(np.int16), 16000, subtype="PCM_16")
            split = which_set(name)
            if split in lists:
                lists[split].append(f"{word}/{name}")
    for split, rows in lists.items():
        (folder / f"{split}_list.txt").write_text("".join(f"{r}\n" for r in rows))
    write_marker(folder, "synthetic", "pure-tone Speech Commands fixture")


def write_all(root: Path) -> None:
    """Every adapter's default layout under `root`, small enough for a few training steps each."""
    from ssmbench.data.generators import pathfinder
    from ssmbench.data.speech import WORDS35

    write_listops(root / "lra_release" / "listops-1000")
    write_aan(root / "lra_release" / "tsv_data")
    write_imdb(root / "aclImdb")
    write_cifar(root / "cifar-10-batches-py")
    for res in (32, 128):
        pathfinder.write_release(root / "lra_release", res, 14, n=20, seed=0)
    write_speech(root / "SpeechCommands" / "speech_commands_v0.02", WORDS35)


def data_config(root: Path, name: str, **options):
    """A validated recipe `data` section for adapter `name` under `root` (which must be an allowed data root)."""
    from ssmbench.recipe import validate_recipe

    return validate_recipe({"name": "fixture", "data": {"name": name, "root": str(root), **options}}).data
