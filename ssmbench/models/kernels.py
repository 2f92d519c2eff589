"""SSM convolution kernels and the FFT convolution (docs/methods.md §A "Discretization", "Kernel and output"; §B; §F).

Two paths live side by side and the tests hold them equal (tests/test_kernels.py):

- straightforward: `vandermonde_kernel` materializes exp(l * log A_bar) for every (h, n, l), and
  `fft_conv_direct` is the plain `irfft(rfft(u, 2L) * rfft(K, 2L))` along the length axis;
- fast: `blocked_vandermonde_kernel` factors A_bar^(jT + t) = A_bar^(jT) * A_bar^t, so the kernel is one batched
  real matrix product of two O(H M sqrt(L)) factors (docs/methods.md §F.2 with the chunks stacked into a GEMM), and
  `fft_conv` runs real FFTs of a size that suits the FFT library (`fft_size`) along the contiguous axis.

All functions here are pure tensor math so tests can hold each against an independent computation.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """x in float32, unless it is already float64 (tests run in double precision)."""
    return x if x.dtype == torch.float64 else x.float()


def phi1(z: torch.Tensor) -> torch.Tensor:
    """phi_1(z) = (exp(z) - 1) / z, with phi_1(0) = 1 (docs/methods.md §D "Pitfalls").

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


MAX_LOG_GROWTH = 10.0  # the overflow guard's bound on Re(log A_bar) L


def limit_growth(log_A_bar: torch.Tensor, L: int, max_log_growth: float = MAX_LOG_GROWTH) -> torch.Tensor:
    """Overflow guard for unstable modes (docs/methods.md §D "Pitfalls": Re(A) > 0 grows like e^{dt Re(A) L}).

    Clamps Re(log A_bar) from above at max_log_growth / L, so |A_bar^l| <= e^{max_log_growth} (2.2e4 by default)
    for every lag l < L and the kernel, the FFT and the gradients stay finite in float32. Stable modes
    (Re <= 0) and mildly unstable ones are untouched. The clamp is straight-through: the value is clamped, the
    gradient is that of the identity, so the optimizer can still pull a clamped mode back into the stable region
    (a plain clamp would give it zero gradient and freeze it there).
    """
    re = log_A_bar.real
    return torch.complex(re.clamp(max=max_log_growth / L).detach() + (re - re.detach()), log_A_bar.imag)


