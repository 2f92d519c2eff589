"""LRA Retrieval (`retrieval`): AAN citation pairs, byte-level, two documents per sample (docs/methods.md §G).

Files `tsv_data/new_aan_pairs.{train,eval,test}.tsv`: no header, tab-separated, no quoting, five columns
`label(0.0/1.0) id1 id2 text1 text2`. Each document is tokenized like `text` (byte + 1, 0 = <pad>) to
`max_length` (4000) and a sample is x = (2, max_length); the model encodes both documents with the same encoder
and blocks and classifies [x1, x2, x1*x2, x1-x2] (`ModelIO.pair`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ssmbench.contracts import ModelIO
from ssmbench.data.base import Adapter, DataBundle
from ssmbench.data.cache import cache_key, prepared_splits
from ssmbench.data.layout import data_origin, missing_data, resolve_source
from ssmbench.data.textfile import numbered_lines
from ssmbench.data.text import BYTE_VOCAB, encode_bytes, tokens_transform
from ssmbench.errors import DataError
from ssmbench.registry import DATASETS

SPLIT_FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}
PUBLIC = "the LRA release (lra_release.gz from github.com/google-research/long-range-arena), folder tsv_data/"


def read_pairs(path: Path, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(x (S, 2, max_length) uint16, y (S,)) from an AAN pairs TSV; a bad line raises a DataError naming it."""
    xs, ys = [], []
    for i, line in numbered_lines(path):
        r = line.split("\t")
        try:
            label, _id1, _id2, text1, text2 = r
            y = int(float(label))
            if y not in (0, 1) or float(label) != y:
                raise ValueError
        except (ValueError, OverflowError):  # OverflowError: a label of inf
            raise DataError(f"{path}: line {i} is malformed (expected 5 tab-separated fields "
                            f"'label(0.0/1.0) id1 id2 text1 text2', got {len(r)} fields, label {r[0]!r:.20}); the file "
                            f"is truncated or corrupt — get it again.") from None
        xs.append(np.stack([encode_bytes(text1, max_length), encode_bytes(text2, max_length)]))
        ys.append(y)
    if not xs:
        raise DataError(f"{path}: the file is empty; get it again from {PUBLIC}.")
    return np.stack(xs), np.array(ys, dtype=np.int64)


class RetrievalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field("lra_release/tsv_data", description="folder under data.root holding new_aan_pairs.{train,eval,test}.tsv")
    max_length: int = Field(4000, ge=16, le=1_000_000, description="bytes per document: truncated / zero-padded to this")


@DATASETS.register("retrieval")
class Retrieval(Adapter):
    Options = RetrievalOptions
    description = "LRA Retrieval: AAN citation pairs, byte tokens, 2 x 4000, 2 classes, matching head"

    def files(self, cfg, options) -> list[Path]:
        folder = resolve_source(cfg.root, options.source, "retrieval")
        return [folder / f for f in SPLIT_FILES.values()]

    def build(self, cfg, options: RetrievalOptions) -> DataBundle:
        files = self.files(cfg, options)
        if not all(f.is_file() for f in files):
            raise missing_data("retrieval", files, PUBLIC)
        key = cache_key(files, Path(cfg.root), options.model_dump())
        splits, cache = prepared_splits(Path(cfg.root), "retrieval", key,
                                        lambda: {s: read_pairs(f, options.max_length) for s, f in zip(SPLIT_FILES, files)},
                                        tokens_transform)
        source, provenance = data_origin(files[0].parent, "LRA AAN pairs release")
        return DataBundle(train=splits["train"], val=splits["val"], test=splits["test"],
                          io=ModelIO(d_input=BYTE_VOCAB, input_kind="tokens", n_outputs=2, pair=True),
                          seq_len=options.max_length, task="classification", source=source, provenance=provenance,
                          facts={"cache": str(cache)})
