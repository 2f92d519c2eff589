"""What a dataset adapter returns, and the split helpers shared by adapters."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch.utils.data import Dataset, Subset

from ssmbench.contracts import ModelIO
from ssmbench.errors import DataError

# Where the data came from; every results table shows it.
Source = Literal["official", "embedded-subset", "generated", "synthetic"]


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    test: Dataset
    io: ModelIO
    seq_len: int
    task: Literal["classification", "regression"]
    source: Source
    provenance: str  # one line: which files / generator / subset
    facts: dict = field(default_factory=dict)  # extra numbers worth keeping in the run record

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Adapter(ABC):
    """A dataset adapter: `build(cfg, options)` returns a DataBundle. Register with `@DATASETS.register(name)`."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    description: ClassVar[str] = ""

    @abstractmethod
    def build(self, cfg, options) -> DataBundle:
        """Read (or generate) the data named by the recipe's `data` section (`cfg`) and its adapter `options`."""


def split_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of range(n) into (rest, held_out) with round(fraction * n) held out."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = int(round(fraction * n))
    return perm[k:].sort().values, perm[:k].sort().values


def subsample(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """The first round(fraction * n) items of a seeded permutation (nested across fractions for one seed)."""
    if fraction >= 1.0:
        return dataset
    n = len(dataset)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    k = max(1, int(round(fraction * n)))
    return Subset(dataset, perm[:k].sort().values.tolist())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def require_file(path: Path, what: str, how: str) -> Path:
    """Return `path` if it is a file, else raise a DataError that says what is expected there and how to get it."""
    if not path.is_file():
        raise DataError(f"{what}: expected file {path} is missing. {how}")
    return path
