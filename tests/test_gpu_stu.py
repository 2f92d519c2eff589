"""GPU only (skipped without CUDA): the STU and AR-STU blocks on CUDA compute what they compute in float64 on the
CPU, outputs and every gradient, in float32 and under bf16 autocast (the STU map itself stays float32)."""

from __future__ import annotations

import copy

import pytest
import torch

from ssmbench.models.stu import ARSTU, STU

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).abs().max() / b.abs().max()).item()


def forward_backward(block: torch.nn.Module, x: torch.Tensor, g: torch.Tensor, bf16: bool) -> list[torch.Tensor]:
    x = x.clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        y = block(x)
    y.float().backward(g)
    return [y, x.grad] + [p.grad for p in block.parameters()]


@pytest.mark.parametrize("block", ["stu", "ar-stu-chunked", "ar-stu-loop"])
@pytest.mark.parametrize("bf16", [False, True])
def test_stu_on_cuda_matches_float64(block, bf16):
    torch.manual_seed(0)
    H, L, B = 32, 1024, 2
    if block == "stu":
        ref = STU(H, k=16, k_u=3)
    else:  # chunk 32 < L: the chunked scan; chunk L: the plain loop
        ref = ARSTU(H, k=16, k_u=3, k_y=3, ar_init=0.5, scan_chunk=32 if block.endswith("chunked") else L)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.startswith("M_"):  # random mixing; M^y stays close to its stable initialization
                p.add_((0.01 if name == "M_y" else 0.05) * torch.randn_like(p))
    ref = ref.double()
    x, g = torch.randn(B, L, H, dtype=torch.float64), torch.randn(B, L, H, dtype=torch.float64)
    exact = forward_backward(ref, x, g, bf16=False)
    got = forward_backward(copy.deepcopy(ref).float().cuda(), x.float().cuda(), g.float().cuda(), bf16)
    # fp32: FFT and scan rounding; bf16: the output Linear runs in bf16 (8 bits of mantissa)
    tol_out, tol_grad = (2e-2, 5e-2) if bf16 else (1e-4, 1e-4)
    assert relative(got[0], exact[0]) < tol_out
    for a, b in zip(got[1:], exact[1:]):
        assert relative(a, b) < tol_grad
