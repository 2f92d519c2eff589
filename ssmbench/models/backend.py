"""Which code computes a float32 S4D layer's kernel on a GPU (`model.ssm.backend`), and the self-check behind it.

- torch: the PyTorch path (`kernels.blocked_vandermonde_kernel`); Triton is never used.
- triton: the fused Triton kernels (models/vandermonde_triton.py); when they cannot compile, launch or agree with
  the PyTorch path, the run stops before training with one line naming the cause.
- auto (default): the fused kernels where the self-check passes, else the PyTorch path with one warning line
  naming the cause (`model.ssm.path: direct` is not needed as a way around a broken Triton).

The self-check (`self_check`) runs once per process and device (`choose` caches it). Triton compiles the kernels
and builds its C launcher at the first launch, so a missing C compiler, Python.h, libcuda.so or writable ~/.triton
shows here, as an exception, before the first training step. On small random parameters (d_model 4, 32 complex
modes in conjugate pairs, two shared rows of A and B, both directions, L = 200: several blocks of lags forward and
backward), the fused filter of length n_fft with D at lag 0 (the launch of a training step) and the gradients of a
random cotangent with respect to A_re, A_im, log_dt, B, C and D are compared with the same computed by the PyTorch
path (`discretize`, `limit_growth`, `vandermonde_kernel`, `bidirectional_kernel`; docs/methods.md §A, §D): each
must agree within max |fused - torch| <= CHECK_TOLERANCE max |torch| (the two agree to ~1e-6 in float32,
tests/test_vandermonde_triton.py). TF32 is off during the check.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass

import torch

from ssmbench.errors import SSMBenchError
from ssmbench.models.kernels import (MAX_LOG_GROWTH, bidirectional_kernel, discretize, fft_size, limit_growth,
                                     vandermonde_kernel)

BACKENDS = ("auto", "triton", "torch")
TRITON_INSTALLED = importlib.util.find_spec("triton") is not None  # looked up once, not at every forward
# Triton's interpreter runs the kernels on the CPU: the same launches as on CUDA (tests, `ssmbench bench` op counts).
TRITON_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
CHECK_TOLERANCE = 1e-3
CHECK_SHAPE = {"H": 4, "S": 2, "M": 32, "L": 200}


@dataclass(frozen=True)
class Choice:
    """The backend a layer uses on a device, and why (env.json `ssm_backend`)."""

    backend: str  # "triton" or "torch"
    reason: str

    def facts(self) -> dict[str, str]:
        return {"backend": self.backend, "reason": self.reason}


_CHECKED: dict[str, str | None] = {}  # device -> the self-check's failure (None: passed)


def _parameters(device: torch.device) -> tuple[torch.Tensor, ...]:
    """Raw S4D parameters of the check (S4D-Lin-like, Re(A) = -0.5), from a generator of their own."""
    H, S, M = CHECK_SHAPE["H"], CHECK_SHAPE["S"], CHECK_SHAPE["M"]
    g = torch.Generator().manual_seed(0)
    A_re = torch.full((S, M), -0.6931) + 0.1 * torch.randn(S, M, generator=g)
    A_im = torch.pi * torch.arange(M).repeat(S, 1) + 0.1 * torch.randn(S, M, generator=g)
    log_dt = torch.empty(H).uniform_(-6.9, -2.3, generator=g)
    B = 1 + 0.1 * torch.randn(S, M, 2, generator=g)
    C = torch.randn(2, H, M, 2, generator=g)
    D = torch.randn(H, generator=g)
    return tuple(p.to(device).requires_grad_() for p in (A_re, A_im, log_dt, B, C, D))


def _torch_filter(A_re, A_im, log_dt, B, C, D, L: int, n_fft: int) -> torch.Tensor:
    """The filter of length n_fft the fused kernel writes, by the PyTorch path: ZOH, exp transforms, rows h mod S."""
    repeat = log_dt.shape[0] // A_re.shape[0]
    A = torch.complex(-torch.exp(A_re), A_im).repeat(repeat, 1)
    log_A_bar, B_bar = discretize(A, torch.view_as_complex(B).repeat(repeat, 1), torch.exp(log_dt), "zoh")
    K = vandermonde_kernel(torch.view_as_complex(C) * B_bar, limit_growth(log_A_bar, L), L, True)
    k = bidirectional_kernel(K, L, n_fft)
    return torch.cat([k[:, :1] + D[:, None], k[:, 1:]], dim=1)


def _fused_filter(A_re, A_im, log_dt, B, C, D, L: int, n_fft: int) -> torch.Tensor:
    from ssmbench.models.vandermonde_triton import fused_s4d_kernel

    linear_real = torch.zeros(A_re.shape[0], dtype=torch.bool, device=A_re.device)
    return fused_s4d_kernel(A_re, A_im, linear_real, log_dt, B, C, L, "exp", "exp", "zoh", True, MAX_LOG_GROWTH,
                            n_fft, D)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()


def self_check(device: torch.device) -> str | None:
    """None when the fused kernel compiles, launches and agrees with the PyTorch path on `device` (module
    docstring), else the cause in a few words."""
    device = torch.device(device)
    L = CHECK_SHAPE["L"]
    n_fft = fft_size(L)
    names = ("K", "A_re", "A_im", "log_dt", "B", "C", "D")
    results = []
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(device.type, enabled=False), torch.enable_grad():
            for compute in (_fused_filter, _torch_filter):
                params = _parameters(device)
                k = compute(*params, L, n_fft)
                cot = torch.randn(k.shape, generator=torch.Generator().manual_seed(1)).to(device)
                results.append([k.detach(), *torch.autograd.grad((k * cot).sum(), params)])
    except Exception as e:  # compile, launcher build or launch: any failure of Triton is the finding
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"Triton cannot compile or launch the fused kernel ({type(e).__name__}: {first[:200]})"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    for name, fused, ref in zip(names, *results):
        error = _relative_error(fused.float(), ref.float())
        if not error <= CHECK_TOLERANCE:  # also NaN
            what = "the kernel" if name == "K" else f"the gradient of {name}"
            return f"the fused kernel disagrees with the PyTorch path: {what} off by {error:.1e} of its largest value"
    return None


def _device_key(device: torch.device) -> str:
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


_CHOICES: dict[tuple[str, str], Choice] = {}  # (backend, device) -> its choice: a dict look-up per forward


def choose(backend: str, device: torch.device | str) -> Choice:
    """The backend of float32 S4D layers on `device` for `model.ssm.backend` (module docstring). The self-check
    runs at the first call per device; `auto` then warns once (stderr) if it falls back, `triton` raises."""
    device = torch.device(device)
    key = _device_key(device)
    choice = _CHOICES.get((backend, key))
    if choice is None:
        choice = _CHOICES[(backend, key)] = _decide(backend, device, key)
    return choice


def _decide(backend: str, device: torch.device, key: str) -> Choice:
    if backend not in BACKENDS:
        raise ValueError(f"unknown S4D backend {backend!r}; known: {', '.join(BACKENDS)}")
    if backend == "torch":
        return Choice("torch", "model.ssm.backend: torch")
    fresh = False
    if device.type != "cuda" and not TRITON_INTERPRETED:
        problem = f"the fused Triton kernel runs on CUDA; this run is on {key}"
    else:
        fresh = key not in _CHECKED
        if fresh:
            _CHECKED[key] = self_check(device) if TRITON_INSTALLED else "Triton is not installed (pip install triton)"
        problem = _CHECKED[key]
    if problem is None:
        return Choice("triton", f"self-check passed on {key}: forward and gradients within {CHECK_TOLERANCE:g} "
                                f"of the PyTorch path")
    if backend == "triton":
        raise SSMBenchError(f"model.ssm.backend: triton: {problem}; set model.ssm.backend: auto (falls back to "
                            f"PyTorch) or torch")
    if fresh:
        print(f"warning: the S4D layers use the PyTorch path on {key}: {problem}", file=sys.stderr, flush=True)
    return Choice("torch", problem)


def for_model(model_cfg, device: torch.device) -> dict[str, str] | None:
    """env.json's `ssm_backend` for a recipe's model section: the backend its S4D layers use and why (None for
    other layers). Runs the self-check here, before training, so a failing `triton` stops the run at once."""
    if model_cfg.kind != "s4d":
        return None
    if model_cfg.ssm.path == "direct":
        return Choice("torch", "model.ssm.path: direct").facts()
    return choose(model_cfg.ssm.backend, device).facts()
