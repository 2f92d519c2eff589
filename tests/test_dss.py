"""DSS (docs/methods.md §I.2): the FFT path vs its step-by-step recurrence and the naive softmax, causality,
gradients, and the initialization of ag1988/dss (eigenvalues of the skew-symmetric part of HiPPO-LegS)."""

import pytest
import torch

from ssm_recurrences import diagonal_scan, gradcheck_parameters
from ssmbench.models.dss import DSS
from ssmbench.train.optim import param_groups


def dss(version="softmax", H=3, N=5, **kw):
    torch.manual_seed(0)
    m = DSS(H, d_state=N, version=version, dt_min=0.01, dt_max=0.2, **kw).double()
    m.epsilon = 0.0  # the exact reciprocals (the source's bound 1e-7 is tested on its own)
    return m


def naive_kernel(m, L):
    """K_l = Re sum_n W_n c_n e^{l z_n}, the softmax or exp coefficient c_n from its definition, in float64."""
    z = m.dt_lambda()
    l = torch.arange(L, dtype=torch.float64)
    P = z[..., None] * l  # (H, N, L)
    W, Lambda = torch.view_as_complex(m.W), m.Lambda
    if m.version == "softmax":
        S = torch.exp(P) / torch.exp(P).sum(-1, keepdim=True)  # the softmax over l, literally
        return torch.einsum("chn,hnl->chl", W / Lambda, S).real
    return torch.einsum("chn,hnl->chl", W * (torch.exp(z) - 1) / Lambda, torch.exp(P)).real


def recurrence(m, u):
    """x_t = e^{z} x_{t-1} + u_t per channel and mode, y_t = Re sum_n coeff_n x_t,n + D u_t."""
    L = u.shape[1]
    z = m.dt_lambda()
    W, Lambda = torch.view_as_complex(m.W)[0], m.Lambda
    geometric = (torch.exp(L * z) - 1) / (torch.exp(z) - 1)  # sum_{j<L} e^{j z}
    coeff = W / (Lambda * geometric) if m.version == "softmax" else W * (torch.exp(z) - 1) / Lambda
    H, N = z.shape
    v = u.to(torch.complex128)[..., None].expand(*u.shape, N).reshape(u.shape[0], L, H * N)
    x = diagonal_scan(torch.exp(z).reshape(-1), v).reshape(u.shape[0], L, H, N)
    return (x * coeff).sum(-1).real + u * m.D


@pytest.mark.parametrize("version", ["softmax", "exp"])
def test_convolution_equals_recurrence_float64(version):
    m = dss(version)
    u = torch.randn(2, 33, 3, dtype=torch.float64)
    torch.testing.assert_close(m.ssm(u), recurrence(m, u), rtol=1e-9, atol=1e-10)


def test_softmax_with_growing_modes_equals_the_literal_softmax():
    m = dss("softmax")
    with torch.no_grad():
        m.Lambda_re[:2] = torch.tensor([0.7, 3.0])  # Re Lambda > 0: the shifted (reversed) path
    for L in (1, 17, 64):
        torch.testing.assert_close(m.kernel(L), naive_kernel(m, L), rtol=1e-9, atol=1e-12)
    u = torch.randn(2, 40, 3, dtype=torch.float64)
    torch.testing.assert_close(m.ssm(u), recurrence(m, u), rtol=1e-8, atol=1e-10)


def test_the_bounded_reciprocal_of_the_source():
    m = dss("softmax", H=1, N=2)
    exact = m.kernel(10)
    m.epsilon = 1e-7
    z, W, Lambda = m.dt_lambda(), torch.view_as_complex(m.W), m.Lambda
    den = torch.expm1(10 * z) * Lambda
    coeff = W * torch.expm1(z) * den.conj() / (den.abs() ** 2 + 1e-7)
    ratio = coeff / (W * torch.expm1(z) / den)
    powers = torch.exp(z[..., None] * torch.arange(10, dtype=torch.float64))
    torch.testing.assert_close(m.kernel(10), torch.einsum("chn,hnl->chl", coeff, powers).real)
    assert (ratio.real < 1).all() and not torch.allclose(m.kernel(10), exact, rtol=1e-12, atol=0)


