"""LRA ListOps (`listops`): `listops-1000/basic_{train,val,test}.tsv`, header `Source<TAB>Target` (docs/methods.md §G).

Tokenization as in LRA and state-spaces/s4: `]` -> `X`, parentheses dropped, split on whitespace. Token ids are
fixed (not frequency-ranked): 0 <pad>, 1 <unk>, 2 <eos>, 3..12 the digits 0-9, then [MIN [MAX [MED [SM X.
Rows are padded with <pad> to `max_length` (2000; s4 uses 2048 with `append_eos`). 10 classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ssmbench.contracts import ModelIO
from ssmbench.data.base import Adapter, DataBundle
from ssmbench.data.cache import cache_key, prepared_splits
from ssmbench.data.layout import data_origin, missing_data, resolve_source
from ssmbench.data.textfile import numbered_lines
from ssmbench.errors import DataError
from ssmbench.registry import DATASETS

SPECIALS = ["<pad>", "<unk>", "<eos>"]
VOCAB = SPECIALS + [str(d) for d in range(10)] + ["[MIN", "[MAX", "[MED", "[SM", "X"]
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
PAD, UNK, EOS = 0, 1, 2
SPLIT_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
PUBLIC = "the LRA release (lra_release.gz from github.com/google-research/long-range-arena), folder listops-1000/"


def tokenize(source: str) -> list[str]:
    return source.replace("]", "X").replace("(", "").replace(")", "").split()


def encode(source: str, max_length: int, append_eos: bool) -> tuple[np.ndarray, int]:
    """Token ids padded with <pad> to max_length (truncated if longer); also the unpadded length."""
    ids = [TOKEN_ID.get(t, UNK) for t in tokenize(source)] + ([EOS] if append_eos else [])
    n = len(ids)
    row = np.full(max_length, PAD, dtype=np.uint8)
    row[:min(n, max_length)] = ids[:max_length]
    return row, n


def read_tsv(path: Path) -> list[tuple[str, int]]:
    """(source, label) rows of a ListOps TSV (tab-separated, no quoting); a malformed file raises a DataError
    naming file and line. Expressions of any length are read (rows are truncated to `max_length` later)."""
    rows = []
    lines = numbered_lines(path)
    header = next(lines, (1, None))[1]
    if header is None or [h.strip() for h in header.split("\t")[:2]] != ["Source", "Target"]:
        raise DataError(f"{path}: line 1 must be the header 'Source<TAB>Target' (got {header!r:.60}); "
                        f"is this a ListOps TSV from the LRA release?")
    for i, line in lines:
        r = line.split("\t")
        try:
            source, target = r
            label = int(target)
            if not 0 <= label <= 9:
                raise ValueError
        except ValueError:
            raise DataError(f"{path}: line {i} is malformed (expected 'expression<TAB>label 0-9', got "
                            f"{line!r:.80}); the file is truncated or corrupt — get it again.") from None
        rows.append((source, label))
    if not rows:
        raise DataError(f"{path}: no samples after the header; the file is truncated — get it again.")
    return rows


class ListOpsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field("lra_release/listops-1000", description="folder under data.root holding basic_{train,val,test}.tsv")
    max_length: int = Field(2000, ge=16, le=100_000, description="sequence length: rows are padded/truncated to it")
    append_eos: bool = Field(False, description="append an <eos> token (state-spaces/s4 uses it with max_length 2048)")


@DATASETS.register("listops")
class ListOps(Adapter):
    Options = ListOpsOptions
    description = "LRA ListOps: nested MIN/MAX/MED/SM expressions, tokens, L = 2000, 10 classes"
    generate_command = "ssmbench data generate listops --n 96000 --out data/lra_release/listops-1000"

    def files(self, cfg, options) -> list[Path]:
        folder = resolve_source(cfg.root, options.source, "listops")
        return [folder / f for f in SPLIT_FILES.values()]

    def build(self, cfg, options: ListOpsOptions) -> DataBundle:
        folder = resolve_source(cfg.root, options.source, "listops")
        files = self.files(cfg, options)
        if not all(f.is_file() for f in files):
            raise missing_data("listops", files, PUBLIC, self.generate_command)

        def prepare():
            out = {}
            for split, name in SPLIT_FILES.items():
                rows = read_tsv(folder / name)
                x = np.stack([encode(s, options.max_length, options.append_eos)[0] for s, _ in rows])
                out[split] = (x, np.array([y for _, y in rows], dtype=np.int64))
            return out

        key = cache_key(files, Path(cfg.root), options.model_dump())
        splits, cache = prepared_splits(Path(cfg.root), "listops", key, prepare, lambda r: torch.from_numpy(r.astype(np.int64)))
        source, provenance = data_origin(folder, "LRA ListOps release")
        return DataBundle(train=splits["train"], val=splits["val"], test=splits["test"],
                          io=ModelIO(d_input=len(VOCAB), input_kind="tokens", n_outputs=10),
                          seq_len=options.max_length, task="classification", source=source, provenance=provenance,
                          facts={"cache": str(cache), "vocab": VOCAB})
