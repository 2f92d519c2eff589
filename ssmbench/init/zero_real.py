"""Zero real part and the autocorrelation-aware step size (Liu & Li, ICLR 2025; docs/methods.md §D).

`init.zero_real_fraction: p` picks floor(p * H) of the H channels of every SSM layer uniformly at random (a
generator seeded by the recipe seed and the layer index) and, for each chosen channel's whole state vector:

- sets Re(A) = 0 and switches the channel to a raw real part (`S4D.linear_real`: Re A = -A_re, no exp), so
  Re(A) can reach and cross 0 during training; Im(A) keeps the base init;
- sets dt to a constant dt0 (still trainable).

With Re(A) = 0 the kernel does not decay: |A_bar^l| = |exp(l dt A)| = 1 for every lag l.

dt0 is `init.dt0` when a number, `model.ssm.dt_min` when null (the paper's LRA choice), and for `auto` Theorem 1's
dt0 = c0 / sqrt(L * lambda_max(E[x x^T])) with c0 = 1, where lambda_max is the top eigenvalue of the uncentred
second moment of the globally standardized training inputs, found by power iteration with matvecs
X^T (X v) / S, so no L x L matrix is ever formed.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ssmbench.errors import SSMBenchError


def training_batches(dataset: Dataset, samples: int, seed: int, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches of at most `samples` training items: all of them, or a seeded random subset. Every draw comes
    from a generator seeded by `seed` (the DataLoader, too, draws a base seed when iterated): none from the global
    RNG, the training stream, which must not depend on whether this ran or a cache was hit."""
    n = len(dataset)
    if samples < n:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:samples].sort().values
        dataset = Subset(dataset, idx.tolist())
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator().manual_seed(seed))


def standardize(X: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Global standardization (one mean, one std over every element), so E[x_i^2] ~ 1 and Tr E[x x^T] ~ L.

    Sums are taken in float64 over row chunks; the result keeps X's dtype (X may be large: S x L).
    """
    n = X.numel()
    mean = sum(float(c.double().sum()) for c in X.split(chunk)) / n
    var = sum(float(((c.double() - mean) ** 2).sum()) for c in X.split(chunk)) / max(n - 1, 1)
    return (X - mean) / math.sqrt(max(var, 1e-24))


def lambda_max(X: torch.Tensor, iters: int = 1000, tol: float = 1e-10, chunk: int = 1024) -> tuple[float, int]:
    """Top eigenvalue of Sigma = X^T X / S (X: (S, L)) by power iteration; returns (lambda, iterations used).

    Each step is v <- Sigma v / ||Sigma v|| with Sigma v = sum over row chunks of X_c^T (X_c v) / S (float64),
    so memory is O(S L) for X plus O(chunk L). The estimate is the Rayleigh quotient v^T Sigma v; iteration stops
    when it changes by less than `tol` relatively. Sigma is PSD, so the quotient increases monotonically to lambda.
    """
    S, L = X.shape

    def matvec(v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(v)
        for i in range(0, S, chunk):
            Xc = X[i:i + chunk].double()
            out += Xc.T @ (Xc @ v)
        return out / S

    v = torch.ones(L, dtype=torch.float64) / math.sqrt(L)
    v = v + 1e-3 * torch.randn(L, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = v / v.norm()
    lam = 0.0
    for it in range(1, iters + 1):
        w = matvec(v)
        new = float(v @ w)
        norm = w.norm()
        if norm == 0:
            return 0.0, it
        v = w / norm
        if abs(new - lam) <= tol * abs(new):
            return new, it
        lam = new
    return lam, iters


def input_sequences(data, samples: int, seed: int) -> torch.Tensor:
    """The training inputs as scalar sequences (S * d_in, L): each input channel counts as one sequence."""
    if data.io.input_kind != "real":
        raise SSMBenchError(f"init.dt0: auto estimates the autocorrelation of real-valued inputs, but this dataset "
                            f"has {data.io.input_kind} inputs; set init.dt0 to a number (e.g. {1.0 / data.seq_len:.3g} = 1/L)")
    xs = [x.reshape(len(x), data.seq_len, -1).transpose(1, 2).reshape(-1, data.seq_len).float()
          for x, _ in training_batches(data.train, samples, seed)]
    return torch.cat(xs)


def auto_dt0(data, samples: int, seed: int) -> dict:
    """dt0 = 1 / sqrt(L * lambda_max) from the standardized training inputs (Theorem 1, c0 = 1)."""
    X = standardize(input_sequences(data, samples, seed))
    lam, iters = lambda_max(X)
    L = X.shape[1]
    return {"lambda_max": lam, "power_iterations": iters, "sequences": X.shape[0], "L": L,
            "dt0": 1.0 / math.sqrt(L * lam)}


@torch.no_grad()
def zero_real_part(layers: list[torch.nn.Module], fraction: float, dt0: float, seed: int) -> list[int]:
    """Zero Re(A) of floor(fraction * H) seeded-random channels per layer, raw real part, dt = dt0.

    Returns the chosen channel count per layer.
    """
    counts = []
    for depth, layer in enumerate(layers):
        g = torch.Generator().manual_seed(seed * 1009 + depth)
        if hasattr(layer, "zero_real"):  # DSS, S5, LRU: modes instead of channels (docs/methods.md §I.6)
            counts.append(layer.zero_real(fraction, dt0, g))
            continue
        H = layer.log_dt.shape[0]
        k = math.floor(fraction * H)
        chosen = torch.randperm(H, generator=g)[:k].to(layer.log_dt.device)
        layer.linear_real[chosen] = True
        layer.A_re[chosen] = 0.0  # on linear_real channels Re(A) = -A_re
        layer.set_dt(dt0, chosen)
        counts.append(k)
    return counts


def apply_zero_real(layers: list[torch.nn.Module], cfg, context: dict) -> dict:
    """`init.zero_real_fraction` with dt0 from `init.dt0`; returns facts (counts, dt0, lambda_max) and logs them."""
    recipe, log = context["recipe"], context.get("log", print)
    facts: dict = {"fraction": cfg.zero_real_fraction}
    if cfg.dt0 == "auto":
        facts.update(auto_dt0(context["data"], cfg.samples, recipe.data.split_seed))
        facts["dt0_source"] = "auto"
    elif cfg.dt0 is None:
        facts.update(dt0=recipe.model.ssm.dt_min, dt0_source="model.ssm.dt_min")
    else:
        facts.update(dt0=float(cfg.dt0), dt0_source="init.dt0")
    counts = zero_real_part(layers, cfg.zero_real_fraction, facts["dt0"], recipe.seed)
    facts.update(channels_per_layer=counts, channels_total=sum(counts))
    lam = f"lambda_max = {facts['lambda_max']:.4g} (L = {facts['L']}, {facts['sequences']} sequences), " if "lambda_max" in facts else ""
    log(f"zero real part: {sum(counts)} channels ({counts[0] if counts else 0} per layer, p = {cfg.zero_real_fraction}); "
        f"{lam}dt0 = {facts['dt0']:.4g} ({facts['dt0_source']})")
    return facts
