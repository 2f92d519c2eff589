"""Base initializers against their docs/methods.md §A formulas, LegS against an independent eigen-solver."""

import math

import numpy as np
import pytest
import torch

from ssmbench.init.hippo import hippo_legs, s4d_inv, s4d_legs, s4d_lin, s4d_real
from ssmbench.registry import INITIALIZERS, load_components


def test_s4d_lin_formula():
    A = s4d_lin(64).A
    assert A.shape == (32,)
    for n in (0, 1, 7, 31):
        assert A[n] == complex(-0.5, math.pi * n)


def test_s4d_inv_formula():
    N = 64
    A = s4d_inv(N).A
    for n in (0, 5, 31):
        assert abs(A[n] - complex(-0.5, (N / math.pi) * (N / (2 * n + 1) - 1))) < 1e-12
    assert abs(A.imag[0] - 64 / math.pi * 63) < 1e-9  # 1283.4 (docs/methods.md §A check 3)


def test_s4d_real_formula():
    init = s4d_real(8)
    assert not init.conjugate_pairs
    assert torch.equal(init.A.real, -torch.arange(1, 9, dtype=torch.float64))
    assert torch.equal(init.A.imag, torch.zeros(8, dtype=torch.float64))


def test_hippo_legs_matrix_entries():
    A, B, P = hippo_legs(4)
    assert A[2, 1] == -math.sqrt(5) * math.sqrt(3)
    assert A[1, 1] == -2 and A[0, 3] == 0
    assert torch.allclose(B, torch.sqrt(torch.tensor([1.0, 3, 5, 7], dtype=torch.float64)))
    S = A + P[:, None] * P[None, :] + 0.5 * torch.eye(4, dtype=torch.float64)
    assert torch.allclose(S, -S.T, atol=1e-12), "A + PP^T must be -I/2 + skew"


@pytest.mark.parametrize("N", [8, 64])
def test_s4d_legs_matches_numpy_eigenvalues_of_normal_part(N):
    A, _, P = hippo_legs(N)
    normal = (A + P[:, None] * P[None, :]).numpy()
    ev = np.linalg.eigvals(normal)  # general (non-Hermitian) solver, independent of our eigh route
    expected = np.sort(ev.imag[ev.imag > 0])
    ours = s4d_legs(N).A
    assert torch.allclose(ours.real, torch.full((N // 2,), -0.5, dtype=torch.float64), atol=1e-10)
    assert np.allclose(np.sort(ours.imag.numpy()), expected, rtol=1e-8, atol=1e-8)


def test_s4d_legs_close_to_inv_formula():
    """docs/methods.md §A check 3: Im values distinct, within 35% of the Inv formula at N = 64."""
    legs, inv = s4d_legs(64).A.imag, s4d_inv(64).A.imag
    assert len(torch.unique(legs)) == 32
    rel = ((torch.sort(legs).values - torch.sort(inv).values).abs() / torch.sort(inv).values.abs().clamp(min=1)).max()
    assert rel < 0.35
    assert 1250 < legs.max() < 1350


def test_s4d_legs_B_is_projected_input():
    """B~ = V^* B: the diagonalized system has the same transfer function as (A+PP^T, B) with C = V^T (clipped aside)."""
    N = 6
    A, B, P = hippo_legs(N)
    normal = (A + P[:, None] * P[None, :]).to(torch.complex128)
    init = s4d_legs(N)
    # |B~_n| equals |<v_n, B>| for the eigenvector v_n of the stored eigenvalue (sign convention: Im >= 0)
    for lam, b in zip(init.A, init.B):
        null = torch.linalg.svd(normal - lam * torch.eye(N)).Vh[-1].conj()
        v = null / torch.linalg.norm(null)
        proj = (v.conj() @ B.to(torch.complex128))
        if abs(proj.imag) <= 2:  # unclipped
            assert abs(abs(b) - abs(proj)) < 1e-8


def test_unknown_initializer_lists_known_names():
    load_components()
    with pytest.raises(KeyError) as e:
        INITIALIZERS.get("s4d-lni")
    assert "s4d-lin" in str(e.value) and "s4d-legs" in str(e.value)


def test_odd_state_size_is_rejected():
    with pytest.raises(ValueError, match="even"):
        s4d_lin(7)
