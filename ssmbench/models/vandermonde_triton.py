"""The S4D kernel as one fused Triton kernel in real arithmetic, forward and backward (a torch.autograd.Function).

    K_{c,h,l} = s * Re sum_n W_{c,h,n} exp(l a_{h,n})
              = s * sum_n exp(l a^re_{h,n}) (W^re_{c,h,n} cos(l a^im_{h,n}) - W^im_{c,h,n} sin(l a^im_{h,n}))

with a = log A_bar (after the overflow guard), W = C * B_bar and s = 2 for conjugate pairs, else 1: the same
function as `kernels.vandermonde_kernel` (the reference the tests hold this to), computed tile by tile in
registers, so neither the (H, M, L) Vandermonde matrix nor a complex tensor is ever stored. With
E = exp(l a^re), P = W^re cos - W^im sin, Q = -W^re sin - W^im cos and G = dLoss/dK, the backward is
    dW^re_{c,h,n} = s sum_l G_{c,h,l} E cos,      dW^im_{c,h,n} = -s sum_l G_{c,h,l} E sin,
    da^re_{h,n} = s sum_{c,l} G_{c,h,l} l E P,   da^im_{h,n} = s sum_{c,l} G_{c,h,l} l E Q,
recomputing E, cos and sin (nothing of size L is saved): each program reduces one block of lags, and the
partial sums of the blocks are added by torch. The phase l a^im is reduced to [-pi, pi] before cos/sin.
Cost: H M L exp + sin + cos per pass, memory O(c H L) for K and O(H M L / BLOCK_L) for the partial sums.

Used by `S4D.kernel` on CUDA for float32 layers (`s4d.fused_kernel_available`); on the CPU it runs under
TRITON_INTERPRET=1 (the tests). Importing this module needs Triton.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_L = 128  # lags per program in the forward
BLOCK_L_BACKWARD = 64  # smaller: the backward keeps six (BLOCK_M, BLOCK_L) tiles live
TWO_PI = tl.constexpr(6.283185307179586)
INV_TWO_PI = tl.constexpr(0.15915494309189535)


@triton.jit
def _phase_terms(a_re, a_im, lags):
    """E = exp(l a^re), cos(l a^im), sin(l a^im) for a (BLOCK_M, BLOCK_L) tile, the phase reduced to [-pi, pi]."""
    mag = tl.exp(a_re[:, None] * lags[None, :])
    phase = a_im[:, None] * lags[None, :]
    phase = phase - TWO_PI * tl.floor(phase * INV_TWO_PI + 0.5)
    return mag, tl.cos(phase), tl.sin(phase)


@triton.jit
def _forward(a_re_ptr, a_im_ptr, w_re_ptr, w_im_ptr, k_ptr, H, M, L, scale,
             C: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_L: tl.constexpr):
    h = tl.program_id(0)
    offs_l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    a_re = tl.load(a_re_ptr + h * M + offs_m, mask=mask_m, other=0.0)
    a_im = tl.load(a_im_ptr + h * M + offs_m, mask=mask_m, other=0.0)
    mag, cos, sin = _phase_terms(a_re, a_im, offs_l.to(tl.float32))
    for c in tl.static_range(C):
        w_re = tl.load(w_re_ptr + (c * H + h) * M + offs_m, mask=mask_m, other=0.0)  # padded modes: W = 0
        w_im = tl.load(w_im_ptr + (c * H + h) * M + offs_m, mask=mask_m, other=0.0)
        k = tl.sum(mag * (w_re[:, None] * cos - w_im[:, None] * sin), axis=0) * scale
        tl.store(k_ptr + (c * H + h) * L + offs_l, k, mask=offs_l < L)


@triton.jit
def _backward(a_re_ptr, a_im_ptr, w_re_ptr, w_im_ptr, g_ptr, gw_ptr, ga_ptr, H, M, L, scale,
              C: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_L: tl.constexpr):
    """Partial sums of one block of lags b: gw[b, 0/1, c, h, :] (W^re, W^im) and ga[b, 0/1, h, :] (a^re, a^im)."""
    h = tl.program_id(0)
    b = tl.program_id(1)
    offs_l = b * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    a_re = tl.load(a_re_ptr + h * M + offs_m, mask=mask_m, other=0.0)
    a_im = tl.load(a_im_ptr + h * M + offs_m, mask=mask_m, other=0.0)
    lags = offs_l.to(tl.float32)
    mag, cos, sin = _phase_terms(a_re, a_im, lags)
    ga_re = tl.zeros([BLOCK_M], dtype=tl.float32)
    ga_im = tl.zeros([BLOCK_M], dtype=tl.float32)
    for c in tl.static_range(C):
        g = tl.load(g_ptr + (c * H + h) * L + offs_l, mask=offs_l < L, other=0.0)
        ge = g[None, :] * mag  # (BLOCK_M, BLOCK_L)
        ge_cos = ge * cos
        ge_sin = ge * sin
        w_re = tl.load(w_re_ptr + (c * H + h) * M + offs_m, mask=mask_m, other=0.0)
        w_im = tl.load(w_im_ptr + (c * H + h) * M + offs_m, mask=mask_m, other=0.0)
        gw = (b * 2 * C + c) * H * M + h * M + offs_m
        tl.store(gw_ptr + gw, tl.sum(ge_cos, axis=1) * scale, mask=mask_m)
        tl.store(gw_ptr + gw + C * H * M, -tl.sum(ge_sin, axis=1) * scale, mask=mask_m)
        l_cos = tl.sum(ge_cos * lags[None, :], axis=1)
        l_sin = tl.sum(ge_sin * lags[None, :], axis=1)
        ga_re += w_re * l_cos - w_im * l_sin
        ga_im += -w_re * l_sin - w_im * l_cos
    ga = b * 2 * H * M + h * M + offs_m
    tl.store(ga_ptr + ga, ga_re * scale, mask=mask_m)
    tl.store(ga_ptr + ga + H * M, ga_im * scale, mask=mask_m)


class _FusedVandermonde(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a_re: torch.Tensor, a_im: torch.Tensor, w_re: torch.Tensor, w_im: torch.Tensor, L: int,
                scale: float) -> torch.Tensor:
        C, H, M = w_re.shape
        k = torch.empty(C, H, L, device=a_re.device, dtype=torch.float32)
        _forward[(H, triton.cdiv(L, BLOCK_L))](a_re, a_im, w_re, w_im, k, H, M, L, scale, C=C,
                                               BLOCK_M=triton.next_power_of_2(M), BLOCK_L=BLOCK_L)
        ctx.save_for_backward(a_re, a_im, w_re, w_im)
        ctx.L, ctx.scale = L, scale
        return k

    @staticmethod
    def backward(ctx, grad_k: torch.Tensor):
        a_re, a_im, w_re, w_im = ctx.saved_tensors
        C, H, M = w_re.shape
        blocks = triton.cdiv(ctx.L, BLOCK_L_BACKWARD)
        gw = torch.empty(blocks, 2, C, H, M, device=a_re.device, dtype=torch.float32)
        ga = torch.empty(blocks, 2, H, M, device=a_re.device, dtype=torch.float32)
        _backward[(H, blocks)](a_re, a_im, w_re, w_im, grad_k.float().contiguous(), gw, ga, H, M, ctx.L, ctx.scale,
                               C=C, BLOCK_M=triton.next_power_of_2(M), BLOCK_L=BLOCK_L_BACKWARD)
        gw, ga = gw.sum(0), ga.sum(0)
        return ga[0], ga[1], gw[0], gw[1], None, None


def fused_vandermonde_kernel(W: torch.Tensor, log_A_bar: torch.Tensor, L: int,
                             conjugate_pairs: bool = True) -> torch.Tensor:
    """`kernels.vandermonde_kernel` (W (c, H, M), log A_bar (H, M), both complex) by the fused Triton kernel:
    real float32 (c, H, L)."""
    parts = [t.float().contiguous() for t in (log_A_bar.real, log_A_bar.imag, W.real, W.imag)]
    return _FusedVandermonde.apply(*parts, L, 2.0 if conjugate_pairs else 1.0)
