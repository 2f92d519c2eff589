"""`kernels.fft_conv` with the kernel given as its real filter of length n (`time_domain=True`, the fused Triton
path's input) against the brute-force circular convolution: output and the gradients of input and filter."""

import pytest
import torch

from ssmbench.models.kernels import fft_conv, fft_size


@pytest.mark.parametrize("L", [7, 16, 149])  # n = 14, 32, and 300 > 2L (7-smooth rounding)
def test_time_domain_filter_matches_brute_force_convolution(L):
    g = torch.Generator().manual_seed(L)
    n = fft_size(L)
    u = torch.randn(3, L, 4, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(4, n, generator=g, dtype=torch.float64, requires_grad=True)  # causal and anti-causal lags
    cot = torch.randn(3, L, 4, generator=g, dtype=torch.float64)
    t = torch.arange(L)
    # y_{b,t,h} = sum_s k_{h, (t - s) mod n} u_{b,s,h}: a gather of the filter at every (t, s), no FFT
    taps = k[:, (t[:, None] - t[None, :]) % n]  # (H, L, L)
    brute = torch.einsum("hts,bsh->bth", taps, u)
    grads_brute = torch.autograd.grad((brute * cot).sum(), (u, k))
    y = fft_conv(u, k, n, time_domain=True)
    grads = torch.autograd.grad((y * cot).sum(), (u, k))
    torch.testing.assert_close(y, brute, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads, grads_brute):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
