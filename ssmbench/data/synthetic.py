"""Synthetic regression tasks of the initialization papers (source "synthetic"; generated in memory, seeded).

- `synthetic-memory` (Liu & Li 2025, Sec. 4.2 / App. A): inputs x ~ N(0, 1) i.i.d. of length L, one channel;
  target y = x_0 + x_{L-1}, which needs a memory of the whole sequence (an SSM whose kernel decays like
  exp(dt Re(A) l) forgets x_0). The paper uses L = 128 and 1000 train / 1000 test sequences.
- `synthetic-frequency` (TDI, App. D.2 as reconstructed in docs/methods.md §C): X = mean-centered MNIST (the embedded
  subset, standardized as in `smnist`, minus the per-pixel training mean), L = 784, t_l = l / L;
  f_low = sum_{k=1,2,3} cos(2 pi k t), f_high = sum_{k=L/2-3..L/2-1} cos(2 pi k t), ||f||_2 = 1;
  y = X f + sigma * eps. With `inputs: white` (X i.i.d. N(0, 1), any L; docs/methods.md §C check 2) Sigma_xy = f, so the
  task's cross-power spectrum is the planted bins plus a sampling floor; MNIST's own covariance also colours it
  (for `high` its peak sits at the Nyquist bin 392, two bins above the planted 390).
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import TensorDataset

from ssmbench.contracts import ModelIO
from ssmbench.data.base import Adapter, DataBundle, split_indices
from ssmbench.data.mnist import MEAN, STD, load_embedded
from ssmbench.errors import DataError
from ssmbench.registry import DATASETS


def regression_bundle(x_train, y_train, x_test, y_test, cfg, provenance: str, facts: dict) -> DataBundle:
    """A one-channel, one-target regression bundle; validation carved from train with `data.split_seed`."""
    keep, held = split_indices(len(x_train), cfg.val_fraction, cfg.split_seed)
    return DataBundle(
        train=TensorDataset(x_train[keep], y_train[keep]), val=TensorDataset(x_train[held], y_train[held]),
        test=TensorDataset(x_test, y_test), io=ModelIO(d_input=1, input_kind="real", n_outputs=1),
        seq_len=x_train.shape[1], task="regression", source="synthetic", provenance=provenance, facts=facts)


class MemoryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    length: int = Field(128, ge=2, le=1_000_000, description="sequence length L")
    n_train: int = Field(1000, ge=2, le=10_000_000, description="training sequences (validation is carved from these)")
    n_test: int = Field(1000, ge=1, le=10_000_000, description="test sequences")
    seed: int = Field(0, ge=0, lt=2**32, description="seed of the generator")


@DATASETS.register("synthetic-memory")
class SyntheticMemory(Adapter):
    Options = MemoryOptions
    description = "i.i.d. Gaussian sequences, target x_0 + x_{L-1} (Liu & Li's long-memory task; regression)"

    def build(self, cfg, options: MemoryOptions) -> DataBundle:
        g = torch.Generator().manual_seed(options.seed)
        x = torch.randn(options.n_train + options.n_test, options.length, 1, generator=g)
        y = x[:, 0] + x[:, -1]  # (S, 1)
        n = options.n_train
        return regression_bundle(x[:n], y[:n], x[n:], y[n:], cfg,
                                 f"Liu & Li's long-memory task: x ~ N(0, 1), L = {options.length}, "
                                 f"y = x_0 + x_(L-1), seed {options.seed}", {})


def planted_filter(L: int, pattern: str) -> np.ndarray:
    """f_low = sum_{k=1..3} cos(2 pi k t) or f_high = sum_{k=L/2-3..L/2-1} cos(2 pi k t), t = l/L, ||f||_2 = 1."""
    ks = [1, 2, 3] if pattern == "low" else [L // 2 - 3, L // 2 - 2, L // 2 - 1]
    t = np.arange(L) / L
    f = sum(np.cos(2 * math.pi * k * t) for k in ks)
    return f / np.linalg.norm(f)


class FrequencyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pattern: Literal["low", "high"] = Field(description="planted frequencies: bins 1-3 (low) or L/2-3..L/2-1 (high)")
    noise: float = Field(0.01, ge=0.0, le=1e3, description="sigma of the Gaussian target noise")
    inputs: Literal["mnist", "white"] = Field("mnist", description="X: mean-centered MNIST (App. D.2) or i.i.d. N(0, 1) (docs/methods.md §C check 2)")
    length: int = Field(784, ge=8, le=1_000_000, description="L for white inputs (MNIST is always 784)")
    n_train: Optional[int] = Field(None, ge=2, le=1_000_000, description="training sequences (null = 10,000, all the embedded MNIST)")
    n_test: int = Field(2000, ge=1, le=1_000_000, description="test sequences of white inputs (MNIST: the 2,000 embedded test images)")
    seed: int = Field(0, ge=0, lt=2**32, description="seed of the target noise and of white inputs")


@DATASETS.register("synthetic-frequency")
class SyntheticFrequency(Adapter):
    Options = FrequencyOptions
    description = "mean-centered MNIST X, y = X f + noise with f a low or high planted frequency (TDI App. D.2; regression)"

    def build(self, cfg, options: FrequencyOptions) -> DataBundle:
        rng = np.random.default_rng(options.seed)
        n_train = options.n_train or 10000
        if options.inputs == "white":
            Xtr = rng.standard_normal((n_train, options.length))
            Xte = rng.standard_normal((options.n_test, options.length))
        else:
            xtr, _, xte, _ = load_embedded()
            if n_train > len(xtr):
                raise DataError(f"synthetic-frequency: data.n_train = {n_train} but the embedded MNIST subset has "
                                f"{len(xtr)} training images; use at most {len(xtr)}, or `data.inputs: white`")
            Xtr = (xtr[:n_train].reshape(n_train, -1).astype(np.float64) / 255.0 - MEAN) / STD
            Xte = (xte.reshape(len(xte), -1).astype(np.float64) / 255.0 - MEAN) / STD
            mean = Xtr.mean(0)
            Xtr, Xte = Xtr - mean, Xte - mean
        L = Xtr.shape[1]
        f = planted_filter(L, options.pattern)
        ytr = Xtr @ f + options.noise * rng.standard_normal(len(Xtr))
        yte = Xte @ f + options.noise * rng.standard_normal(len(Xte))

        def tensors(X: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(X).float().unsqueeze(-1), torch.from_numpy(y).float().unsqueeze(-1)

        return regression_bundle(*tensors(Xtr, ytr), *tensors(Xte, yte), cfg,
                                 "TDI paper's frequency task: "
                                 f"X = {'embedded MNIST subset, mean-centered' if options.inputs == 'mnist' else 'N(0, 1)'}; "
                                 f"y = X f_{options.pattern} + {options.noise} eps, seed {options.seed}",
                                 {"target_std": float(ytr.std())})
