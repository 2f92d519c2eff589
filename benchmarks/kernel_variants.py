"""Kernel-spectrum variants of docs/methods.md §F, forward+backward, interleaved rounds in one process:

- direct:     materialized Vandermonde (H, M, L) -> rfft(K, 2L)              (`kernels.vandermonde_kernel`)
- blocked:    A^(jT+t) = A^(jT) A^t, one batched GEMM -> rfft(K, 2L)          (`kernels.blocked_vandermonde_kernel`)
- generating: the closed form on the 2L-point grid (docs/methods.md §F.1), no FFT, z_k = e^{-i pi k/L}:
              K_f[k] = sum_n W_n (1 - lambda_n^L (-1)^k) / (1 - lambda_n z_k) + (conjugate-pair term)

    python benchmarks/kernel_variants.py [--H 256] [--N 64] [--lengths 1024,4096,16384] [--reps 5]

Prints the median seconds per variant and the max |K_f| difference of each variant from `direct` (float32 and a
float64 check at the smallest length). This script decided the fast path (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from ssmbench.models.kernels import blocked_vandermonde_kernel, vandermonde_kernel


def generating_function_spectrum(W: torch.Tensor, log_A_bar: torch.Tensor, L: int) -> torch.Tensor:
    """rfft(K, 2L) of K_l = 2 Re sum_n W_n lambda_n^l (l < L) by the geometric-series closed form (docs/methods.md §F.1)."""
    k = torch.arange(L + 1, device=W.device, dtype=log_A_bar.real.dtype)
    z = torch.polar(torch.ones_like(k), -math.pi * k / L)  # e^{-2 pi i k / (2L)}
    sign = 1 - 2 * (k % 2)  # z_k^L = (-1)^k
    lam = torch.exp(log_A_bar)[..., None]  # (H, M, 1)
    lam_L = torch.exp(L * log_A_bar)[..., None]
    W = W[0][..., None]
    pos = W * (1 - lam_L * sign) / (1 - lam * z)
    neg = W.conj() * (1 - lam_L.conj() * sign) / (1 - lam.conj() * z)
    return (pos + neg).sum(-2)  # (H, L + 1)


def variants(W, log_A_bar, L):
    return {
        "direct": lambda: torch.fft.rfft(vandermonde_kernel(W, log_A_bar, L)[0], n=2 * L),
        "blocked": lambda: torch.fft.rfft(blocked_vandermonde_kernel(W, log_A_bar, L)[0], n=2 * L),
        "generating": lambda: generating_function_spectrum(W, log_A_bar, L),
    }


def random_modes(H: int, M: int, dtype=torch.float32):
    """S4D-Lin modes with log-uniform dt in [1e-3, 1e-1] and C ~ CN(0, 1), B = 1 (ZOH)."""
    g = torch.Generator().manual_seed(0)
    dt = torch.exp(torch.rand(H, generator=g, dtype=dtype) * math.log(100) + math.log(1e-3))
    A = torch.complex(torch.full((H, M), -0.5, dtype=dtype), math.pi * torch.arange(M, dtype=dtype).expand(H, M))
    dtA = dt[:, None] * A
    C = torch.randn(1, H, M, generator=g, dtype=torch.complex64 if dtype == torch.float32 else torch.complex128)
    return C * torch.expm1(dtA) / A, dtA


def main() -> None:
    p = argparse.ArgumentParser(description="kernel-spectrum variants of docs/methods.md §F")
    p.add_argument("--H", type=int, default=256)
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--lengths", default="1024,4096,16384")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    Ls = [int(t) for t in a.lengths.split(",")]
    W64, x64 = random_modes(4, a.N // 2, torch.float64)
    fs = variants(W64, x64, Ls[0])
    ref = fs["direct"]()
    print(f"float64, H=4, L={Ls[0]}: max |K_f - direct|: " +
          ", ".join(f"{k} {(f() - ref).abs().max().item():.1e}" for k, f in fs.items() if k != "direct"))
    for L in Ls:
        W, log_A_bar = random_modes(a.H, a.N // 2)
        W, log_A_bar = W.requires_grad_(), log_A_bar.requires_grad_()
        fs = variants(W, log_A_bar, L)
        G = torch.randn(a.H, L + 1, dtype=torch.complex64)
        times = {k: [] for k in fs}
        outs = {}
        for r in range(a.reps + 1):  # round 0 is the warm-up
            for k, f in fs.items():
                t0 = time.perf_counter()
                out = f()
                (out * G.conj()).real.sum().backward()
                if r:
                    times[k].append(time.perf_counter() - t0)
                outs[k] = out.detach()
        scale = outs["direct"].abs().max().item()
        rel = {k: (o - outs["direct"]).abs().max().item() / scale for k, o in outs.items()}
        summary = [f"{k} {statistics.median(v) * 1e3:.1f} ms (max diff {rel[k]:.1e} rel)" for k, v in times.items()]
        print(f"H={a.H} N={a.N} L={L}: " + ", ".join(summary), flush=True)


if __name__ == "__main__":
    main()
