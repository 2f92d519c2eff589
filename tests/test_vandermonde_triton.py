"""The fused Triton kernel (models/vandermonde_triton.py) against the PyTorch Vandermonde kernel and float64.

Triton runs in its interpreter on the CPU (TRITON_INTERPRET=1 must be set before the kernels are defined), so the
checks run in a fresh process: `python tests/test_vandermonde_triton.py` prints the largest errors as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]


def rel(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()


def kernel_cases() -> dict:
    """Forward and all four gradients, Triton (float32) vs vandermonde_kernel in float32 and in float64."""
    from ssmbench.models.kernels import limit_growth, vandermonde_kernel
    from ssmbench.models.vandermonde_triton import fused_vandermonde_kernel

    out = {}
    # (c, H, M, L): padded modes (M not a power of two), a partial last block of lags, both directions
    for c, H, M, L in [(1, 3, 5, 200), (2, 2, 8, 300), (1, 2, 4, 1)]:
        g = torch.Generator().manual_seed(c * 100 + L)
        re = -torch.rand(H, M, generator=g, dtype=torch.float64) * 0.05
        re[0, 0] = 0.02  # an unstable mode, clamped by the overflow guard
        log_A = torch.complex(re, torch.rand(H, M, generator=g, dtype=torch.float64) * 3)
        W = torch.randn(c, H, M, generator=g, dtype=torch.complex128)
        cot = torch.randn(c, H, L, generator=g, dtype=torch.float64)
        results = {}
        for name, dtype, fn in [("triton", torch.complex64, fused_vandermonde_kernel),
                                ("torch32", torch.complex64, vandermonde_kernel),
                                ("torch64", torch.complex128, vandermonde_kernel)]:
            a = log_A.to(dtype).requires_grad_()
            w = W.to(dtype).requires_grad_()
            k = fn(w, limit_growth(a, L), L, True)
            (k * cot.to(k.dtype)).sum().backward()
            results[name] = [t.detach().to(torch.complex128) for t in (k, a.grad, w.grad)]
        for fast, ref in [("triton", "torch32"), ("triton", "torch64"), ("torch32", "torch64")]:
            out[f"{c},{H},{M},{L} {fast} vs {ref}"] = [rel(t, r) for t, r in zip(results[fast], results[ref])]
    return out


def block_case() -> dict:
    """A bidirectional S4D block with the Triton kernel forced on vs the same block on the PyTorch path."""
    from ssmbench.models import s4d

    torch.manual_seed(0)
    ref = s4d.S4D(6, d_state=10, bidirectional=True, triton=False)
    fused = s4d.S4D(6, d_state=10, bidirectional=True)
    fused.load_state_dict(ref.state_dict())
    s4d.fused_kernel_available = lambda x: True
    x = torch.randn(2, 150, 6)
    grads = []
    for block in (ref, fused):
        xi = x.clone().requires_grad_()
        y = block(xi)
        y.square().sum().backward()
        grads.append([y.detach(), xi.grad] + [p.grad for p in block.parameters()])
    return {"block": [rel(a, b) for a, b in zip(grads[1], grads[0])]}


def test_triton_kernel_matches_pytorch_and_float64():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(errors) == 10
    assert max(errors.pop("block")) < 1e-5  # the whole block, output and every gradient
    for case in [k for k in errors if k.endswith("triton vs torch64")]:  # [K, dlog A_bar, dW] / max |value|
        own, torch32 = errors[case], errors[case.replace("triton", "torch32")]
        # float32 rounding of the phase l Im(log A_bar) bounds both paths alike (~1e-4 here, at l Im ~ 900)
        assert all(e < 3 * t + 1e-6 and e < 2e-4 for e, t in zip(own, torch32)), (case, own, torch32)
        assert max(errors[case.replace("torch64", "torch32")]) < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_triton_kernel_on_cuda():
    """The compiled kernel at an LRA-like shape (bidirectional, M = 32, L = 4096) vs the PyTorch kernel in float64."""
    from ssmbench.models.kernels import limit_growth, vandermonde_kernel
    from ssmbench.models.vandermonde_triton import fused_vandermonde_kernel

    g = torch.Generator().manual_seed(0)
    H, M, L = 64, 32, 4096
    log_A = torch.complex(-torch.rand(H, M, generator=g, dtype=torch.float64) * 0.01,
                          torch.rand(H, M, generator=g, dtype=torch.float64) * 0.1)
    W = torch.randn(2, H, M, generator=g, dtype=torch.complex128)
    cot = torch.randn(2, H, L, generator=g, dtype=torch.float64)
    results = []
    for dtype, device, fn in [(torch.complex64, "cuda", fused_vandermonde_kernel),
                              (torch.complex128, "cpu", vandermonde_kernel)]:
        a, w = log_A.to(device, dtype).requires_grad_(), W.to(device, dtype).requires_grad_()
        k = fn(w, limit_growth(a, L), L, True)
        (k * cot.to(device, k.dtype)).sum().backward()
        results.append([t.detach().cpu().to(torch.complex128) for t in (k, a.grad, w.grad)])
    errors = [rel(t, r) for t, r in zip(*results)]
    assert max(errors) < 1e-4, errors


if __name__ == "__main__":
    print(json.dumps({**kernel_cases(), **block_case()}))
