"""S4D: the diagonal state space layer (SPEC.md §A), with the Sobolev filter of frequency-bias tuning (§B).

Per channel h and mode n:  A = -f(A_re) + i A_im,  dt = exp(log_dt),  (A_bar, B_bar) by ZOH or bilinear,
K_l = 2 Re sum_n C_n B_bar_n A_bar_n^l,  y = K * u + D u  (causal FFT convolution, float32),
then GELU -> dropout -> Linear(H, 2H) -> GLU, as in state-spaces/s4 `s4d.py`.

Two computation paths (`path`), held equal by tests/test_kernels.py:
- "fast" (default): blocked Vandermonde kernel (no (H, M, L) tensor, SPEC.md §F.2), FFT size `fft_size(L)`
  (2L rounded up to a 7-smooth size), FFTs along the contiguous axis, D u folded into the kernel spectrum.
- "direct": the straightforward path (materialized Vandermonde, FFT of size 2L along dim 1, D u added after).
Mixed precision: the SSM/FFT part always runs in float32 (float64 if the layer is float64) with autocast off;
the position-wise Linear runs in the autocast dtype (bf16/fp16).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ssmbench.models.kernels import (at_least_float32, bidirectional_kernel, blocked_vandermonde_kernel, discretize,
                                     fft_conv, fft_conv_direct, fft_size, limit_growth, sobolev_weights,
                                     vandermonde_kernel)
from ssmbench.registry import INITIALIZERS

# -Re(A) = f(A_re) and its inverse (state-spaces `param_transform` / `inv_transform`); `none` can reach and cross 0.
REAL_TRANSFORMS = {
    "exp": (torch.exp, lambda x: torch.log(x.clamp(min=1e-4))),
    "relu": (lambda a: torch.relu(a) + 1e-4, lambda x: x.clamp(min=1e-4) - 1e-4),
    "none": (lambda a: a, lambda x: x),
}


def tag_optim(param: nn.Parameter, lr: float, weight_decay: float = 0.0) -> nn.Parameter:
    """Mark a parameter for its own optimizer group (read by `ssmbench.train.optim`)."""
    param._optim = {"lr": lr, "weight_decay": weight_decay}
    return param


class S4D(nn.Module):
    """S4D block: (batch, length, d_model) -> (batch, length, d_model)."""

    def __init__(self, d_model: int, d_state: int = 64, init: str = "s4d-lin", dropout: float = 0.0,
                 bidirectional: bool = False, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 discretization: str = "zoh", real_transform: str = "exp", lr: float = 1e-3,
                 beta: float | None = None, beta_lr: float = 0.01, kappa: float | str = "nfft", path: str = "fast"):
        super().__init__()
        if path not in ("fast", "direct"):
            raise ValueError(f"unknown S4D path {path!r}; known: fast, direct")
        self.path = path
        H, c = d_model, 2 if bidirectional else 1
        diag = INITIALIZERS.get(init)(d_state)
        M = diag.A.shape[0]
        self.d_model, self.bidirectional, self.discretization = H, bidirectional, discretization
        self.conjugate_pairs, self.real_transform = diag.conjugate_pairs, real_transform
        self.kappa = None if kappa == "nfft" else float(kappa)

        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = tag_optim(nn.Parameter(log_dt), lr)
        self.A_re = tag_optim(nn.Parameter(torch.empty(H, M)), lr)
        self.A_im = tag_optim(nn.Parameter(torch.empty(H, M)), lr)
        self.B = tag_optim(nn.Parameter(torch.view_as_real(diag.B.to(torch.complex64).repeat(H, 1)).clone()), lr)
        self.C = nn.Parameter(torch.view_as_real(torch.randn(c, H, M, dtype=torch.complex64)))
        self.D = nn.Parameter(torch.randn(H))
        # Channels whose -Re(A) is the raw parameter (transform `none`), so Re(A) can reach and cross 0 (SPEC.md §D).
        self.register_buffer("linear_real", torch.zeros(H, dtype=torch.bool))
        self.set_A(diag.A.expand(H, M))
        self.beta = None if beta is None else tag_optim(nn.Parameter(torch.full((H,), float(beta))), beta_lr)

        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.output_linear = nn.Linear(H, 2 * H)
        self.glu = nn.GLU(dim=-1)

    @property
    def A(self) -> torch.Tensor:
        """The diagonal state matrix, complex (H, M): Re A = -f(A_re), or -A_re on `linear_real` channels."""
        neg_re = REAL_TRANSFORMS[self.real_transform][0](self.A_re)
        if self.linear_real.any():
            neg_re = torch.where(self.linear_real[:, None], self.A_re, neg_re)
        return torch.complex(-neg_re, self.A_im)

    @torch.no_grad()
    def set_A(self, A: torch.Tensor) -> None:
        """Write a complex (H, M) diagonal into the (transformed) parameters."""
        neg_re = -A.real.to(self.A_re.dtype)
        inverse = REAL_TRANSFORMS[self.real_transform][1](neg_re)
        self.A_re.copy_(torch.where(self.linear_real[:, None], neg_re, inverse))
        self.A_im.copy_(A.imag.to(self.A_im.dtype))

    def discrete(self, L: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(log A_bar (H, M), W = C * B_bar (c, H, M)) for sequences of length L, with the overflow guard."""
        dt = torch.exp(self.log_dt)
        log_A_bar, B_bar = discretize(self.A, torch.view_as_complex(self.B), dt, self.discretization)
        return limit_growth(log_A_bar, L), torch.view_as_complex(self.C) * B_bar

    def kernel(self, L: int) -> torch.Tensor:
        """The SSM convolution kernel K, real (c, H, L) (blocked Vandermonde on the fast path)."""
        log_A_bar, W = self.discrete(L)
        kernel_fn = blocked_vandermonde_kernel if self.path == "fast" else vandermonde_kernel
        return kernel_fn(W, log_A_bar, L, self.conjugate_pairs)

    def kernel_spectrum(self, L: int, n_fft: int) -> torch.Tensor:
        """rfft of the (combined, filtered) kernel at size n_fft >= 2L, complex (H, n_fft//2 + 1).

        The Sobolev weights sit on the k/n_fft grid of this n_fft (SPEC.md §B). A numeric kappa is given for the
        2L grid of the published code, so it is rescaled by n_fft/(2L): the filter of physical frequency
        f = k/n_fft is (1 + 2L f/kappa)^beta whatever n_fft is.
        """
        k = at_least_float32(self.kernel(L))
        k = bidirectional_kernel(k, L, n_fft) if self.bidirectional else k[0]
        k_f = torch.fft.rfft(k, n=n_fft)
        if self.beta is not None:
            kappa = None if self.kappa is None else self.kappa * n_fft / (2 * L)
            k_f = k_f * sobolev_weights(self.beta, n_fft, kappa).to(k.dtype)
        return k_f

    def ssm(self, u: torch.Tensor) -> torch.Tensor:
        """y = K * u + D u, in float32 (or float64) whatever the autocast state (half-precision FFTs are unsafe).

        Fast path: the rfft of D at lag 0 is D at every bin, so D u rides along in the spectrum,
        irfft((K_f w + D) U_f) = (filtered K) * u + D u, saving a pass over (B, L, H) and its backward.
        """
        L = u.shape[1]
        with torch.autocast(device_type=u.device.type, enabled=False):
            u = at_least_float32(u)
            if self.path == "fast":
                n_fft = fft_size(L)
                return fft_conv(u, self.kernel_spectrum(L, n_fft) + self.D[:, None], n_fft)
            return fft_conv_direct(u, self.kernel_spectrum(L, 2 * L), 2 * L) + u * self.D

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.activation(self.ssm(u)))
        return self.glu(self.output_linear(y))
