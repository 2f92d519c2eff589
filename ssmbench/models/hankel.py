"""The STU spectral filters: top-K eigenpairs of a fixed Hankel matrix (docs/methods.md §E "Hankel matrix", "Alternative Hankel").

Two Hankel matrices of size L x L (1-indexed i, j; s = i + j):

    variant "z":  Z[i, j]   = 2 / (s^3 - s)                                  = int_0^1  mu(a) mu(a)^T da,
                  mu(a) = (1 - a) (1, a, ..., a^(L-1))
    variant "l":  Z_L[i, j] = ((-1)^(s-2) + 1) * 8 / ((s+3)(s-1)(s+1))        = int_-1^1 (a^2 - 1)^2 a^(s-2) da

Both are PSD with exponentially decaying spectra, so only the top few eigenpairs carry information.
`spectral_filters(L, K, variant)` returns (sigma, phi): the top-K eigenvalues in descending order and the
eigenvectors as columns of phi (L, K), in float64, each with its largest-magnitude entry made positive.

Two eigensolvers, held equal by tests:
- `dense_top_eigenpairs`: `torch.linalg.eigh` of the materialized matrix (O(L^2) memory, O(L^3) time): the
  straightforward path, used as the reference.
- `subspace_top_eigenpairs` (used): block subspace iteration with Rayleigh-Ritz, where Z x is a Hankel product
  done by FFT: O((K + 16) L log L) time per iteration and O((K + 16) L) memory. Because the spectrum decays
  geometrically (sigma_{k+1}/sigma_k < 0.5 for Z, docs/methods.md §E check 1), a block of K + 16 vectors converges in
  three or four iterations. This is what makes L = 16384 cheap (about a second): the dense matrix alone would
  be 2 GB and its eigh O(L^3). Both agree to float64 resolution: |d sigma| ~ 1e-16 absolute,
  eigenvector k to about 1e-16 / sigma_k (filters whose sigma is below ~1e-16 sigma_1 are noise either way).

Results are cached in memory and on disk (`<cache_dir>/hankel-<variant>-L<L>-K<K>.pt`, written atomically),
since one Path-X model asks for the same (L, K, variant) filters in every layer and every run.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Literal

import torch

from ssmbench import safe_read
from ssmbench.runs import atomic_write_bytes

Variant = Literal["z", "l"]
VARIANTS = ("z", "l")
CACHE_FORMAT = 1


def hankel_entries(L: int, variant: Variant = "z") -> torch.Tensor:
    """h[s'] for s' = i + j - 2 = 0..2L-2 (0-indexed anti-diagonals), float64: Z[i, j] = h[i + j] (0-indexed i, j)."""
    s = torch.arange(2, 2 * L + 1, dtype=torch.float64)  # s = i + j with 1-indexed i, j
    if variant == "z":
        return 2.0 / (s**3 - s)
    if variant == "l":
        even = (s % 2 == 0).to(torch.float64)  # (-1)^(s-2) + 1 = 2 for even s, 0 for odd s
        return 2.0 * even * 8.0 / ((s + 3) * (s - 1) * (s + 1))
    raise ValueError(f"unknown Hankel variant {variant!r}; known: {', '.join(VARIANTS)}")


def hankel_matrix(L: int, variant: Variant = "z") -> torch.Tensor:
    """The dense (L, L) Hankel matrix, float64."""
    idx = torch.arange(L)
    return hankel_entries(L, variant)[idx[:, None] + idx[None, :]]


def hankel_matmul(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Z @ x for Z[i, j] = h[i + j] (h of length 2L-1, x of shape (L, b)) by FFT, in O(b L log L).

    (Z x)_i = sum_j h[i + j] x_j = (h * reverse(x))[i + L - 1], a linear convolution; a circular one of size
    n >= 2L - 1 is exact at the indices L-1..2L-2 that are kept.
    """
    L = x.shape[0]
    n = 2 * L
    h_f = torch.fft.rfft(h, n=n)
    x_f = torch.fft.rfft(x.flip(0), n=n, dim=0)
    return torch.fft.irfft(h_f[:, None] * x_f, n=n, dim=0)[L - 1:2 * L - 1]


def fix_signs(phi: torch.Tensor) -> torch.Tensor:
    """Flip each column so that its largest-magnitude entry is positive (eigenvectors are defined up to sign)."""
    idx = phi.abs().argmax(dim=0)
    sign = torch.sign(phi[idx, torch.arange(phi.shape[1])])
    return phi * torch.where(sign == 0, torch.ones_like(sign), sign)


def dense_top_eigenpairs(L: int, K: int, variant: Variant = "z") -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K eigenpairs from `eigh` of the dense matrix (ascending order, so take the last K and reverse)."""
    sigma, phi = torch.linalg.eigh(hankel_matrix(L, variant))
    return sigma[-K:].flip(0), fix_signs(phi[:, -K:].flip(1))


def subspace_top_eigenpairs(L: int, K: int, variant: Variant = "z", oversample: int = 16, max_iter: int = 100,
                            tol: float = 1e-15, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K eigenpairs by block subspace iteration with Rayleigh-Ritz and an FFT Hankel product, float64.

    Q <- orth(Z Q), then the Ritz pairs of Q^T Z Q; stop when every one of the top K residuals
    ||Z phi_k - sigma_k phi_k|| is below tol * sigma_1 * sqrt(L) (the accuracy of a float64 product with Z)
    and the Ritz values stop changing.
    """
    h = hankel_entries(L, variant)
    b = min(L, K + oversample)
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(L, b, generator=g, dtype=torch.float64))
    previous = None
    for _ in range(max_iter):
        ZQ = hankel_matmul(h, Q)
        T = Q.T @ ZQ
        ritz, W = torch.linalg.eigh((T + T.T) / 2)
        ritz, W = ritz.flip(0), W.flip(1)  # largest first
        sigma, phi = ritz[:K], Q @ W[:, :K]
        residual = torch.linalg.vector_norm(ZQ @ W[:, :K] - phi * sigma, dim=0).max()
        converged = residual <= tol * sigma[0] * L**0.5
        if converged and previous is not None and torch.allclose(sigma, previous, rtol=1e-13, atol=tol * sigma[0]):
            break
        previous = sigma
        Q, _ = torch.linalg.qr(ZQ @ W)  # the next subspace Z span(Q), Ritz vectors first
    return sigma, fix_signs(phi)


