"""S4 with a DPLR state matrix (docs/methods.md §I.5): the Cauchy + Woodbury kernel at init equals the kernel of the
dense HiPPO-LegS matrix discretized the same way (bilinear) by brute-force powers; the layer equals the recurrence
of its own dense system; causality, gradients, chunks, length changes."""

import pytest
import torch

from ssm_recurrences import gradcheck_parameters
from ssmbench.models.hippo import hippo_legs, legs_normal_eig
from ssmbench.models.s4 import S4, legs_nplr
from ssmbench.train.optim import param_groups


def s4_float64(H=3, N=8, **kw):
    """An S4 layer in float64 whose NPLR parameters are set in float64 (not rounded through float32)."""
    torch.manual_seed(0)
    m = S4(H, d_state=N, dt_min=0.05, dt_max=0.3, **kw).double()
    Lambda, P, B = legs_nplr(N, m.P.shape[0])
    S = m.A_re.shape[0]
    with torch.no_grad():
        m.A_re.copy_(torch.log(-Lambda.real).expand(S, -1))
        m.A_im.copy_(Lambda.imag.expand(S, -1))
        m.P.copy_(torch.view_as_real(P[:, None].expand(-1, S, -1)))
        m.B.copy_(torch.view_as_real(B.expand(S, -1)))
    return m


def dense_kernel(A, B, C, dt, L):
    """K_l = C A_bar^l B_bar with the bilinear (A_bar, B_bar) of dense real matrices, by repeated products."""
    I = torch.eye(A.shape[0], dtype=A.dtype)
    A_bar = torch.linalg.solve(I - dt / 2 * A, I + dt / 2 * A)
    x = torch.linalg.solve(I - dt / 2 * A, dt * B)
    out = []
    for _ in range(L):
        out.append(C @ x)
        x = A_bar @ x
    return torch.stack(out)


@pytest.mark.parametrize("chunk", [512, 5])
def test_kernel_at_init_equals_the_dense_hippo_legs_kernel(chunk):
    N, H, L = 8, 3, 40
    m = s4_float64(H, N, chunk=chunk)
    _, V = legs_normal_eig(N)
    C_real = torch.randn(H, N, dtype=torch.float64)  # a real output row in the original (HiPPO) basis
    with torch.no_grad():
        m.C.copy_(torch.view_as_real((C_real.to(torch.complex128) @ V[:, :N // 2])[None]))
    K = m.kernel(L)
    A, B, _ = hippo_legs(N)
    dt = m.params()[0]
    for h in range(H):
        torch.testing.assert_close(K[0, h], dense_kernel(A, B, C_real[h], dt[h], L), rtol=1e-9, atol=1e-11)


def full_system(m):
    """The full N-state system of the layer in its eigenbasis: (A (H, N, N), B (H, N), C (c, H, N)) complex,
    with C recovered from the trained C~ = C (I - A_bar^L)."""
    dt, Lambda, P, B, C_t = m.params()
    P_full = torch.cat([P, P.conj()], -1)
    A = torch.diag_embed(torch.cat([Lambda, Lambda.conj()], -1)) - torch.einsum("rhn,rhm->hnm", P_full, P_full.conj())
    I = torch.eye(A.shape[-1], dtype=A.dtype)
    A_bar = torch.linalg.solve(I - dt[:, None, None] / 2 * A, I + dt[:, None, None] / 2 * A)
    B_bar = torch.linalg.solve(I - dt[:, None, None] / 2 * A, (dt[:, None] * torch.cat([B, B.conj()], -1))[..., None])[..., 0]
    C_full_t = torch.cat([C_t, C_t.conj()], -1)
    C = torch.linalg.solve((I - torch.linalg.matrix_power(A_bar, int(m.l_kernel))).transpose(-1, -2),
                           C_full_t[..., None])[..., 0]  # C~ = C (I - A_bar^L)
    return A_bar, B_bar, C


@pytest.mark.parametrize("kw", [{}, {"rank": 2}, {"bidirectional": True}, {"n_ssm": 1}])
def test_layer_equals_the_recurrence_of_its_dense_system(kw):
    m = s4_float64(**kw)
    L = 30
    m.kernel(L)  # attune C~ to L
    torch.manual_seed(3)
    with torch.no_grad():  # move every parameter away from the init
        for p in (m.A_re, m.A_im, m.P, m.B, m.C):
            p.add_(0.1 * torch.randn_like(p))
    A_bar, B_bar, C = full_system(m)
    u = torch.randn(2, L, 3, dtype=torch.float64)
    x = torch.zeros(2, 3, A_bar.shape[-1], dtype=torch.complex128)
    ys = []
    for t in range(L):
        x = torch.einsum("hnm,bhm->bhn", A_bar, x) + B_bar * u[:, t, :, None]
        ys.append(torch.einsum("hn,bhn->bh", C[0], x).real)
    y = torch.stack(ys, 1) + u * m.D
    if m.bidirectional:
        x = torch.zeros_like(x)
        back = [None] * L
        for t in range(L - 1, -1, -1):  # strictly anti-causal: the state before u_t enters
            back[t] = torch.einsum("hn,bhn->bh", C[1], x).real
            x = torch.einsum("hnm,bhm->bhn", A_bar, x) + B_bar * u[:, t, :, None]
        y = y + torch.stack(back, 1)
    torch.testing.assert_close(m.ssm(u), y, rtol=1e-8, atol=1e-9)


def test_longer_input_doubles_the_attuned_length_and_keeps_the_kernel():
    m = s4_float64()
    K20 = m.kernel(20).clone()
    assert int(m.l_kernel) == 20
    K50 = m.kernel(50)
    assert int(m.l_kernel) == 80
    torch.testing.assert_close(K50[..., :20], K20, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(m.kernel(10), K20[..., :10], rtol=1e-9, atol=1e-11)


def test_causal():
    m = s4_float64()
    u = torch.randn(1, 25, 3, dtype=torch.float64)
    w = u.clone()
    w[:, 11] += 1.0
    torch.testing.assert_close(m(u)[:, :11], m(w)[:, :11], rtol=0, atol=1e-12)


def test_gradcheck():
    m = s4_float64(H=2, N=4, chunk=2)
    m.kernel(6)
    u = torch.randn(1, 6, 2, dtype=torch.float64, requires_grad=True)
    names = ["log_dt", "A_re", "A_im", "P", "B", "C", "D"]
    assert gradcheck_parameters(m, names, u)


def test_optimizer_groups():
    m = S4(4, d_state=4, lr={"dt": None, "A": 1e-3, "B": 1e-3}, weight_decay={"dt": 0.0, "A": 0.0, "B": 0.0})
    groups = {tuple(sorted(g["names"])): (g["lr"], g["weight_decay"]) for g in param_groups(m, 1e-2, 0.05)}
    assert groups[("A_im", "A_re", "B", "P")] == (1e-3, 0.0)
    assert groups[("log_dt",)] == (1e-2, 0.0)
