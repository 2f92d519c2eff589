"""The STU Hankel matrices and their top eigenpairs (docs/methods.md §E "Hankel matrix", "Alternative Hankel", checks 1-2, 4)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from ssmbench.models import hankel as hk


def gauss_legendre(f, a: float, b: float, n: int = 64) -> float:
    """int_a^b f(x) dx by n-point Gauss-Legendre (exact for polynomials of degree < 2n)."""
    x, w = np.polynomial.legendre.leggauss(n)
    t = (b - a) / 2 * x + (a + b) / 2
    return float((b - a) / 2 * np.sum(w * f(t)))


@pytest.mark.parametrize("variant", ["z", "l"])
def test_entries_equal_the_integrals(variant):
    """Z[i, j] = int_0^1 (1-a)^2 a^(i+j-2) da and Z_L[i, j] = int_-1^1 (a^2-1)^2 a^(i+j-2) da (1-indexed)."""
    Z = hk.hankel_matrix(20, variant)
    for i, j in [(1, 1), (1, 2), (3, 5), (7, 7), (10, 19), (20, 20)]:
        if variant == "z":
            expected = gauss_legendre(lambda a: (1 - a) ** 2 * a ** (i + j - 2), 0.0, 1.0)
        else:
            expected = gauss_legendre(lambda a: (a * a - 1) ** 2 * a ** (i + j - 2), -1.0, 1.0)
        assert Z[i - 1, j - 1].item() == pytest.approx(expected, rel=1e-12, abs=1e-16)
    assert torch.equal(Z, Z.T)
    assert torch.equal(Z[1:, :-1], Z[:-1, 1:])  # Hankel: constant along anti-diagonals
    if variant == "z":
        assert Z[2, 4].item() == pytest.approx(2 / (8**3 - 8), rel=1e-15)  # Z[3, 5], s = 8
    else:
        assert Z[0, 1].item() == 0.0 and Z[1, 2].item() == 0.0  # odd s: the odd moments vanish


@pytest.mark.parametrize("variant", ["z", "l"])
@pytest.mark.parametrize("L", [64, 256, 4096])
def test_psd_and_exponential_decay(variant, L):
    if L <= 256:  # the whole spectrum, dense
        sigma = torch.linalg.eigvalsh(hk.hankel_matrix(L, variant)).flip(0)
        assert sigma[-1] >= -1e-14 * sigma[0]  # PSD up to rounding
    else:  # the top of the spectrum, matrix-free (held equal to dense below)
        sigma = hk.subspace_top_eigenpairs(L, 24, variant)[0]
    resolved = sigma[sigma > 1e-12 * sigma[0]][:17]
    ratios = resolved[1:] / resolved[:-1]
    # Each eigenvalue at most half the previous one: at least exponential decay (docs/methods.md §E check 1).
    assert ratios.max() < 0.5 if variant == "z" else ratios.max() < 0.7
    assert len(resolved) >= 11
    if variant == "z":
        assert sigma[0].item() == pytest.approx(0.36039, abs=1e-5)  # the same for every L


@pytest.mark.parametrize("L", [7, 100, 513])
def test_fft_hankel_product_equals_dense(L):
    g = torch.Generator().manual_seed(L)
    x = torch.randn(L, 3, generator=g, dtype=torch.float64)
    for variant in ("z", "l"):
        h = hk.hankel_entries(L, variant)
        expected = hk.hankel_matrix(L, variant) @ x
        assert (hk.hankel_matmul(h, x) - expected).abs().max() < 1e-14  # float64 rounding, O(eps log L)


@pytest.mark.parametrize("variant", ["z", "l"])
@pytest.mark.parametrize("L,K", [(300, 16), (600, 24)])
def test_subspace_solver_equals_dense_eigh(variant, L, K):
    s_dense, phi_dense = hk.dense_top_eigenpairs(L, K, variant)
    s_fast, phi_fast = hk.subspace_top_eigenpairs(L, K, variant)
    assert torch.all(s_fast[:-1] >= s_fast[1:])  # descending
    assert torch.allclose(s_fast, s_dense, rtol=0, atol=1e-14 * s_dense[0])
    # Eigenvectors are determined to ~ eps / sigma_k: compare the well-resolved ones.
    resolved = s_dense > 1e-9 * s_dense[0]
    assert resolved.sum() >= 10
    assert (phi_fast - phi_dense)[:, resolved].abs().max() < 1e-6
    # And against the eigen-equation with the dense matrix (an independent residual).
    Z = hk.hankel_matrix(L, variant)
    assert torch.linalg.vector_norm(Z @ phi_fast - phi_fast * s_fast, dim=0).max() < 1e-14
    assert torch.allclose(phi_fast.T @ phi_fast, torch.eye(K, dtype=torch.float64), atol=1e-12)


def test_fix_signs_makes_the_largest_entry_positive():
    phi = torch.tensor([[0.1, -0.9], [-0.8, 0.3], [0.2, 0.1]], dtype=torch.float64)
    fixed = hk.fix_signs(phi)
    assert torch.equal(fixed[:, 0], -phi[:, 0]) and torch.equal(fixed[:, 1], -phi[:, 1])
    assert torch.equal(hk.fix_signs(fixed), fixed)


def test_top_filters_span_the_lds_impulse_responses():
    """mu(a) = (1-a)(1, a, a^2, ...) lies close to the top-K span, closer as K grows (docs/methods.md §E check 2)."""
    L = 1024
    alphas = [0.0, 0.5, 0.9, 0.99, 0.999]
    worst = []
    for K in (8, 16, 24):
        _, phi = hk.spectral_filters(L, K, "z")
        residuals = []
        for a in alphas:
            mu = (1 - a) * a ** torch.arange(L, dtype=torch.float64)
            residuals.append((mu - phi @ (phi.T @ mu)).norm().item())
        worst.append(max(residuals))
    assert worst[0] > worst[1] > worst[2]
    assert worst[0] < 3e-2 and worst[1] < 1e-4 and worst[2] < 1e-6


def test_disk_cache_roundtrip_and_repair(tmp_path, monkeypatch):
    hk.spectral_filters.cache_clear()
    sigma, phi = hk.spectral_filters(64, 5, "z", str(tmp_path))
    path = hk.cache_path(tmp_path, 64, 5, "z")
    assert path.is_file() and not list(tmp_path.glob(".*.tmp"))

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although the cache file is valid")

    hk.spectral_filters.cache_clear()
    monkeypatch.setattr(hk, "subspace_top_eigenpairs", fail)
    s2, p2 = hk.spectral_filters(64, 5, "z", str(tmp_path))
    assert torch.equal(s2, sigma) and torch.equal(p2, phi)
    monkeypatch.undo()

    for damage in (b"not a torch file", None):
        if damage is None:  # a valid file for other sizes under this name
            torch.save({"format": hk.CACHE_FORMAT, "L": 64, "K": 4, "variant": "z", "sigma": sigma[:4], "phi": phi[:, :4]}, path)
        else:
            path.write_bytes(damage)
        hk.spectral_filters.cache_clear()
        s3, p3 = hk.spectral_filters(64, 5, "z", str(tmp_path))
        assert torch.allclose(s3, sigma, rtol=0, atol=1e-16) and torch.allclose(p3, phi, atol=1e-10)
        assert hk._read_cache(path, 64, 5, "z") is not None  # repaired on disk
    hk.spectral_filters.cache_clear()


def test_filters_are_cached_in_memory():
    hk.spectral_filters.cache_clear()
    first = hk.spectral_filters(128, 8, "l")
    assert hk.spectral_filters(128, 8, "l")[1] is first[1]
    with pytest.raises(ValueError, match="K must be in 1..L"):
        hk.spectral_filters(4, 8, "z")


@pytest.mark.slow
def test_path_x_length_filters(tmp_path):
    """L = 16384 (Path-X): the matrix-free solver's residuals, checked with an exact blockwise dense product."""
    L, K = 16384, 16
    start = time.perf_counter()
    sigma, phi = hk.subspace_top_eigenpairs(L, K, "z")
    seconds = time.perf_counter() - start
    h = hk.hankel_entries(L, "z")
    Zphi = torch.empty_like(phi)
    rows = torch.arange(L)
    for r in range(0, L, 1024):
        block = h[rows[r:r + 1024, None] + rows[None, :]]  # (1024, L) rows of Z, never the whole matrix
        Zphi[r:r + 1024] = block @ phi
    residual = torch.linalg.vector_norm(Zphi - phi * sigma, dim=0)
    print(f"L={L} K={K}: {seconds:.2f} s, max residual {residual.max().item():.2e}, sigma_K {sigma[-1].item():.3e}")
    assert residual.max() < 1e-14
    assert sigma[0].item() == pytest.approx(0.36039, abs=1e-5)
