"""S5 (docs/methods.md §I.3): the FFT path vs the step-by-step recurrence, causality, gradients, and the init of
lindermanlab/S5 (block-diagonal HiPPO-N eigendecomposition, B~ = V^-1 B, C~ = C V)."""

import numpy as np
import pytest
import torch

from ssm_recurrences import gradcheck_parameters, mimo_recurrence
from ssmbench.errors import RecipeError
from ssmbench.models.s5 import S5
from ssmbench.recipe import validate_recipe
from ssmbench.train.optim import param_groups


def s5(H=4, P=8, J=2, **kw):
    torch.manual_seed(0)
    return S5(H, d_state=P, blocks=J, **kw).double()


def recurrence(m, u):
    dt = torch.exp(m.log_dt)
    Lambda = m.Lambda
    if m.discretization == "zoh":  # written out here, not through kernels.discretize
        lam = torch.exp(dt * Lambda)
        B_bar = ((lam - 1) / Lambda)[:, None] * torch.view_as_complex(m.B)
    else:
        lam = (1 + dt * Lambda / 2) / (1 - dt * Lambda / 2)
        B_bar = (dt / (1 - dt * Lambda / 2))[:, None] * torch.view_as_complex(m.B)
    return mimo_recurrence(u, B_bar, lam, torch.view_as_complex(m.C), m.D, 2.0 if m.conj_sym else 1.0)


@pytest.mark.parametrize("kw", [{}, {"bidirectional": True}, {"conj_sym": False, "discretization": "bilinear"},
                                {"C_init": "complex_normal", "clip_eigs": True}])
def test_convolution_equals_recurrence_float64(kw):
    m = s5(**kw)
    u = torch.randn(2, 29, 4, dtype=torch.float64)
    torch.testing.assert_close(m.ssm(u), recurrence(m, u), rtol=1e-10, atol=1e-10)


def test_causal_and_bidirectional_sees_the_future():
    u = torch.randn(1, 24, 4, dtype=torch.float64)
    w = u.clone()
    w[:, 13] += 1.0
    m = s5()
    torch.testing.assert_close(m(u)[:, :13], m(w)[:, :13], rtol=0, atol=1e-12)
    b = s5(bidirectional=True)
    assert (b(u)[:, :13] - b(w)[:, :13]).abs().max() > 1e-4


def test_gradcheck():
    m = s5(H=2, P=4, J=1, bidirectional=True)
    u = torch.randn(1, 5, 2, dtype=torch.float64, requires_grad=True)
    names = ["Lambda_re", "Lambda_im", "B", "C", "D", "log_dt"]
    assert gradcheck_parameters(m, names, u)


def test_clip_eigs_keeps_the_left_half_plane():
    m = s5(clip_eigs=True)
    with torch.no_grad():
        m.Lambda_re.fill_(0.5)
    assert (m.Lambda.real <= -1e-4).all()


@pytest.mark.parametrize("conj_sym", [True, False])
def test_init_is_the_block_diagonal_hippo_eigendecomposition(conj_sym):
    """Each block: the eigenvalues of S = A + P P^T of HiPPO-LegS (size P/J), computed here by numpy; B~ = V^* B
    with B real, so B = 2 Re(V B~) (conjugate symmetry) or V B~; C~ = C V."""
    H, P, J = 48, 16, 4
    m = s5(H, P, J, conj_sym=conj_sym)
    n = P // J
    q = np.sqrt(2 * np.arange(n) + 1.0)
    A = -(np.tril(np.outer(q, q)) - np.diag(np.arange(n)))
    S = A + np.outer(np.sqrt(np.arange(n) + 0.5), np.sqrt(np.arange(n) + 0.5))
    ev = np.linalg.eigvals(S)
    ref = np.sort((ev[ev.imag <= 0] if conj_sym else ev).imag)
    assert np.allclose(ev.real, -0.5)
    Lambda = m.Lambda.detach().numpy().reshape(J, -1)
    for block in Lambda:
        np.testing.assert_allclose(np.sort(block.imag), ref, atol=1e-5)
    assert np.allclose(Lambda.real, -0.5)
    # B~ in the range of V^*: recover the real B and map it back
    from ssmbench.models.s5 import block_hippo
    _, V = block_hippo(P, J, conj_sym)
    B_t = torch.view_as_complex(m.B.detach())
    B = 2 * (V @ B_t).real if conj_sym else (V @ B_t).real
    torch.testing.assert_close(V.conj().T @ B.to(torch.complex128), B_t)
    if not conj_sym:
        assert (V @ B_t).imag.abs().max() < 1e-6
    assert abs(B.var() * P - 1) < 0.2  # lecun-normal: variance 1/P
    C_t = torch.view_as_complex(m.C.detach())[0]  # C~ = C V, V with orthonormal columns: each part of C~ keeps
    assert abs(torch.view_as_real(C_t).var() * P - 1) < 0.2  # trunc_standard_normal's variance 1/P
    assert m.log_dt.shape == (P // 2 if conj_sym else P,)


def test_optimizer_groups_express_the_opt_configs():
    """S5's BandCdecay: Lambda and dt at the SSM lr without decay, B at the SSM lr with decay, C global."""
    m = S5(4, d_state=8, blocks=2, lr={"dt": 1e-3, "A": 1e-3, "B": 1e-3, "C": None},
           weight_decay={"dt": 0.0, "A": 0.0, "B": None, "C": None})
    groups = {tuple(sorted(g["names"])): (g["lr"], g["weight_decay"]) for g in param_groups(m, 4e-3, 0.05)}
    assert groups[("Lambda_im", "Lambda_re", "log_dt")] == (1e-3, 0.0)
    assert groups[("B",)] == (1e-3, 0.05)


def test_recipe_refuses_blocks_that_do_not_divide_the_state():
    raw = {"name": "t", "data": {"name": "synthetic-lds", "seq_len": 16, "n_train": 8, "n_test": 4},
           "model": {"kind": "s5", "d_model": 8, "n_layers": 1, "pool": "none", "ssm": {"d_state": 24},
                     "s5": {"blocks": 8}}}
    with pytest.raises(RecipeError, match="s5.blocks: 8 blocks .* blocks of even size"):
        validate_recipe(raw)
    raw["model"]["s5"]["blocks"] = 3
    assert validate_recipe(raw).model.s5.blocks == 3