def powers(log_A_bar: torch.Tensor, lags: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A_bar^l = exp(l Re log A_bar) e^{i theta_l} for each lag l of `lags`, (..., len(lags)), complex in the real
    `dtype`, with the phase theta_l = l Im(log A_bar) reduced to [-pi, pi) in the precision of log_A_bar.

    An undamped mode (Re A = 0) keeps |A_bar^l| = 1 while its phase grows to dt Im(A) L ~ 1e5 rad at L = 16384; a
    float32 phase (or rate dt Im(A)) carries a rounding error of ~1e-2 rad there. With log_A_bar in float64
    (`S4D.discrete`) the phase is exact to ~1e-11 rad before its cast; the magnitude is computed in `dtype`.
    """
    lags = lags.to(log_A_bar.real.dtype)
    z = log_A_bar.unsqueeze(-1)
    phase = torch.remainder(z.imag * lags + math.pi, 2 * math.pi) - math.pi  # d phase / d Im(log A_bar) = l
    return torch.exp(torch.complex(z.real.to(dtype) * lags.to(dtype), phase.to(dtype)))


def vandermonde_kernel(W: torch.Tensor, log_A_bar: torch.Tensor, L: int, conjugate_pairs: bool = True) -> torch.Tensor:
    """K_{c,h,l} = s * Re sum_n W_{c,h,n} exp(l * log A_bar_{h,n}),  l = 0..L-1,  s = 2 for conjugate pairs else 1.

    W = C * B_bar (c, H, M). Materializes the (H, M, L) Vandermonde matrix: the straightforward path. The powers
    are computed by `powers` in W's precision, their phases reduced in that of log_A_bar.
    """
    V = powers(log_A_bar, torch.arange(L, device=log_A_bar.device), W.real.dtype)  # (H, M, L)
    K = torch.einsum("chm,hml->chl", W, V).real
    return 2 * K if conjugate_pairs else K


def blocked_vandermonde_kernel(W: torch.Tensor, log_A_bar: torch.Tensor, L: int, conjugate_pairs: bool = True,
                               block: int | None = None) -> torch.Tensor:
    """The kernel of `vandermonde_kernel` without the (H, M, L) tensor (docs/methods.md §F.2).

    Write l = jT + t with t < T (block length, default ceil(sqrt(L))) and j < J = ceil(L/T). Then
        K_{c,h,jT+t} = s * Re sum_n (W_{c,h,n} A_bar_{h,n}^{jT}) A_bar_{h,n}^t = s * [G_re V_re - G_im V_im]_{c,h,j,t}
    with the giant steps G = W A_bar^{jT} (c, H, J, M) and the baby steps V = A_bar^t (H, M, T), each power
    evaluated as exp(k log A_bar) (never repeated products). The sum over n is one batched real GEMM of
    (J, 2M) x (2M, T) per (c, h). Cost: H M (J + T) ~ 2 H M sqrt(L) complex exps and 2 c H M L real
    multiply-adds; memory and saved-for-backward tensors are O(c H M sqrt(L)). Both factors come from `powers` (phases
    reduced in log_A_bar's precision, values in W's).
    """
    T = block or max(1, math.isqrt(L - 1) + 1)
    J = -(-L // T)
    t = torch.arange(T, device=log_A_bar.device)
    V = powers(log_A_bar, t, W.real.dtype)  # (H, M, T)
    jT = torch.arange(J, device=log_A_bar.device) * T
    G = (2 * W if conjugate_pairs else W).unsqueeze(-2) * powers(log_A_bar, jT, W.real.dtype).transpose(-1, -2)
    lhs = torch.cat([G.real, -G.imag], dim=-1)  # G: (c, H, J, M); lhs (c, H, J, 2M)
    rhs = torch.cat([V.real, V.imag], dim=-2)  # (H, 2M, T)
    K = torch.matmul(lhs, rhs)  # (c, H, J, T)
    return K.flatten(-2)[..., :L]


def bidirectional_kernel(k: torch.Tensor, L: int, n_fft: int | None = None) -> torch.Tensor:
    """Combine a forward kernel k[0] (causal, lags 0..L-1) and a backward kernel k[1] into one length-n_fft kernel.

    Circular convolution of length n_fft >= 2L (default 2L) with this kernel gives
    y_t = sum_{j>=0} k0_j u_{t-j} + sum_{j>=1} k1_{j-1} u_{t+j}: the backward half is strictly anti-causal, as in
    state-spaces/s4, and lag -j sits at index n_fft - j.
    """
    n_fft = 2 * L if n_fft is None else n_fft
    return F.pad(k[0], (0, n_fft - L)) + F.pad(k[1].flip(-1), (n_fft - L, 0))


def sobolev_weights(beta: torch.Tensor, n_fft: int, kappa: float | None = None) -> torch.Tensor:
    """w_{h,k} = (1 + k/kappa)^beta_h for the rfft bins k = 0..n_fft/2; kappa defaults to n_fft (docs/methods.md §B).

    Float32 (float64 if beta is float64).
    """
    kappa = float(n_fft) if kappa is None else float(kappa)
    beta = at_least_float32(beta)
    k = torch.arange(n_fft // 2 + 1, device=beta.device, dtype=beta.dtype)
    return torch.exp(beta[:, None] * torch.log1p(k / kappa))


def fft_size(L: int) -> int:
    """The smallest n >= 2L whose prime factors are all in {2, 3, 5, 7}.

    Such sizes are fast in every FFT library (pocketfft and MKL on the CPU, cuFFT), and n >= 2L keeps the
    circular convolution free of wrap-around for causal and bidirectional kernels. For the common lengths
    (784, 1024, 4096, 16384, 16000, 2000) this is exactly 2L; it differs only when 2L has a prime factor > 7.
    """
    n = 2 * L
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


@functools.lru_cache(maxsize=32)
def bin_weights(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """c_k / n for the rfft bins k = 0..n//2: c_k = 1 for the DC bin (and the Nyquist bin when n is even), 2 for the
    others (`fft_conv`'s backward). Cached per (n, dtype, device): built once, not at every backward."""
    weight = torch.full((n // 2 + 1,), 2.0 / n, dtype=dtype, device=device)
    weight[0] = 1.0 / n
    if n % 2 == 0:
        weight[-1] = 1.0 / n
    return weight


class _FFTConv(torch.autograd.Function):
    """y = irfft(rfft(u, n) * K_f, n)[:L] on (B, H, L) with a hand-written backward (formulas in `fft_conv`);
    with `time_domain` the kernel comes as the real filter k of length n and K_f = rfft(k)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, k: torch.Tensor, n_fft: int, time_domain: bool) -> torch.Tensor:
        L = u.shape[-1]
        u_f = torch.fft.rfft(u, n=n_fft)
        k_f = torch.fft.rfft(k) if time_domain else k
        ctx.save_for_backward(u_f, k_f)
        ctx.n_fft, ctx.time_domain = n_fft, time_domain
        return torch.fft.irfft(u_f * k_f, n=n_fft)[..., :L]

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        u_f, k_f = ctx.saved_tensors
        n, L = ctx.n_fft, grad_y.shape[-1]
        g_f = torch.fft.rfft(grad_y, n=n)
        grad_u = torch.fft.irfft(g_f * k_f.conj(), n=n)[..., :L] if ctx.needs_input_grad[0] else None
        grad_k = None
        if ctx.needs_input_grad[1]:
            correlation = (g_f * u_f.conj()).sum(0)
            if ctx.time_domain:
                grad_k = torch.fft.irfft(correlation, n=n)
            else:
                grad_k = correlation * bin_weights(n, g_f.real.dtype, g_f.device)
        return grad_u, grad_k, None, None


def fft_conv(u: torch.Tensor, k: torch.Tensor, n_fft: int, time_domain: bool = False) -> torch.Tensor:
    """Convolution by real FFTs: y = irfft(rfft(u, n) * K_f, n)[:L] along the length axis, in float32 (or float64).

    u: (B, L, H); k: K_f (H, n_fft//2 + 1), the rfft of the kernel at the same size (n_fft >= 2L: causal, no
    wrap-around), or with `time_domain` the real filter itself, (H, n_fft), and K_f = rfft(k). The FFTs run along
    the last axis of the (B, H, L) view of u; the result is copied once into a contiguous (B, L, H) tensor, because
    the position-wise ops that follow (GELU and its backward, the linear) are several times slower on the strided
    layout.

    Backward by hand, without autograd's zero-filled slice and pad gradients. With G = rfft(g, n) of the output
    gradient g and U = rfft(u, n): the operator is "zero-pad, circular convolution, truncate", whose adjoint is
    "zero-pad, circular correlation, truncate", so dL/du = irfft(G conj(K_f), n)[:L]; and with torch's convention
    for complex inputs (dL/dRe + i dL/dIm), dL/dK_f = sum_batch G conj(U) c_k / n, c_k = 1 for the DC bin (and
    the Nyquist bin when n is even) and 2 for the others, which irfft counts twice (Hermitian symmetry). For the
    filter k itself, y_t = sum_j k_j u_{t-j mod n} (u zero-padded) gives dL/dk_j = sum_{batch,t} g_t u_{t-j mod n},
    the circular correlation: dL/dk = irfft(sum_batch G conj(U), n), with no rfft backward after it.
    """
    y = _FFTConv.apply(at_least_float32(u).transpose(1, 2), k, n_fft, time_domain)
    return y.transpose(1, 2).contiguous()


def fft_conv_direct(u: torch.Tensor, k_f: torch.Tensor, n_fft: int) -> torch.Tensor:
    """The straightforward `fft_conv`: the same convolution with the FFTs along dim 1 of (B, L, H)."""
    L = u.shape[1]
    u_f = torch.fft.rfft(at_least_float32(u), n=n_fft, dim=1)  # (B, n/2+1, H)
    return torch.fft.irfft(u_f * k_f.transpose(0, 1), n=n_fft, dim=1)[:, :L]


def diagonal_recurrence(v: torch.Tensor, log_lam: torch.Tensor, n_fft: int | None = None,
                        reverse: bool = False) -> torch.Tensor:
    """x_t = lambda x_{t-1} + v_t (x_{-1} = 0) for complex inputs v (B, L, P) and lambda = exp(log_lam) (P,), by FFT.

    The MIMO layers (S5, LRU; docs/methods.md §I) project the input to P complex state channels first, so their
    kernel per state is the complex sequence lambda_p^l and the convolution x = k * v runs on complex signals:
    x = ifft(fft(v, n) fft(k, n), n)[:L] with n = `fft_size(L)` >= 2L (no wrap-around), float32 or float64.
    `reverse` runs the recurrence from the end, x_t = lambda x_{t+1} + v_t (S5's backward scan, lag 0 included).
    """
    L = v.shape[1]
    n = fft_size(L) if n_fft is None else n_fft
    l = torch.arange(L, device=log_lam.device, dtype=log_lam.real.dtype)
    k_f = torch.fft.fft(torch.exp(log_lam[:, None] * l), n=n)  # (P, n)
    v = v.flip(1) if reverse else v
    x = torch.fft.ifft(torch.fft.fft(v.transpose(1, 2), n=n) * k_f, n=n)[..., :L].transpose(1, 2)
    return x.flip(1) if reverse else x


def diagonal_mimo(u: torch.Tensor, B_bar: torch.Tensor, log_lam: torch.Tensor, C: torch.Tensor,
                  scale: float = 1.0) -> torch.Tensor:
    """y_t = scale Re(C_0 x_t) [+ scale Re(C_1 x'_t)] of a MIMO diagonal SSM, real (B, L, H) (docs/methods.md §I).

    x_t = lambda x_{t-1} + B_bar u_t (`diagonal_recurrence`), B_bar (P, H) and C (c, H, P) complex, c = 1 causal or
    c = 2 bidirectional, where x' runs the same recurrence from the end (S5's backward scan, lag 0 included).
    No (L, H, H) kernel is ever formed: project to P complex channels, convolve each with lambda_p^l, project back.
    """
    v = torch.matmul(u.to(B_bar.dtype), B_bar.T)  # (B, L, P)
    y = torch.matmul(diagonal_recurrence(v, log_lam), C[0].T)
    if C.shape[0] == 2:
        y = y + torch.matmul(diagonal_recurrence(v, log_lam, reverse=True), C[1].T)
    return scale * y.real