def cache_path(cache_dir: Path, L: int, K: int, variant: Variant) -> Path:
    return Path(cache_dir) / f"hankel-{variant}-L{L}-K{K}.pt"


def _read_cache(path: Path, L: int, K: int, variant: Variant) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached (sigma, phi), or None if the file is missing, unreadable or for other sizes."""
    try:
        d = torch.load(io.BytesIO(safe_read.read_bytes(path, "checkpoint")), map_location="cpu", weights_only=True)
    except Exception:  # missing or damaged: recomputed and (over)written
        return None
    ok = (isinstance(d, dict) and d.get("format") == CACHE_FORMAT and (d.get("L"), d.get("K"), d.get("variant")) == (L, K, variant)
          and d["sigma"].shape == (K,) and d["phi"].shape == (L, K) and d["phi"].dtype == torch.float64
          and torch.isfinite(d["phi"]).all())
    return (d["sigma"], d["phi"]) if ok else None


@functools.lru_cache(maxsize=32)
def spectral_filters(L: int, K: int, variant: Variant = "z", cache_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma (K,), phi (L, K)), float64: the top-K eigenpairs of the L x L Hankel matrix, sigma descending.

    Cached per (L, K, variant) in memory, and on disk under `cache_dir` when given. Callers must not modify the
    returned tensors (they are shared).
    """
    if not 1 <= K <= L:
        raise ValueError(f"the number of filters K must be in 1..L; got K={K} for L={L}")
    path = cache_path(Path(cache_dir), L, K, variant) if cache_dir is not None else None
    cached = _read_cache(path, L, K, variant) if path is not None else None
    if cached is not None:
        return cached
    sigma, phi = subspace_top_eigenpairs(L, K, variant)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save({"format": CACHE_FORMAT, "L": L, "K": K, "variant": variant, "sigma": sigma, "phi": phi}, buffer)
        atomic_write_bytes(path, buffer.getvalue())
    return sigma, phi
