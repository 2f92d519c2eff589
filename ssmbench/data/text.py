"""Byte-level IMDB (`text`, LRA "Text"; docs/methods.md §G): the aclImdb folder layout (`ssmbench data download text`).

Each review's UTF-8 bytes are tokens: id = byte + 1, 0 = <pad>, so the vocabulary has 257 entries; rows are
truncated / padded to `max_length` (4096 in the SSM papers). Splits: 25k train, 25k test; as in LRA the test set
is also the validation set (`validation: test`), or validation is carved from train (`validation: carve`).
Layout: `aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt` (label 1 = pos).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ssmbench.contracts import ModelIO
from ssmbench.data.base import Adapter, DataBundle, split_indices
from ssmbench.data.cache import cache_key, prepared_splits
from ssmbench.data.layout import data_origin, missing_data, resolve_source
from ssmbench.data.textfile import data_bytes
from ssmbench.errors import DataError
from ssmbench.registry import DATASETS

BYTE_VOCAB = 257  # <pad> + 256 byte values
PUBLIC = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz (extract to data/aclImdb)"


def encode_bytes(text: str, max_length: int) -> np.ndarray:
    """UTF-8 bytes + 1, truncated and zero-padded to max_length (uint16 row)."""
    b = np.frombuffer(text.encode("utf-8")[:max_length], dtype=np.uint8)
    row = np.zeros(max_length, dtype=np.uint16)
    row[:len(b)] = b.astype(np.uint16) + 1
    return row


def tokens_transform(row: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(row.astype(np.int64))


def read_acl_split(folder: Path, split: str) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for label, sub in ((0, "neg"), (1, "pos")):
        for f in sorted((folder / split / sub).glob("*.txt"), key=lambda p: p.name):
            try:
                texts.append(data_bytes(f).decode("utf-8"))
            except UnicodeDecodeError as e:
                raise DataError(f"{f}: unreadable review ({type(e).__name__}); the aclImdb copy is corrupt — extract it again.") from None
            labels.append(label)
    return texts, labels


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field("aclImdb", description="folder under data.root with {train,test}/{pos,neg}/*.txt")
    max_length: int = Field(4096, ge=16, le=1_000_000, description="bytes per review: truncated / zero-padded to this")
    validation: Literal["test", "carve"] = Field("test", description="test: LRA convention (test doubles as validation); carve: data.val_fraction of train")


def expected_dirs(folder: Path) -> list[Path]:
    return [folder / s / c for s in ("train", "test") for c in ("pos", "neg")]


def load_reviews(folder: Path) -> dict[str, tuple[list[str], list[int]]]:
    """{split: (texts, labels)} from the aclImdb folder."""
    if all(d.is_dir() for d in expected_dirs(folder)):
        return {s: read_acl_split(folder, s) for s in ("train", "test")}
    raise missing_data("text", expected_dirs(folder), PUBLIC)


@DATASETS.register("text")
class Text(Adapter):
    Options = TextOptions
    description = "LRA Text: byte-level IMDB sentiment, tokens (257), L = 4096, 2 classes"

    def build(self, cfg, options: TextOptions) -> DataBundle:
        folder = resolve_source(cfg.root, options.source, "text")
        files = sorted(folder.glob("t*/[pn]*/*.txt")) if folder.is_dir() else []
        key = cache_key(files, Path(cfg.root), {**options.model_dump(exclude={"validation"}), "n": len(files)})

        def prepare():
            reviews = load_reviews(folder)
            return {s: (np.stack([encode_bytes(t, options.max_length) for t in texts]), np.array(labels, dtype=np.int64))
                    for s, (texts, labels) in reviews.items()}

        if not files:
            raise missing_data("text", expected_dirs(folder), PUBLIC)
        splits, cache = prepared_splits(Path(cfg.root), "text", key, prepare, tokens_transform)
        train, test = splits["train"], splits["test"]
        val = test
        if options.validation == "carve":
            from torch.utils.data import Subset

            keep, held = split_indices(len(train), cfg.val_fraction, cfg.split_seed)
            train, val = Subset(train, keep.tolist()), Subset(train, held.tolist())
        source, provenance = data_origin(folder, "IMDB reviews (aclImdb layout)")
        return DataBundle(train=train, val=val, test=test,
                          io=ModelIO(d_input=BYTE_VOCAB, input_kind="tokens", n_outputs=2),
                          seq_len=options.max_length, task="classification", source=source,
                          provenance=provenance + (" (validation = test, LRA convention)" if options.validation == "test" else ""),
                          facts={"cache": str(cache)})
