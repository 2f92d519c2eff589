"""S4D: the diagonal state space layer (docs/methods.md §A), with the Sobolev filter of frequency-bias tuning (§B).

Per channel h and mode n:  A = -f(A_re) + i A_im,  dt = g(log_dt) with g = exp or softplus (`dt_transform`),
(A_bar, B_bar) by ZOH or bilinear, K_l = 2 Re sum_n C_n B_bar_n A_bar_n^l,  y = K * u + D u  (causal FFT
convolution, float32), then [dropout ->] GELU -> dropout -> Linear(H, 2H) -> GLU, as in state-spaces/s4 `s4d.py`
(the first dropout with `dropout_before_gelu`, as its `FFTConv`). With `n_ssm` < H, A and B have n_ssm rows and
channel h uses row h mod n_ssm (state-spaces/s4 `n_ssm`); dt, C and D stay per channel.

Two computation paths (`path`), held equal by tests/test_kernels.py:
- "fast" (default): blocked Vandermonde kernel (no (H, M, L) tensor, docs/methods.md §F.2), FFT size `fft_size(L)`
  (2L rounded up to a 7-smooth size), FFTs along the contiguous axis, D u folded into the kernel spectrum.
  On CUDA, float32 layers compute the kernel from the raw parameters (transforms, discretization, overflow guard
  and Vandermonde sum) in fused Triton kernels in real arithmetic instead (models/vandermonde_triton.py, one
  launch forward, two backward; `backend`: auto | triton | torch, models/backend.py).
- "direct": the straightforward path (materialized Vandermonde, FFT of size 2L along dim 1, D u added after).
Mixed precision: the SSM/FFT part always runs in float32 (float64 if the layer is float64) with autocast off;
the position-wise Linear runs in the autocast dtype (bf16/fp16).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmbench.models.backend import TRITON_INSTALLED, TRITON_INTERPRETED, choose
from ssmbench.models.dropout import sequence_dropout
from ssmbench.models.kernels import (MAX_LOG_GROWTH, at_least_float32, bidirectional_kernel,
                                     blocked_vandermonde_kernel, discretize, fft_conv, fft_conv_direct, fft_size,
                                     limit_growth, sobolev_weights, vandermonde_kernel)
from ssmbench.registry import INITIALIZERS

# -Re(A) = f(A_re) and its inverse (state-spaces `param_transform` / `inv_transform`); `none` can reach and cross 0.
REAL_TRANSFORMS = {
    "exp": (torch.exp, lambda x: torch.log(x.clamp(min=1e-4))),
    "relu": (lambda a: torch.relu(a) + 1e-4, lambda x: x.clamp(min=1e-4) - 1e-4),
    "none": (lambda a: a, lambda x: x),
}

# dt = g(log_dt) and its inverse (state-spaces `dt_transform`); `log_dt` holds log dt under exp, softplus^-1(dt) else.
DT_TRANSFORMS = {
    "exp": (torch.exp, torch.log),
    "softplus": (F.softplus, lambda dt: dt + torch.log(-torch.expm1(-dt))),
}
DEFAULT_LR = {"dt": 1e-3, "A": 1e-3, "B": 1e-3, "C": None}
DEFAULT_WEIGHT_DECAY = {"dt": 0.0, "A": 0.0, "B": 0.0, "C": None}




def fused_kernel_available(x: torch.Tensor) -> bool:
    """Whether the fused Triton kernel serves parameters like `x`: float32 on CUDA (or on the CPU under
    TRITON_INTERPRET=1), Triton installed."""
    return (x.is_cuda or TRITON_INTERPRETED) and x.dtype == torch.float32 and TRITON_INSTALLED


def tag_optim(param: nn.Parameter, lr: float | None, weight_decay: float | None = 0.0) -> nn.Parameter:
    """Mark a parameter for its own optimizer group (read by `ssmbench.train.optim`); None = the global value."""
    param._optim = {"lr": lr, "weight_decay": weight_decay}
    return param


class S4D(nn.Module):
    """S4D block: (batch, length, d_model) -> (batch, length, d_model)."""

    def __init__(self, d_model: int, d_state: int = 64, init: str = "s4d-lin", dropout: float = 0.0,
                 bidirectional: bool = False, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 discretization: str = "zoh", real_transform: str = "exp", lr: dict | None = None,
                 beta: float | None = None, beta_lr: float = 0.01, kappa: float | str = "nfft", path: str = "fast",
                 weight_decay: dict | None = None, dt_transform: str = "exp", n_ssm: int | None = None,
                 tie_dropout: bool = False, dropout_before_gelu: bool = False, backend: str = "auto"):
        super().__init__()
        if path not in ("fast", "direct"):
            raise ValueError(f"unknown S4D path {path!r}; known: fast, direct")
        self.path, self.backend = path, backend
        H, c = d_model, 2 if bidirectional else 1
        S = H if n_ssm is None else n_ssm
        if H % S:
            raise ValueError(f"n_ssm = {S} must divide d_model = {H}")
        lr, wd = {**DEFAULT_LR, **(lr or {})}, {**DEFAULT_WEIGHT_DECAY, **(weight_decay or {})}
        diag = INITIALIZERS.get(init)(d_state)
        M = diag.A.shape[0]
        self.d_model, self.n_ssm, self.bidirectional, self.discretization = H, S, bidirectional, discretization
        self.conjugate_pairs, self.real_transform, self.dt_transform = diag.conjugate_pairs, real_transform, dt_transform
        self.kappa = None if kappa == "nfft" else float(kappa)

        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # dt log-uniform
        raw_dt = log_dt if dt_transform == "exp" else DT_TRANSFORMS[dt_transform][1](torch.exp(log_dt))
        self.log_dt = tag_optim(nn.Parameter(raw_dt), lr["dt"], wd["dt"])
        self.A_re = tag_optim(nn.Parameter(torch.empty(S, M)), lr["A"], wd["A"])
        self.A_im = tag_optim(nn.Parameter(torch.empty(S, M)), lr["A"], wd["A"])
        self.B = tag_optim(nn.Parameter(torch.view_as_real(diag.B.to(torch.complex64).repeat(S, 1)).clone()),
                           lr["B"], wd["B"])
        self.C = tag_optim(nn.Parameter(torch.view_as_real(torch.randn(c, H, M, dtype=torch.complex64))), lr["C"], wd["C"])
        self.D = nn.Parameter(torch.randn(H))
        # Rows whose -Re(A) is the raw parameter (transform `none`), so Re(A) can reach and cross 0 (docs/methods.md §D).
        self.register_buffer("linear_real", torch.zeros(S, dtype=torch.bool))
        self.set_A(diag.A.expand(S, M))
        self.beta = None if beta is None else tag_optim(nn.Parameter(torch.full((H,), float(beta))), beta_lr)

        self.activation = nn.GELU()
        self.pre_dropout = sequence_dropout(dropout, tie_dropout) if dropout_before_gelu else nn.Identity()
        self.dropout = sequence_dropout(dropout, tie_dropout)
        self.output_linear = nn.Linear(H, 2 * H)
        self.glu = nn.GLU(dim=-1)

    def per_channel(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of a shared (n_ssm, ...) parameter for every channel, (H, ...): channel h gets row h mod n_ssm."""
        return x if self.n_ssm == self.d_model else x.repeat(self.d_model // self.n_ssm, *([1] * (x.dim() - 1)))

    @property
    def A(self) -> torch.Tensor:
        """The diagonal state matrix, complex (H, M): Re A = -f(A_re), or -A_re on `linear_real` rows."""
        return self.state_matrix(self.A_re.dtype)

    def state_matrix(self, dtype: torch.dtype) -> torch.Tensor:
        """`A` computed in the real `dtype` from the parameters cast to it."""
        A_re, A_im = self.A_re.to(dtype), self.A_im.to(dtype)
        neg_re = REAL_TRANSFORMS[self.real_transform][0](A_re)
        neg_re = torch.where(self.linear_real[:, None], A_re, neg_re)  # no `if .any()`: that syncs on CUDA
        return self.per_channel(torch.complex(-neg_re, A_im))

    @property
    def dt(self) -> torch.Tensor:
        """The step sizes, (H,): dt = exp(log_dt) or softplus(log_dt)."""
        return DT_TRANSFORMS[self.dt_transform][0](self.log_dt)

    @torch.no_grad()
    def set_dt(self, dt: torch.Tensor | float, channels: torch.Tensor | None = None) -> None:
        """Write step sizes (all channels, or `channels`) into `log_dt` through the inverse dt transform."""
        value = DT_TRANSFORMS[self.dt_transform][1](torch.as_tensor(dt, dtype=self.log_dt.dtype, device=self.log_dt.device))
        if channels is None:
            self.log_dt.copy_(value.expand_as(self.log_dt))
        else:
            self.log_dt[channels] = value

    @torch.no_grad()
    def set_A(self, A: torch.Tensor) -> None:
        """Write a complex diagonal into the (transformed) parameters: (n_ssm, M), or (H, M) made of n_ssm repeats."""
        if A.shape[0] != self.n_ssm:
            shared = A[:self.n_ssm]
            if A.shape[0] != self.d_model or not torch.equal(self.per_channel(shared), A):
                raise ValueError(f"A has {A.shape[0]} rows; this layer shares A across channels (n_ssm = "
                                 f"{self.n_ssm}) and takes {self.n_ssm} rows or {self.d_model} that repeat them")
            A = shared
        neg_re = -A.real.to(self.A_re.dtype)
        inverse = REAL_TRANSFORMS[self.real_transform][1](neg_re)
        self.A_re.copy_(torch.where(self.linear_real[:, None], neg_re, inverse))
        self.A_im.copy_(A.imag.to(self.A_im.dtype))

    def discrete(self, L: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(log A_bar (H, M), W = C * B_bar (c, H, M)) for sequences of length L, with the overflow guard.

        The discretization runs in float64 (H M numbers) and log A_bar stays complex128: the kernel's phases
        l Im(log A_bar) reach ~1e5 rad on undamped modes at L = 16384, where the rounding of a float32 dt or
        dt Im(A) alone is ~1e-2 rad (`kernels.powers`). W has the parameters' precision."""
        wide = torch.float64
        B = self.per_channel(torch.view_as_complex(self.B)).to(torch.complex128)
        dt = DT_TRANSFORMS[self.dt_transform][0](self.log_dt.to(wide))
        log_A_bar, B_bar = discretize(self.state_matrix(wide), B, dt, self.discretization)
        C = torch.view_as_complex(self.C)
        return limit_growth(log_A_bar, L), C * B_bar.to(C.dtype)

    def fused(self) -> bool:
        """Whether this layer computes its kernel with the fused Triton kernels: fast path, float32, CUDA or the
        Triton interpreter, and the backend (`auto` after its self-check on this device, or `triton`;
        models/backend.py)."""
        return (self.path == "fast" and self.backend != "torch" and fused_kernel_available(self.C)
                and choose(self.backend, self.C.device).backend == "triton")

    def _fused_kernel(self, L: int, n_fft: int | None = None, D: torch.Tensor | None = None) -> torch.Tensor:
        from ssmbench.models.vandermonde_triton import fused_s4d_kernel

        return fused_s4d_kernel(self.A_re, self.A_im, self.linear_real, self.log_dt, self.B, self.C, L,
                                self.real_transform, self.dt_transform, self.discretization, self.conjugate_pairs,
                                MAX_LOG_GROWTH, n_fft, D)

    def kernel(self, L: int) -> torch.Tensor:
        """The SSM convolution kernel K, real (c, H, L): blocked Vandermonde on the fast path, or there the fused
        Triton kernel from the raw parameters (one launch forward, two backward) where it is available."""
        if self.fused():
            return self._fused_kernel(L)
        log_A_bar, W = self.discrete(L)
        kernel_fn = blocked_vandermonde_kernel if self.path == "fast" else vandermonde_kernel
        return kernel_fn(W, log_A_bar, L, self.conjugate_pairs)

    def kernel_spectrum(self, L: int, n_fft: int) -> torch.Tensor:
        """rfft of the (combined, filtered) kernel at size n_fft >= 2L, complex (H, n_fft//2 + 1).

        The Sobolev weights sit on the k/n_fft grid of this n_fft (docs/methods.md §B). A numeric kappa is given for the
        2L grid of the published code, so it is rescaled by n_fft/(2L): the filter of physical frequency
        f = k/n_fft is (1 + 2L f/kappa)^beta whatever n_fft is.
        """
        if self.fused():
            k = self._fused_kernel(L, n_fft)  # the combined filter of length n_fft, written by the Triton kernel
        else:
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
        irfft((K_f w + D) U_f) = (filtered K) * u + D u, saving a pass over (B, L, H) and its backward. With the
        fused Triton kernel and no Sobolev filter, the kernel writes the filter of length n_fft with D at lag 0,
        and the convolution takes it in the time domain (its rfft inside, the gradient by one irfft).
        """
        L = u.shape[1]
        with torch.autocast(device_type=u.device.type, enabled=False):
            u = at_least_float32(u)
            if self.path == "fast":
                n_fft = fft_size(L)
                if self.fused() and self.beta is None:
                    return fft_conv(u, self._fused_kernel(L, n_fft, self.D), n_fft, time_domain=True)
                return fft_conv(u, self.kernel_spectrum(L, n_fft) + self.D[:, None], n_fft)
            return fft_conv_direct(u, self.kernel_spectrum(L, 2 * L), 2 * L) + u * self.D

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.activation(self.pre_dropout(self.ssm(u))))
        return self.glu(self.output_linear(y))