def test_softmax_kernel_stays_finite_for_strongly_growing_modes():
    m = DSS(2, d_state=4)
    with torch.no_grad():
        m.Lambda_re.fill_(50.0)
    assert torch.isfinite(m.kernel(4096)).all()


def test_exp_kernel_equals_its_definition_and_keeps_re_negative():
    m = dss("exp")
    torch.testing.assert_close(m.kernel(50), naive_kernel(m, 50), rtol=1e-9, atol=1e-12)
    with torch.no_grad():
        m.Lambda_re.fill_(-20.0)
    assert (m.Lambda.real < 0).all()


def test_bidirectional_halves_are_causal_and_strictly_anticausal():
    m = dss(bidirectional=True)
    L = 12
    K = m.kernel(L)
    u = torch.zeros(1, L, 3, dtype=torch.float64)
    u[0, 5] = 1.0
    y = m.ssm(u)[0]
    causal = K[0, :, :L - 5].T.clone()
    causal[0] += m.D  # D u at lag 0
    torch.testing.assert_close(y[5:], causal, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(y[:5], K[1, :, :5].flip(-1).T, rtol=1e-9, atol=1e-12)


def test_causal():
    m = dss()
    u = torch.randn(1, 25, 3, dtype=torch.float64)
    w = u.clone()
    w[:, 11] += 1.0
    torch.testing.assert_close(m(u)[:, :11], m(w)[:, :11], rtol=0, atol=1e-12)


@pytest.mark.parametrize("version", ["softmax", "exp"])
def test_gradcheck(version):
    m = dss(version, H=2, N=2)
    with torch.no_grad():
        m.Lambda_re[0] = 0.3 if version == "softmax" else m.Lambda_re[0]
    u = torch.randn(1, 5, 2, dtype=torch.float64, requires_grad=True)
    names = ["log_dt", "Lambda_re", "Lambda_im", "W", "D"]
    assert gradcheck_parameters(m, names, u)


def test_init_is_the_skew_part_of_hippo_legs():
    """ag1988/dss hippo_skew_pos_imag: eigenvalues of (Hippo - Hippo^T)/2, Hippo_nk = sqrt((2n+1)(2k+1)) below the
    diagonal (size 2N), the N with the largest Im, minus 1/2."""
    N = 8
    x = 2 * torch.arange(2 * N, dtype=torch.float64) + 1
    hippo = torch.sqrt(x[:, None] * x[None, :]).tril(-1)
    ev = torch.linalg.eigvals((hippo - hippo.T) / 2)
    ref = ev[ev.imag.argsort(descending=True)][:N] - 0.5
    m = DSS(4, d_state=N).double()
    torch.testing.assert_close(m.Lambda, ref, rtol=1e-6, atol=1e-6)
    e = DSS(4, d_state=N, version="exp").double()
    torch.testing.assert_close(e.Lambda, ref, rtol=1e-6, atol=1e-6)
    assert m.log_dt.shape == (4, 2) and torch.equal(m.log_dt[:, 0], m.log_dt[:, 1])
    assert DSS(4, d_state=N, sep_dt_re_im=False).log_dt.shape == (4,)


def test_optimizer_groups():
    m = DSS(4, d_state=4, lr={"dt": 1e-3, "A": 2e-3, "C": 3e-3}, weight_decay={"C": 0.0})
    groups = {tuple(sorted(g["names"])): (g["lr"], g["weight_decay"]) for g in param_groups(m, 1e-2, 0.1)}
    assert groups[("log_dt",)] == (1e-3, 0.0)
    assert groups[("Lambda_im", "Lambda_re")] == (2e-3, 0.0)
    assert groups[("W",)] == (3e-3, 0.0)
