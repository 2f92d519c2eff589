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

triton = pytest.importorskip("triton")
tl = triton.language
vt = pytest.importorskip("ssmbench.models.vandermonde_triton")
ROOT = Path(__file__).resolve().parents[1]

# (discretization, real_transform, dt_transform, bidirectional, n_ssm, init, d_state, L): every option of the fused
# kernel at least once; L = 1 (one lag), 70 (two backward blocks of lags), 300 (three forward blocks, a partial last
# one). d_state 10 is BLOCK_M 8 (forward BLOCK_L 128, backward 64); the bilinear backward's own tiles at BLOCK_M 32
# (d_state 64: BLOCK_L 32, three blocks at L = 70) and 64 (d_state 128: BLOCK_L 16, three blocks at L = 40)
# (`vandermonde_triton.BILINEAR_BACKWARD_TILE`).
CASES = [("zoh", "exp", "exp", False, None, "s4d-lin", 10, 300),
         ("bilinear", "exp", "exp", True, None, "s4d-lin", 10, 70),
         ("zoh", "relu", "softplus", True, 2, "s4d-lin", 10, 70),
         ("bilinear", "none", "softplus", False, 2, "s4d-lin", 10, 70),
         ("zoh", "none", "exp", True, None, "s4d-real", 10, 70),
         ("bilinear", "relu", "exp", False, 1, "s4d-real", 10, 1),
         ("zoh", "exp", "softplus", False, 4, "s4d-inv", 10, 70),
         ("bilinear", "exp", "exp", True, None, "s4d-lin", 64, 70),
         ("bilinear", "exp", "softplus", False, 2, "s4d-lin", 128, 40)]


