"""The fused Triton S4D kernel (models/vandermonde_triton.py: raw parameters -> K, and the gradients of every raw
parameter) against the PyTorch path of the same layer (`S4D(backend="torch")`: `discrete` + `vandermonde_kernel`) in
float32 and in float64.

Triton runs in its interpreter on the CPU (TRITON_INTERPRET=1 must be set before the kernels are defined; with it
`S4D` takes the fused path on the CPU), so the checks run in a fresh process: `python tests/test_vandermonde_triton.py`
prints the largest errors as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]

# (discretization, real_transform, dt_transform, bidirectional, n_ssm, init, L): every option of the fused kernel
# at least once; L = 1 (one lag), 70 (two backward blocks of lags), 300 (three forward blocks, a partial last one)
CASES = [("zoh", "exp", "exp", False, None, "s4d-lin", 300), ("bilinear", "exp", "exp", True, None, "s4d-lin", 70),
         ("zoh", "relu", "softplus", True, 2, "s4d-lin", 70), ("bilinear", "none", "softplus", False, 2, "s4d-lin", 70),
         ("zoh", "none", "exp", True, None, "s4d-real", 70), ("bilinear", "relu", "exp", False, 1, "s4d-real", 1),
         ("zoh", "exp", "softplus", False, 4, "s4d-inv", 70)]


def rel(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()


def layer(case: tuple, triton: bool, dtype: torch.dtype):
    """An S4D layer of `case` (d_model 4, d_state 10) with row 0 on the linear real part and one unstable mode
    there (clamped by the overflow guard), identical parameters whatever `triton` and `dtype`."""
    from ssmbench.models.s4d import S4D

    disc, real, dt, bidirectional, n_ssm, init, _ = case
    torch.manual_seed(0)
    m = S4D(4, d_state=10, init=init, discretization=disc, real_transform=real, dt_transform=dt,
            bidirectional=bidirectional, n_ssm=n_ssm, backend="triton" if triton else "torch")
    with torch.no_grad():
        m.log_dt.uniform_(-4, 0.5)  # dt up to 1.6: |dt A| beyond the series range of phi1 for some modes
        m.linear_real[0] = True
        m.A_re[0, 0] = -0.3  # Re(A) = 0.3 > 0 on a linear row: the overflow guard clamps it at L >= 34
    return m.to(dtype)


def kernel_cases() -> dict:
    """Per case: [K, then the gradient of every parameter] relative errors, Triton vs torch32, Triton vs float64,
    torch32 vs float64; and the launches of one forward+backward of the fused kernel."""
    from ssmbench.bench import OpCounter
    from ssmbench.models.backend import choose

    assert choose("triton", "cpu").backend == "triton"  # the self-check, once, before launches are counted
    out = {}
    for case in CASES:
        L = case[-1]
        results = {}
        for name, triton, dtype in [("triton", True, torch.float32), ("torch32", False, torch.float32),
                                    ("torch64", False, torch.float64)]:
            m = layer(case, triton, dtype)
            cot = torch.randn(2 if case[3] else 1, 4, L, generator=torch.Generator().manual_seed(1),
                              dtype=torch.float64).to(dtype)
            with OpCounter() if name == "triton" else nullcontext() as counter:
                m.kernel(L).backward(cot)
            if name == "triton":
                out[f"{case} launches"] = [sum(counter.aten.values()), dict(counter.triton)]
            k = m.kernel(L).detach()
            results[name] = [k.double()] + [p.grad.double() for p in m.parameters() if p.grad is not None]
        assert len(results["triton"]) == 6, "K and the gradients of A_re, A_im, log_dt, B, C"
        for fast, ref in [("triton", "torch32"), ("triton", "torch64"), ("torch32", "torch64")]:
            out[f"{case} {fast} vs {ref}"] = [rel(t, r) for t, r in zip(results[fast], results[ref])]
    return out


# (bidirectional, beta, L): the fused path writes the filter of length n_fft itself (D at lag 0 unless a Sobolev
# filter follows); L = 149 has n_fft = 300 > 2L (zeros between the two directions), 150 has n_fft = 2L.
BLOCKS = [(True, None, 150), (True, 0.5, 149), (False, None, 149), (False, -0.3, 150)]


def block_cases() -> dict:
    """S4D blocks on the fused path vs the same blocks on the PyTorch path: output and all gradients."""
    from ssmbench.models import s4d

    out = {}
    for bidirectional, beta, L in BLOCKS:
        torch.manual_seed(0)
        ref = s4d.S4D(6, d_state=10, bidirectional=bidirectional, beta=beta, backend="torch")
        fused = s4d.S4D(6, d_state=10, bidirectional=bidirectional, beta=beta)
        fused.load_state_dict(ref.state_dict())
        x = torch.randn(2, L, 6)
        grads = []
        for block in (ref, fused):
            xi = x.clone().requires_grad_()
            y = block(xi)
            y.square().sum().backward()
            grads.append([y.detach(), xi.grad] + [p.grad for p in block.parameters()])
        out[f"block {bidirectional, beta, L}"] = [rel(a, b) for a, b in zip(grads[1], grads[0])]
    return out


def test_triton_kernel_matches_pytorch_and_float64():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(errors) == 4 * len(CASES) + len(BLOCKS)
    for block in BLOCKS:  # the whole block, output and every gradient
        assert max(errors.pop(f"block {block}")) < 1e-5, block
    for case in CASES:
        # one launch forward, two backward; ATen only sums partial gradients: over the blocks of lags, and (for A and
        # for B) over the channels that share a row when n_ssm < d_model (4)
        shared = case[4] not in (None, 4)
        assert errors[f"{case} launches"] == [1 + 2 * shared, {"_forward": 1, "_backward_lags": 1,
                                                            "_backward_parameters": 1}], case
    for case in map(str, CASES):
        own, torch32 = errors[f"{case} triton vs torch64"], errors[f"{case} torch32 vs torch64"]
        # [K, dA_re, dA_im, dlog_dt, dB, dC] / max |value|: float32 rounding bounds both paths alike
        assert all(e < 3 * t + 1e-5 for e, t in zip(own, torch32)), (case, own, torch32)
        assert max(own) < 1e-4 and max(errors[f"{case} triton vs torch32"]) < 1e-4, case


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_triton_kernel_on_cuda():
    """The compiled kernel at an LRA-like shape (bidirectional, H 64, N 64, L = 4096) vs the PyTorch path in float64."""
    from ssmbench.models.s4d import S4D

    results = []
    for device, dtype, triton in [("cuda", torch.float32, True), ("cpu", torch.float64, False)]:
        torch.manual_seed(0)
        m = S4D(64, d_state=64, bidirectional=True, backend="triton" if triton else "torch").to(device, dtype)
        cot = torch.randn(2, 64, 4096, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        k = m.kernel(4096)
        (k * cot.to(device, dtype)).sum().backward()
        results.append([k.detach().cpu().double()] + [p.grad.cpu().double() for p in m.parameters()
                                                      if p.grad is not None])
    errors = [rel(t, r) for t, r in zip(*results)]
    assert len(errors) == 6 and max(errors) < 1e-4, errors


if __name__ == "__main__":
    print(json.dumps({**kernel_cases(), **block_cases()}))
