"""SSM convolution kernels and the FFT convolution (SPEC.md §A "Discretization", "Kernel and output"; §B).

All functions here are pure tensor math so tests can hold each against an independent computation.
"""

from __future__ import annotations

import torch


def phi1(z: torch.Tensor) -> torch.Tensor:
    """phi_1(z) = (exp(z) - 1) / z, with phi_1(0) = 1 (SPEC.md §D "Pitfalls").

    Below |z| < 1e-4 the series 1 + z/2 + z^2/6 is used, behind a `where` whose other branch never sees 0,
    so values and gradients stay finite when Re(A) = Im(A) = 0.
    """
    small = z.abs() < 1e-4
    z_safe = torch.where(small, torch.ones_like(z), z)
    return torch.where(small, 1 + z / 2 + z * z / 6, torch.expm1(z_safe) / z_safe)


def discretize(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise discretization of a diagonal SSM: returns (log A_bar, B_bar), both (H, M).

    ZOH:      A_bar = exp(dt A),                 B_bar = (exp(dt A) - 1)/A * B = dt * phi1(dt A) * B
    bilinear: A_bar = (1 + dt A/2)/(1 - dt A/2), B_bar = dt B / (1 - dt A/2)
    """
    dtA = dt[:, None] * A
    if method == "zoh":
        return dtA, dt[:, None] * phi1(dtA) * B
    if method == "bilinear":
        denom = 1 - dtA / 2
        return torch.log((1 + dtA / 2) / denom), dt[:, None] * B / denom
    raise ValueError(f"unknown discretization {method!r}; known: zoh, bilinear")


def vandermonde_kernel(W: torch.Tensor, log_A_bar: torch.Tensor, L: int, conjugate_pairs: bool = True) -> torch.Tensor:
    """K_{c,h,l} = s * Re sum_n W_{c,h,n} exp(l * log A_bar_{h,n}),  l = 0..L-1,  s = 2 for conjugate pairs else 1.

    W = C * B_bar (c, H, M). Materializes the (H, M, L) Vandermonde matrix: the straightforward path.
    """
    l = torch.arange(L, device=log_A_bar.device, dtype=log_A_bar.real.dtype)
    V = torch.exp(log_A_bar.unsqueeze(-1) * l)  # (H, M, L)
    K = torch.einsum("chm,hml->chl", W, V).real
    return 2 * K if conjugate_pairs else K


def bidirectional_kernel(k: torch.Tensor, L: int) -> torch.Tensor:
    """Combine a forward kernel k[0] (causal, lags 0..L-1) and a backward kernel k[1] into one length-2L kernel.

    Circular convolution of length 2L with this kernel gives y_t = sum_{j>=0} k0_j u_{t-j} + sum_{j>=1} k1_{j-1} u_{t+j}
    (the backward half is strictly anti-causal, as in state-spaces/s4).
    """
    return torch.nn.functional.pad(k[0], (0, L)) + torch.nn.functional.pad(k[1].flip(-1), (L, 0))


def sobolev_weights(beta: torch.Tensor, n_fft: int, kappa: float | None = None) -> torch.Tensor:
    """w_{h,k} = (1 + k/kappa)^beta_h for the rfft bins k = 0..n_fft/2; kappa defaults to n_fft (SPEC.md §B)."""
    kappa = float(n_fft) if kappa is None else float(kappa)
    k = torch.arange(n_fft // 2 + 1, device=beta.device, dtype=torch.float32)
    return torch.exp(beta.float()[:, None] * torch.log1p(k / kappa))


def fft_conv(u: torch.Tensor, k_f: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Causal convolution by FFT: y = irfft(rfft(u, n) * K_f, n)[:L] along the length axis, in float32.

    u: (B, L, H); k_f: (H, n_fft//2 + 1), the rfft of the kernel at the same size. n_fft >= 2L avoids wrap-around.
    """
    L = u.shape[1]
    u_f = torch.fft.rfft(u.float(), n=n_fft, dim=1)  # (B, n/2+1, H)
    return torch.fft.irfft(u_f * k_f.transpose(0, 1), n=n_fft, dim=1)[:, :L]