def rel(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()


def layer(case: tuple, triton: bool, dtype: torch.dtype):
    """An S4D layer of `case` (d_model 4) with row 0 on the linear real part and one unstable mode there (clamped
    by the overflow guard), identical parameters whatever `triton` and `dtype`."""
    from ssmbench.models.s4d import S4D

    disc, real, dt, bidirectional, n_ssm, init, d_state, _ = case
    torch.manual_seed(0)
    m = S4D(4, d_state=d_state, init=init, discretization=disc, real_transform=real, dt_transform=dt,
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


def interpreted(*args: str) -> dict:
    """The JSON printed by `python tests/test_vandermonde_triton.py ARGS` under TRITON_INTERPRET=1."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Long undamped lags (issue 22): Re(A) = 0, dt = 0.1, S4D-Lin Im(A) = pi n, lags up to 16384, where the phase
# l dt Im(A) reaches ~1e5 rad and float32 rounding of dt, of dt Im(A) or of their product with l is ~1e-2 rad.
LONG_L = 16384
PHASE_CASES = [(disc, dt) for disc in ("zoh", "bilinear") for dt in ("exp", "softplus")]


@triton.jit
def _probe(a_re_ptr, a_im_ptr, lin_ptr, log_dt_ptr, b_ptr, out_ptr, M, start, REAL: tl.constexpr,
           DT: tl.constexpr, ZOH: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_L: tl.constexpr):
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    a_re, a_im, _, dt, _, b_re, b_im = vt._parameters(a_re_ptr, a_im_ptr, lin_ptr, log_dt_ptr, b_ptr, 0, 0, M,
                                                      offs_m, mask_m, REAL, DT)
    la_re, _, _, _ = vt._discretize(a_re, a_im, dt, b_re, b_im, 1.0, ZOH)
    _, cos, sin = vt._phase_terms(la_re, vt._phase_rate(a_re, a_im, log_dt_ptr, 0, DT, ZOH), start, BLOCK_L)
    at = offs_m[:, None] * BLOCK_L + tl.arange(0, BLOCK_L)[None, :]
    tl.store(out_ptr + at, cos)
    tl.store(out_ptr + BLOCK_M * BLOCK_L + at, sin)


def phase_cases() -> dict:
    """cos and sin of the phase of the fused kernel's tiles (`_phase_rate`, `_phase_terms`) for the last block of lags
    before LONG_L, on undamped modes, vs float64: max absolute error per (discretization, dt transform)."""
    import math

    from ssmbench.models.s4d import DT_TRANSFORMS

    M, block = 32, vt.MAX_BLOCK_L
    start = LONG_L - block
    out = {}
    for disc, dt_transform in PHASE_CASES:
        A_im = (math.pi * torch.arange(M, dtype=torch.float32))[None]
        log_dt = DT_TRANSFORMS[dt_transform][1](torch.tensor([0.1]))
        tiles = torch.empty(2, M, block)
        _probe[(1,)](torch.zeros(1, M), A_im, torch.ones(1, dtype=torch.bool), log_dt, torch.zeros(1, M, 2), tiles, M,
                     start, REAL=0, DT=vt.DT_TRANSFORM_CODES[dt_transform], ZOH=disc == "zoh", BLOCK_M=M, BLOCK_L=block)
        z = DT_TRANSFORMS[dt_transform][0](log_dt.double()) * torch.complex(torch.zeros(M, dtype=torch.float64),
                                                                             A_im[0].double())
        w = z.imag if disc == "zoh" else torch.log((1 + z / 2) / (1 - z / 2)).imag
        phase = w[:, None] * torch.arange(start, LONG_L, dtype=torch.float64)
        out[f"{disc} {dt_transform}"] = max((tiles[0].double() - phase.cos()).abs().max().item(),
                                            (tiles[1].double() - phase.sin()).abs().max().item())
    return out


def test_fused_kernel_phase_is_exact_at_long_undamped_lags():
    errors = interpreted("phase")
    assert sorted(errors) == sorted(f"{d} {t}" for d, t in PHASE_CASES)
    assert max(errors.values()) < 2e-6, errors  # float32: a float32 phase l w gives ~1e-2


def long_lags_case(discretization: str) -> dict:
    """K and every gradient of an undamped S4D-Lin layer (dt 0.1, L = LONG_L) on the fused path and on the float32
    PyTorch path, relative to float64."""
    from ssmbench.models.s4d import S4D

    results = {}
    for name, triton, dtype in [("triton", True, torch.float32), ("torch32", False, torch.float32),
                                ("torch64", False, torch.float64)]:
        torch.manual_seed(0)
        m = S4D(2, d_state=8, discretization=discretization, triton=triton)
        with torch.no_grad():
            m.linear_real.fill_(True)
            m.A_re.zero_()
            m.set_dt(0.1)
        m = m.to(dtype)
        k = m.kernel(LONG_L)
        k.backward(torch.randn(k.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype))
        results[name] = [k.detach().double()] + [p.grad.double() for p in m.parameters() if p.grad is not None]
    return {name: [rel(a, b) for a, b in zip(results[name], results["torch64"])] for name in ("triton", "torch32")}


@pytest.mark.slow
@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_fused_kernel_at_long_undamped_lags(discretization):
    errors = interpreted("long", discretization)
    assert len(errors["triton"]) == 6 and max(errors["triton"]) < 1e-5 and max(errors["torch32"]) < 1e-5, errors


def test_triton_kernel_matches_pytorch_and_float64():
    modes = {case[6] // 2 for case in CASES if case[0] == "bilinear" and case[5] != "s4d-real"}  # conjugate pairs
    tiles = {(triton.next_power_of_2(m), vt.block_lags(triton.next_power_of_2(m), vt.BILINEAR_BACKWARD_TILE,
                                                        vt.MAX_BLOCK_L_BACKWARD)) for m in modes}
    assert tiles >= {(32, 32), (64, 16)}, tiles  # the bilinear backward's own tiles are among the cases
    errors = interpreted()
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
    if sys.argv[1:2] == ["phase"]:
        print(json.dumps(phase_cases()))
    elif sys.argv[1:2] == ["long"]:
        print(json.dumps(long_lags_case(sys.argv[2])))
    else:
        print(json.dumps({**kernel_cases(), **block_cases()}))
