"""S4D layer: convolution vs an explicit recurrence, FFT vs direct convolution, causality, bidirectional halves."""

import math

import pytest
import torch

from ssmbench.models.kernels import discretize, vandermonde_kernel
from ssmbench.models.s4d import S4D


def random_layer(H=4, N=16, init="s4d-lin", seed=0, **kw) -> S4D:
    torch.manual_seed(seed)
    layer = S4D(H, d_state=N, init=init, **kw)
    with torch.no_grad():  # move away from the init so the test covers generic parameters
        layer.log_dt.copy_(torch.empty(H).uniform_(math.log(1e-2), math.log(0.5)))
        layer.A_im.add_(torch.randn_like(layer.A_im))
        layer.A_re.add_(0.3 * torch.randn_like(layer.A_re))
        layer.B.copy_(torch.randn_like(layer.B))
    return layer


def recurrence(layer: S4D, u: torch.Tensor, method: str) -> torch.Tensor:
    """x_k = A_bar x_{k-1} + B_bar u_k, y_k = s * Re(C x_k) + D u_k in complex128, step by step (docs/methods.md §A)."""
    with torch.no_grad():
        A = layer.A.to(torch.complex128)
        B = torch.view_as_complex(layer.B.double())
        C = torch.view_as_complex(layer.C.double())[0]
        dt = torch.exp(layer.log_dt.double())[:, None]
        if method == "zoh":
            A_bar = torch.exp(dt * A)
            B_bar = (A_bar - 1) / A * B
        else:
            A_bar = (1 + dt * A / 2) / (1 - dt * A / 2)
            B_bar = dt * B / (1 - dt * A / 2)
        s = 2.0 if layer.conjugate_pairs else 1.0
        Bsz, L, H = u.shape
        x = torch.zeros(Bsz, H, A.shape[1], dtype=torch.complex128)
        ys = []
        for k in range(L):
            x = A_bar * x + B_bar * u[:, k, :, None].double()
            ys.append(s * (C * x).sum(-1).real + layer.D.double() * u[:, k].double())
        return torch.stack(ys, dim=1)


@pytest.mark.parametrize("init", ["s4d-lin", "s4d-inv", "s4d-legs", "s4d-real"])
@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_convolution_equals_recurrence(init, method):
    layer = random_layer(init=init, discretization=method)
    u = torch.randn(2, 64, 4)
    y_conv = layer.ssm(u).double()
    y_rec = recurrence(layer, u, method)
    rel = (y_conv - y_rec).abs().max() / y_rec.abs().max()
    assert rel < 1e-5, f"relative error {rel:.2e}"


def test_vandermonde_kernel_equals_powers_float64():
    torch.manual_seed(1)
    H, M, L = 3, 5, 50
    A = torch.complex(-torch.rand(H, M, dtype=torch.float64), 3 * torch.randn(H, M, dtype=torch.float64))
    B = torch.randn(H, M, dtype=torch.complex128)
    C = torch.randn(1, H, M, dtype=torch.complex128)
    dt = torch.rand(H, dtype=torch.float64) * 0.1
    log_A_bar, B_bar = discretize(A, B, dt, "zoh")
    K = vandermonde_kernel(C * B_bar, log_A_bar, L)
    A_bar = torch.exp(dt[:, None] * A)
    K_ref = torch.stack([2 * (C[0] * B_bar * A_bar**l).sum(-1).real for l in range(L)], dim=-1)
    assert torch.allclose(K[0], K_ref, rtol=1e-12, atol=1e-12)


def test_fft_convolution_equals_direct_convolution():
    layer = random_layer()
    L = 40
    u = torch.randn(2, L, 4)
    with torch.no_grad():
        K = layer.kernel(L)[0].double()  # (H, L)
        y_direct = torch.zeros(2, L, 4, dtype=torch.float64)
        for t in range(L):
            for j in range(t + 1):
                y_direct[:, t] += K[:, j] * u[:, t - j].double()
        y_direct += layer.D.double() * u.double()
        y_fft = layer.ssm(u).double()
    assert (y_fft - y_direct).abs().max() / y_direct.abs().max() < 1e-5


def test_layer_is_causal():
    layer = random_layer().eval()
    u = torch.randn(1, 50, 4)
    v = u.clone()
    v[:, 30:] += torch.randn(1, 20, 4)
    with torch.no_grad():
        a, b = layer(u), layer(v)
    past = (a[:, :30] - b[:, :30]).abs().max()  # FFT round-off only
    future = (a[:, 30:] - b[:, 30:]).abs().max()
    assert past < 1e-5 * a.abs().max()
    assert future > 1e3 * past


def test_bidirectional_halves_are_causal_and_anticausal():
    """Forward kernel: lags 0..L-1 of the past; backward kernel: strictly future inputs (lag -1, -2, ...)."""
    layer = random_layer(bidirectional=True).eval()
    L = 32
    u = torch.zeros(1, L, 4)
    t0 = 10
    u[0, t0] = 1.0
    with torch.no_grad():
        y = layer.ssm(u)[0].double()  # impulse response (L, H)
        K = layer.kernel(L).double()  # (2, H, L)
        D = layer.D.double()
    expected = torch.zeros(L, 4, dtype=torch.float64)
    for t in range(L):
        if t >= t0:
            expected[t] += K[0, :, t - t0]
        else:
            expected[t] += K[1, :, t0 - t - 1]
    expected[t0] += D
    assert (y - expected).abs().max() < 1e-5 * expected.abs().max()


def test_block_shape_and_gradients():
    layer = random_layer(H=6, N=8, dropout=0.1)
    u = torch.randn(3, 20, 6, requires_grad=True)
    y = layer(u)
    assert y.shape == u.shape
    y.square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
