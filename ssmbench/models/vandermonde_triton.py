"""The S4D kernel from the raw parameters in fused Triton kernels, real arithmetic, forward and backward.

One launch computes K from the layer's parameters (docs/methods.md §A, §D, §F.3): per channel h and mode n, with
s = h mod n_ssm the shared row of A and B,

    A = -f(A_re[s]) + i A_im[s]  (f = exp, relu + 1e-4 or identity; identity on `linear_real` rows),
    dt = exp(log_dt[h]) or softplus(log_dt[h]),  z = dt A,
    ZOH:      a = z,                          B_bar = dt phi1(z) B[s],   phi1(z) = (e^z - 1)/z
    bilinear: a = log((1 + z/2)/(1 - z/2)),   B_bar = dt B[s] / (1 - z/2),
    a^re <- min(a^re, max_log_growth / L)  (the overflow guard, straight-through in the backward),
    K_{c,h,l} = s_c * Re sum_n W_{c,h,n} exp(l a_{h,n}),  W = C * B_bar,  s_c = 2 for conjugate pairs, else 1,
             = s_c * sum_n exp(l a^re) (W^re cos(l a^im) - W^im sin(l a^im)).

This is `S4D.discrete` + `kernels.vandermonde_kernel` (the reference the tests hold it to), computed tile by tile
in registers: no complex tensor, no (H, M, L) Vandermonde matrix, no intermediate of the discretization. The
output is K (c, H, L), or directly the convolution filter of length n_fft (H, n_fft) that
`kernels.bidirectional_kernel` makes of it (direction 1 at index n_fft - 1 - l, zeros between), with D at lag 0
when given (dD_h = G_{h,0}): no pad, flip, add or select, nor their backwards, in the S4D block.
The backward takes two launches. The first recomputes each tile and reduces one block of lags: with
E = exp(l a^re), P = W^re cos - W^im sin, Q = -W^re sin - W^im cos and G = dLoss/dK,
    dW^re = s sum_l G E cos,   dW^im = -s sum_l G E sin,   da^re = s sum_{c,l} G l E P,   da^im = s sum_{c,l} G l E Q.
torch adds the blocks' partial sums (one reduction); the second launch (one program per channel h) applies the
chain rule to the raw parameters: log_dt[h], C[:, h], D[h], and channel h's share of the gradients of its row
s = h mod n_ssm of A_re, A_im and B, which torch sums over the channels h = s, s + n_ssm, ... that share the row
(one more reduction, only when n_ssm < H; a program per row looping over its channels would be serial for
n_ssm = 1). For complex w = u(x) and torch's convention for gradients of complex tensors (dLoss/dRe + i dLoss/dIm),
a holomorphic map passes g_x = g_w conj(u'(x)) and a real x gets Re(g_w conj(du/dx)):
    dC = dW conj(B_bar),  g_Bbar = sum_c dW conj(C),
    ZOH:      dB = dt g_Bbar conj(phi1),  g_z = da + g_Bbar conj(dt B phi1'(z)),  phi1' = (e^z - phi1)/z,
              dL/d dt = sum_n Re(g_z conj(A)) + Re(g_Bbar conj(phi1 B)),
    bilinear: dB = g_Bbar conj(dt / (1 - z/2)),  g_z = da conj(1/(1 - z^2/4)) + g_Bbar conj(dt B / (2 (1 - z/2)^2)),
              dL/d dt = sum_n Re(g_z conj(A)) + Re(g_Bbar conj(B / (1 - z/2))),
    dA = dt g_z,  dA_re = -Re(dA) f'(A_re),  dA_im = Im(dA),  dlog_dt = dL/d dt * (dt or sigmoid(log_dt)).
phi1 and phi1' use their Taylor series for |z| < 1/2 (9 terms, error < 1e-9), so neither cancels at small z; the
phase l a^im is reduced to [-pi, pi] before cos/sin, from a^im in float64 (per mode) and without a float32 product
l a^im, which on an undamped mode reaches ~1e5 rad at L = 16384 (`_phase_terms`).
Cost: H M L exp + sin + cos per pass, memory O(c H L) for K and O(H M L / BLOCK_L) for the partial sums of the
backward (`block_lags`).

Used by `S4D.kernel` and `S4D.ssm` for float32 layers on CUDA (`s4d.fused_kernel_available`); on the CPU it runs under
TRITON_INTERPRET=1 (the tests; `ssmbench bench` counts its launches there). Importing this module needs Triton.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager

import torch
import triton
import triton.language as tl

# A program holds (BLOCK_M, BLOCK_L) tiles in registers: three live in the forward (E, cos, sin), six in the
# backward. Their elements per thread, BLOCK_M BLOCK_L / (32 num_warps), must stay small or ptxas spills (255
# registers and 1.3 KB of spills per thread at BLOCK_M 32, BLOCK_L 128). `block_lags` keeps the tiles at
# FORWARD_TILE and BACKWARD_TILE elements; the bilinear backward, which also holds the discretization's atan2
# (float32, and float64 for the phase rate) per mode, at BILINEAR_BACKWARD_TILE (252-254 registers and 8 warps per
# SM at 2,048 elements, BLOCK_M 32 and 64; 150-154 and 12 at 1,024). With `WARPS`, no specialization of a shipped
# recipe or of the bilinear discretization spills or keeps fewer than 8 warps per SM on sm_75 .. sm_120
# (benchmarks/README.md, "Compiled kernels"; ssmbench/models/triton_compile.py).
FORWARD_TILE, MAX_BLOCK_L = 1024, 128
BACKWARD_TILE, MAX_BLOCK_L_BACKWARD = 2048, 64
BILINEAR_BACKWARD_TILE = 1024
TWO_PI = tl.constexpr(6.283185307179586)
INV_TWO_PI = tl.constexpr(0.15915494309189535)
# The phase l w of a tile (`_phase_terms`): 2 pi = TWO_PI_HI + TWO_PI_LO with TWO_PI_HI = 12868 / 2^11, so k TWO_PI_HI
# is exact in float32 for k < 2^10; the rate's high part is a multiple of 2^-RATE_BITS (14 significant bits), so
# its product with a lag offset i < 2^10 (BLOCK_L <= 1024) is exact too.
TWO_PI_HI = tl.constexpr(6.283203125)
TWO_PI_LO = tl.constexpr(-1.7817820413768004e-05)
RATE_SCALE = tl.constexpr(4096.0)  # 2^RATE_BITS, RATE_BITS = 12
REAL_TRANSFORM_CODES = {"exp": 0, "relu": 1, "none": 2}  # s4d.REAL_TRANSFORMS
DT_TRANSFORM_CODES = {"exp": 0, "softplus": 1}  # s4d.DT_TRANSFORMS

# Per target, the launches whose default of 4 warps per program spills, and the warps they take instead:
# {(compute capability, kernel, BLOCK_M): num_warps}; a minor revision (sm_121) takes its family's entry.
# sm_120's ptxas (48 warps per SM) puts `_backward_lags` at BLOCK_M 16, BLOCK_L 64 in 80 registers to keep 24 warps
# resident and spills 16 bytes per thread; with 8 warps the tile is 4 elements per thread, 60 registers, no spill,
# 32 warps per SM (the other targets fit it in 80 or 96 registers at 4 warps without a spill and keep them). Same
# tiles and grid on every target (benchmarks/README.md, "Compiled kernels").
WARPS = {(120, "_backward_lags", 16): 8}
DEFAULT_WARPS = 4

# Set by `ssmbench bench` to count launches: called with the kernel's name, its context manager wraps the launch.
launch_observer: Callable[[str], ContextManager] | None = None
# The compute capability (10 major + minor) launches are made for when the tensors are not on a CUDA device: set by
# `triton_compile.capturing` to the target it captures for; None (the interpreter) takes the default warps.
target_capability: int | None = None


def block_lags(block_m: int, tile: int, most: int) -> int:
    """Lags per program for BLOCK_M modes: tile / BLOCK_M, a power of two between 16 and `most`."""
    return max(16, min(most, tile // block_m))


def capability(device: torch.device) -> int | None:
    """The compute capability the kernels are launched for: the CUDA device's own, else `target_capability`."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return 10 * major + minor
    return target_capability


def num_warps(kernel: str, block_m: int, cc: int | None) -> int:
    """Warps per program of `kernel` at BLOCK_M modes on compute capability `cc`: `WARPS` of `cc`, else of its
    family's first revision (sm_121 takes sm_120's), else DEFAULT_WARPS."""
    if cc is None:
        return DEFAULT_WARPS
    return WARPS.get((cc, kernel, block_m), WARPS.get((cc - cc % 10, kernel, block_m), DEFAULT_WARPS))


def _launch(kernel, grid: tuple, *args, **meta) -> None:
    """kernel[grid](*args, **meta), seen by `launch_observer` when one is set."""
    with nullcontext() if launch_observer is None else launch_observer(kernel.fn.__name__):
        kernel[grid](*args, **meta)


@triton.jit
def _cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


@triton.jit
def _cdiv(ar, ai, br, bi):
    d = br * br + bi * bi
    return (ar * br + ai * bi) / d, (ai * br - ar * bi) / d


@triton.jit
def _atan2(y, x, FLOAT64: tl.constexpr = False):
    """atan2 in float32: atan of t = min/max(|x|, |y|) in [0, 1], reduced to |t| <= tan(pi/8) and a degree-9 odd
    polynomial (relative error ~1e-7), then mapped to the octant and quadrant of (x, y). FLOAT64 (float64 y, x):
    one more reduction, atan(t) = 2 atan(u), u = t / (1 + sqrt(1 + t^2)), |u| <= 0.2, and the Taylor series of
    atan(u) to u^21 (truncation error < 2e-18)."""
    ax = tl.abs(x)
    ay = tl.abs(y)
    big = tl.maximum(ax, ay)
    t = tl.minimum(ax, ay) / tl.where(big == 0.0, 1.0, big)
    reduce = t > 0.41421356237309503
    t = tl.where(reduce, (t - 1.0) / (t + 1.0), t)
    t2 = t * t
    if FLOAT64:
        u = t / (1.0 + tl.sqrt(1.0 + t2))
        v = u * u
        p = ((((1 / 21 * v - 1 / 19) * v + 1 / 17) * v - 1 / 15) * v + 1 / 13) * v - 1 / 11
        r = 2.0 * u * (((((p * v + 1 / 9) * v - 1 / 7) * v + 1 / 5) * v - 1 / 3) * v + 1.0)
    else:
        r = (((0.0805374449538 * t2 - 0.138776856032) * t2 + 0.199777106478) * t2 - 0.333329491539) * t2 * t + t
    r = tl.where(reduce, r + 0.7853981633974483, r)
    r = tl.where(ay > ax, 1.5707963267948966 - r, r)
    r = tl.where(x < 0.0, 3.141592653589793 - r, r)
    return tl.where(y < 0.0, -r, r)


@triton.jit
def _log1p(u):
    """log(1 + u) without cancellation (log(w) u / (w - 1), w = 1 + u rounded)."""
    w = 1.0 + u
    return tl.where(w == 1.0, u, tl.log(w) * u / tl.where(w == 1.0, 1.0, w - 1.0))


@triton.jit
def _hstep(pr, pi, zr, zi, c):
    """One Horner step p z + c for complex p, z and a real coefficient c."""
    return pr * zr - pi * zi + c, pr * zi + pi * zr


@triton.jit
def _horner(zr, zi, c0, c1, c2, c3, c4, c5, c6, c7, c8):
    """sum_k c_k z^k for complex z, k = 0..8."""
    pr, pi = _hstep(tl.zeros_like(zr) + c8, tl.zeros_like(zi), zr, zi, c7)
    pr, pi = _hstep(pr, pi, zr, zi, c6)
    pr, pi = _hstep(pr, pi, zr, zi, c5)
    pr, pi = _hstep(pr, pi, zr, zi, c4)
    pr, pi = _hstep(pr, pi, zr, zi, c3)
    pr, pi = _hstep(pr, pi, zr, zi, c2)
    pr, pi = _hstep(pr, pi, zr, zi, c1)
    return _hstep(pr, pi, zr, zi, c0)


@triton.jit
def _phi1(zr, zi):
    """(phi1(z), phi1'(z)) with phi1 = (e^z - 1)/z and phi1' = (e^z - phi1)/z, as four reals. For |z| < 1/2, where
    the quotients cancel, their Taylor series: phi1 = sum_k z^k/(k+1)!, phi1' = sum_k (k+1) z^k/(k+2)!, k <= 8."""
    small = zr * zr + zi * zi < 0.25
    sr, si = _horner(zr, zi, 1.0, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040, 1 / 40320, 1 / 362880)
    dr, di = _horner(zr, zi, 1 / 2, 2 / 6, 3 / 24, 4 / 120, 5 / 720, 6 / 5040, 7 / 40320, 8 / 362880, 9 / 3628800)
    mag = tl.exp(zr)
    er = mag * tl.cos(zi)
    ei = mag * tl.sin(zi)
    safe_r = tl.where(small, 1.0, zr)
    safe_i = tl.where(small, 0.0, zi)
    qr, qi = _cdiv(er - 1.0, ei, safe_r, safe_i)
    phi_r = tl.where(small, sr, qr)
    phi_i = tl.where(small, si, qi)
    qr, qi = _cdiv(er - phi_r, ei - phi_i, safe_r, safe_i)
    return phi_r, phi_i, tl.where(small, dr, qr), tl.where(small, di, qi)


@triton.jit
def _parameters(a_re_ptr, a_im_ptr, lin_ptr, log_dt_ptr, b_ptr, s, h, M, offs_m, mask_m,
                REAL: tl.constexpr, DT: tl.constexpr):
    """Channel h (shared row s): A^re, A^im, dA^re/dA_re, dt, d dt/d log_dt, B^re, B^im."""
    raw = tl.load(a_re_ptr + s * M + offs_m, mask=mask_m, other=0.0)
    if REAL == 0:
        neg_re = tl.exp(raw)
        slope = neg_re
    elif REAL == 1:
        neg_re = tl.maximum(raw, 0.0) + 1e-4
        slope = tl.where(raw > 0.0, 1.0, 0.0)
    else:
        neg_re = raw
        slope = tl.zeros_like(raw) + 1.0
    linear = tl.load(lin_ptr + s) != 0
    neg_re = tl.where(linear, raw, neg_re)
    slope = tl.where(linear, 1.0, slope)
    a_im = tl.load(a_im_ptr + s * M + offs_m, mask=mask_m, other=0.0)
    x = tl.load(log_dt_ptr + h)
    if DT == 0:
        dt = tl.exp(x)
        dt_slope = dt
    else:  # softplus with torch's threshold 20 (identity above)
        e = tl.exp(tl.minimum(x, 20.0))
        dt = tl.where(x > 20.0, x, _log1p(e))
        dt_slope = tl.where(x > 20.0, 1.0, e / (1.0 + e))
    b_re = tl.load(b_ptr + (s * M + offs_m) * 2, mask=mask_m, other=0.0)
    b_im = tl.load(b_ptr + (s * M + offs_m) * 2 + 1, mask=mask_m, other=0.0)
    return -neg_re, a_im, -slope, dt, dt_slope, b_re, b_im


@triton.jit
def _discretize(a_re, a_im, dt, b_re, b_im, max_re, ZOH: tl.constexpr):
    """(a^re clamped at max_re, a^im, B_bar^re, B_bar^im): ZOH or bilinear of the continuous A, B with step dt."""
    zr = dt * a_re
    zi = dt * a_im
    if ZOH:
        phi_r, phi_i, _, _ = _phi1(zr, zi)
        bb_r, bb_i = _cmul(phi_r, phi_i, b_re, b_im)
        lr = zr
        li = zi
    else:
        qr, qi = _cdiv(1.0 + zr / 2, zi / 2, 1.0 - zr / 2, -zi / 2)
        # log |q| = log(1 + 2 z^re / |1 - z/2|^2) / 2: exactly 0 on an undamped mode (log |q|^2 is off by ~1e-7,
        # a factor e^{1e-7 l} at lag l)
        lr = 0.5 * _log1p(2.0 * zr / ((1.0 - zr / 2) * (1.0 - zr / 2) + zi * zi / 4))
        li = _atan2(qi, qr)
        bb_r, bb_i = _cdiv(b_re, b_im, 1.0 - zr / 2, -zi / 2)
    return tl.minimum(lr, max_re), li, dt * bb_r, dt * bb_i


@triton.jit
def _phase_rate(a_re, a_im, log_dt_ptr, h, DT: tl.constexpr, ZOH: tl.constexpr):
    """w = Im(log A_bar) in float64 from the float32 parameters (a_re, a_im: the continuous A; dt from log_dt[h]).
    ZOH: w = dt Im(A). Bilinear: w = arg((1 + z/2)/(1 - z/2)) = atan2(z^im, 1 - |z|^2/4). A float32 w is off by
    ~6e-8 w: ~1e-2 rad of phase at lag 16384 on an undamped mode."""
    x = tl.load(log_dt_ptr + h).to(tl.float64)
    if DT == 0:
        dt = tl.exp(x)
    else:
        dt = tl.where(x > 20.0, x, _log1p(tl.exp(tl.minimum(x, 20.0))))
    zi = dt * a_im.to(tl.float64)
    if ZOH:
        w = zi
    else:
        zr = dt * a_re.to(tl.float64)
        w = _atan2(zi, 1.0 - (zr * zr + zi * zi) / 4, True)
    return w


@triton.jit
def _phase_terms(a_re, rate, start, BLOCK_L: tl.constexpr):
    """E = exp(l a^re), cos(l w), sin(l w) for the lags l = start + i, i < BLOCK_L, of a (BLOCK_M, BLOCK_L) tile;
    w = Im(log A_bar) in float64 (`_phase_rate`). The phase is reduced to [-pi, pi] without a float32 product of
    size l w: theta0 = start w mod 2 pi and r = w mod 2 pi = r_hi + r_lo in float64 (per mode), then
    l w = theta0 + i r_hi + i r_lo (mod 2 pi), i r_hi exact in float32, k 2 pi subtracted in two exact-ish parts."""
    lags = start + tl.arange(0, BLOCK_L)
    mag = tl.exp(a_re[:, None] * lags.to(tl.float32)[None, :])
    theta0 = rate * start.to(tl.float64)
    theta0 = (theta0 - TWO_PI * tl.floor(theta0 * INV_TWO_PI + 0.5)).to(tl.float32)
    r = rate - TWO_PI * tl.floor(rate * INV_TWO_PI + 0.5)
    r_hi = tl.floor(r * RATE_SCALE + 0.5) / RATE_SCALE
    r_lo = (r - r_hi).to(tl.float32)
    i = tl.arange(0, BLOCK_L).to(tl.float32)[None, :]
    hi = r_hi.to(tl.float32)[:, None] * i
    k = tl.floor((hi + theta0[:, None]) * INV_TWO_PI + 0.5)
    phase = (hi - k * TWO_PI_HI) + theta0[:, None] - k * TWO_PI_LO + r_lo[:, None] * i
    return mag, tl.cos(phase), tl.sin(phase)


@triton.jit
def _position(c, h, offs_l, N, stride_c, stride_h, stride_l, COMBINE: tl.constexpr):
    """Offset of K_{c,h,l} in a (c, H, N) tensor with these strides, or with COMBINE in the (H, N) filter: direction
    0 at index l, direction 1 (anti-causal, lag -(l+1)) at index N - 1 - l."""
    if not COMBINE:
        return c * stride_c + h * stride_h + offs_l * stride_l
    if c == 0:
        return h * stride_h + offs_l * stride_l
    return h * stride_h + (N - 1 - offs_l) * stride_l


@triton.jit(do_not_specialize=["L", "N"])  # no variant per sequence length: the recipe fixes the compiled set
def _forward(a_re_ptr, a_im_ptr, lin_ptr, log_dt_ptr, b_ptr, c_ptr, d_ptr, k_ptr, S, H, M, L, N, scale, max_re,
             C: tl.constexpr, REAL: tl.constexpr, DT: tl.constexpr, ZOH: tl.constexpr, COMBINE: tl.constexpr,
             HAS_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_L: tl.constexpr):
    """One block of lags of channel h; with COMBINE the blocks past L write the zeros of the filter's middle."""
    h = tl.program_id(0)
    offs_l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    if tl.program_id(1) * BLOCK_L >= L:  # only with COMBINE: indices L .. N - (C-1) L - 1 are 0
        tl.store(k_ptr + h * N + offs_l, tl.zeros([BLOCK_L], dtype=tl.float32), mask=offs_l < N - (C - 1) * L)
    else:
        offs_m = tl.arange(0, BLOCK_M)
        mask_m = offs_m < M
        a_re, a_im, _, dt, _, b_re, b_im = _parameters(a_re_ptr, a_im_ptr, lin_ptr, log_dt_ptr, b_ptr, h % S, h, M,
                                                       offs_m, mask_m, REAL, DT)
        rate = _phase_rate(a_re, a_im, log_dt_ptr, h, DT, ZOH)
        la_re, la_im, bb_re, bb_im = _discretize(a_re, a_im, dt, b_re, b_im, max_re, ZOH)
        mag, cos, sin = _phase_terms(la_re, rate, tl.program_id(1) * BLOCK_L, BLOCK_L)
        for c in tl.static_range(C):
            cw = (c * H + h) * M + offs_m
            c_re = tl.load(c_ptr + cw * 2, mask=mask_m, other=0.0)  # padded modes: C = 0, so W = 0
            c_im = tl.load(c_ptr + cw * 2 + 1, mask=mask_m, other=0.0)
            w_re, w_im = _cmul(c_re, c_im, bb_re, bb_im)
            k = tl.sum(mag * (w_re[:, None] * cos - w_im[:, None] * sin), axis=0) * scale
            if HAS_D and c == 0:
                k += tl.where(offs_l == 0, tl.load(d_ptr + h), 0.0)
            if COMBINE and c == 0:  # direction 0 also writes the zeros after lag L - 1 in this block
                k = tl.where(offs_l < L, k, 0.0)
                mask = offs_l < N - (C - 1) * L
            else:
                mask = offs_l < L
            tl.store(k_ptr + _position(c, h, offs_l, N, H * N, N, 1, COMBINE), k, mask=mask)


@triton.jit(do_not_specialize=["L", "N", "g_stride_c", "g_stride_h"])
def _backward_lags(a_re_ptr, a_im_ptr, lin_ptr, log_dt_ptr, b_ptr, c_ptr, g_ptr, partial_ptr, S, H, M, L, N,
                   g_stride_c, g_stride_h, g_stride_l, scale, max_re, C: tl.constexpr, REAL: tl.constexpr,
                   DT: tl.constexpr, ZOH: tl.constexpr, COMBINE: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_L: tl.constexpr):
    """Partial sums of one block of lags b into partial[b, row, h, :] of a (blocks, 2C + 2, H, M) tensor: rows c and
    C + c for dW^re and dW^im of direction c, rows 2C and 2C + 1 for da^re and da^im."""
    h = tl.program_id(0)
    b = tl.program_id(1)
    offs_l = b * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    a_re, a_im, _, dt, _, b_re, b_im = _parameters(a_re_ptr, a_im_ptr, lin_ptr, log_dt_ptr, b_ptr, h % S, h, M,
                                                   offs_m, mask_m, REAL, DT)
    la_re, la_im, bb_re, bb_im = _discretize(a_re, a_im, dt, b_re, b_im, max_re, ZOH)
    lags = offs_l.to(tl.float32)
    mag, cos, sin = _phase_terms(la_re, _phase_rate(a_re, a_im, log_dt_ptr, h, DT, ZOH), b * BLOCK_L, BLOCK_L)
    ga_re = tl.zeros([BLOCK_M], dtype=tl.float32)
    ga_im = tl.zeros([BLOCK_M], dtype=tl.float32)
    for c in tl.static_range(C):
        g = tl.load(g_ptr + _position(c, h, offs_l, N, g_stride_c, g_stride_h, g_stride_l, COMBINE), mask=offs_l < L,
                    other=0.0)
        ge = g[None, :] * mag  # (BLOCK_M, BLOCK_L)
        ge_cos = ge * cos
        ge_sin = ge * sin
        cw = (c * H + h) * M + offs_m
        c_re = tl.load(c_ptr + cw * 2, mask=mask_m, other=0.0)
        c_im = tl.load(c_ptr + cw * 2 + 1, mask=mask_m, other=0.0)
        w_re, w_im = _cmul(c_re, c_im, bb_re, bb_im)
        gw = (b * (2 * C + 2) + c) * H * M + h * M + offs_m
        tl.store(partial_ptr + gw, tl.sum(ge_cos, axis=1) * scale, mask=mask_m)
        tl.store(partial_ptr + gw + C * H * M, -tl.sum(ge_sin, axis=1) * scale, mask=mask_m)
        l_cos = tl.sum(ge_cos * lags[None, :], axis=1)
        l_sin = tl.sum(ge_sin * lags[None, :], axis=1)
        ga_re += w_re * l_cos - w_im * l_sin
        ga_im += -w_re * l_sin - w_im * l_cos
    ga = (b * (2 * C + 2) + 2 * C) * H * M + h * M + offs_m
    tl.store(partial_ptr + ga, ga_re * scale, mask=mask_m)
    tl.store(partial_ptr + ga + H * M, ga_im * scale, mask=mask_m)


@triton.jit(do_not_specialize=["g_stride_h"])
def _backward_parameters(a_re_ptr, a_im_ptr, lin_ptr, log_dt_ptr, b_ptr, c_ptr, g_ptr, partial_ptr, g_a_ptr, g_b_ptr,
                         g_log_dt_ptr, g_c_ptr, g_d_ptr, g_stride_h, S, H, M, C: tl.constexpr, HAS_D: tl.constexpr,
                         REAL: tl.constexpr, DT: tl.constexpr, ZOH: tl.constexpr, BLOCK_M: tl.constexpr):
    """Gradients of channel h's raw parameters from the lag sums (2C + 2, H, M) of `_backward_lags`, summed over the
    blocks (module docstring): log_dt[h], C[:, h], D[h], and channel h's share of the gradients of its row
    s = h mod n_ssm: g_a[0, h], g_a[1, h] of a (2, H, M) tensor for A_re, A_im; g_b[h] of an (H, M, 2) one for B."""
    h = tl.program_id(0)
    s = h % S
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    a_re, a_im, re_slope, dt, dt_slope, b_re, b_im = _parameters(a_re_ptr, a_im_ptr, lin_ptr, log_dt_ptr, b_ptr,
                                                                 s, h, M, offs_m, mask_m, REAL, DT)
    zr = dt * a_re
    zi = dt * a_im
    # dLoss/d log A_bar (the clamp is straight-through) and g_Bbar = sum_c dW conj(C); dC = dW conj(B_bar)
    ga = 2 * C * H * M + h * M + offs_m
    gz_re = tl.load(partial_ptr + ga, mask=mask_m, other=0.0)
    gz_im = tl.load(partial_ptr + ga + H * M, mask=mask_m, other=0.0)
    if ZOH:
        phi_r, phi_i, dphi_r, dphi_i = _phi1(zr, zi)
        bb_r, bb_i = _cmul(phi_r, phi_i, b_re, b_im)  # B_bar / dt
        db_r, db_i = _cmul(dphi_r, dphi_i, b_re, b_im)  # dB_bar/dz / dt
        dbar_r = dt * phi_r  # dB_bar/dB
        dbar_i = dt * phi_i
    else:
        den_r = 1.0 - zr / 2
        den_i = -zi / 2
        inv_r, inv_i = _cdiv(1.0, 0.0, den_r, den_i)
        bb_r, bb_i = _cmul(b_re, b_im, inv_r, inv_i)  # B_bar / dt
        sq_r, sq_i = _cmul(inv_r, inv_i, inv_r, inv_i)
        db_r, db_i = _cmul(b_re, b_im, 0.5 * sq_r, 0.5 * sq_i)  # dB_bar/dz / dt
        dbar_r = dt * inv_r
        dbar_i = dt * inv_i
        # d log A_bar / dz = 1 / (1 - z^2/4): g_z starts as da conj(1 / (1 - z^2/4))
        z2_r, z2_i = _cmul(zr, zi, zr, zi)
        dl_r, dl_i = _cdiv(1.0, 0.0, 1.0 - z2_r / 4, -z2_i / 4)
        gz_re, gz_im = _cmul(gz_re, gz_im, dl_r, -dl_i)
    g_bb_re = tl.zeros([BLOCK_M], dtype=tl.float32)
    g_bb_im = tl.zeros([BLOCK_M], dtype=tl.float32)
    for c in tl.static_range(C):
        gw = c * H * M + h * M + offs_m
        gw_re = tl.load(partial_ptr + gw, mask=mask_m, other=0.0)
        gw_im = tl.load(partial_ptr + gw + C * H * M, mask=mask_m, other=0.0)
        cw = (c * H + h) * M + offs_m
        c_re = tl.load(c_ptr + cw * 2, mask=mask_m, other=0.0)
        c_im = tl.load(c_ptr + cw * 2 + 1, mask=mask_m, other=0.0)
        gc_re, gc_im = _cmul(gw_re, gw_im, dt * bb_r, -dt * bb_i)
        tl.store(g_c_ptr + cw * 2, gc_re, mask=mask_m)
        tl.store(g_c_ptr + cw * 2 + 1, gc_im, mask=mask_m)
        t_re, t_im = _cmul(gw_re, gw_im, c_re, -c_im)
        g_bb_re += t_re
        g_bb_im += t_im
    g_b_re, g_b_im = _cmul(g_bb_re, g_bb_im, dbar_r, -dbar_i)
    t_re, t_im = _cmul(g_bb_re, g_bb_im, dt * db_r, -dt * db_i)
    gz_re += t_re
    gz_im += t_im
    # dLoss/d dt: through z = dt A and the explicit factor dt (ZOH) or dt/(1 - z/2) (bilinear) of B_bar
    g_dt = tl.sum(gz_re * a_re + gz_im * a_im + g_bb_re * bb_r + g_bb_im * bb_i, axis=0)
    tl.store(g_log_dt_ptr + h, g_dt * dt_slope)
    if HAS_D:  # D sits at lag 0 of the filter
        tl.store(g_d_ptr + h, tl.load(g_ptr + h * g_stride_h))
    tl.store(g_a_ptr + h * M + offs_m, dt * gz_re * re_slope, mask=mask_m)
    tl.store(g_a_ptr + (H + h) * M + offs_m, dt * gz_im, mask=mask_m)
    tl.store(g_b_ptr + (h * M + offs_m) * 2, g_b_re, mask=mask_m)
    tl.store(g_b_ptr + (h * M + offs_m) * 2 + 1, g_b_im, mask=mask_m)


class _FusedS4DKernel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A_re: torch.Tensor, A_im: torch.Tensor, linear_real: torch.Tensor, log_dt: torch.Tensor,
                B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None, L: int, N: int | None,
                config: tuple) -> torch.Tensor:
        c, H, M, _ = C.shape
        combine = N is not None
        N = N if combine else L
        k = torch.empty((H, N) if combine else (c, H, L), device=C.device, dtype=torch.float32)
        filled = N - (c - 1) * L if combine else L  # the lags written by direction 0 (with the zeros)
        scale, max_re, meta = config
        block_m = triton.next_power_of_2(M)
        block_l = block_lags(block_m, FORWARD_TILE, MAX_BLOCK_L)
        _launch(_forward, (H, triton.cdiv(filled, block_l)), A_re, A_im, linear_real, log_dt, B, C, D, k,
                A_re.shape[0], H, M, L, N, scale, max_re, C=c, **meta, COMBINE=combine, HAS_D=D is not None,
                BLOCK_M=block_m, BLOCK_L=block_l, num_warps=num_warps("_forward", block_m, capability(C.device)))
        ctx.save_for_backward(A_re, A_im, linear_real, log_dt, B, C)
        ctx.L, ctx.N, ctx.combine, ctx.has_d, ctx.config = L, N, combine, D is not None, config
        return k

    @staticmethod
    def backward(ctx, grad_k: torch.Tensor):
        A_re, A_im, linear_real, log_dt, B, C = ctx.saved_tensors
        (c, H, M, _), S, (scale, max_re, meta) = C.shape, A_re.shape[0], ctx.config
        block_m = triton.next_power_of_2(M)
        block_l = block_lags(block_m, BACKWARD_TILE if meta["ZOH"] else BILINEAR_BACKWARD_TILE, MAX_BLOCK_L_BACKWARD)
        blocks = triton.cdiv(ctx.L, block_l)
        partial = torch.empty(blocks, 2 * c + 2, H, M, device=C.device, dtype=torch.float32)
        params = (A_re, A_im, linear_real, log_dt, B, C)
        grad_k = grad_k.float()  # read in place, with its strides (rfft's backward gives a strided one)
        strides = grad_k.stride() if not ctx.combine else (0, *grad_k.stride())
        _launch(_backward_lags, (H, blocks), *params, grad_k, partial, S, H, M, ctx.L, ctx.N, *strides, scale, max_re,
                C=c, **meta, COMBINE=ctx.combine, BLOCK_M=block_m, BLOCK_L=block_l,
                num_warps=num_warps("_backward_lags", block_m, capability(C.device)))
        partial = partial.sum(0)  # (2c + 2, H, M): one reduction over the blocks of lags
        # channel h's share of the gradients of its row of A (A_re, A_im) and of B, contiguous like the parameters
        g_a = torch.empty(2, H, M, device=C.device, dtype=torch.float32)
        g_b = torch.empty(H, M, 2, device=C.device, dtype=torch.float32)
        g_log_dt, g_c = torch.empty_like(log_dt), torch.empty_like(C)
        g_d = torch.empty_like(log_dt) if ctx.has_d else None
        _launch(_backward_parameters, (H,), *params, grad_k, partial, g_a, g_b, g_log_dt, g_c, g_d, strides[1], S, H,
                M, C=c, HAS_D=ctx.has_d, **meta, BLOCK_M=block_m,
                num_warps=num_warps("_backward_parameters", block_m, capability(C.device)))
        if S < H:  # channel h = r S + s uses row s: sum over r
            g_a, g_b = g_a.view(2, H // S, S, M).sum(1), g_b.view(H // S, S, M, 2).sum(0)
        g_a_re, g_a_im = g_a
        return g_a_re, g_a_im, None, g_log_dt, g_b, g_c, g_d, None, None, None


def fused_s4d_kernel(A_re: torch.Tensor, A_im: torch.Tensor, linear_real: torch.Tensor, log_dt: torch.Tensor,
                     B: torch.Tensor, C: torch.Tensor, L: int, real_transform: str, dt_transform: str,
                     discretization: str, conjugate_pairs: bool, max_log_growth: float, n_fft: int | None = None,
                     D: torch.Tensor | None = None) -> torch.Tensor:
    """The S4D kernel K from an S4D layer's float32 parameters: A_re, A_im (n_ssm, M), linear_real (n_ssm,) bool,
    log_dt (H,), B (n_ssm, M, 2) and C (c, H, M, 2) (real views of complex tensors).

    Without n_fft: K, real float32 (c, H, L). With n_fft >= c L: the convolution filter of length n_fft, (H, n_fft),
    that `kernels.bidirectional_kernel` makes of K (direction 0 at lags 0..L-1, direction 1 at index n_fft - 1 - l,
    zeros between), plus D (H,) at lag 0 when given (its rfft is D at every bin)."""
    if discretization not in ("zoh", "bilinear"):
        raise ValueError(f"unknown discretization {discretization!r}; known: zoh, bilinear")
    if n_fft is None and D is not None:
        raise ValueError("fused_s4d_kernel: D is added to the filter of length n_fft; give n_fft")
    meta = {"REAL": REAL_TRANSFORM_CODES[real_transform], "DT": DT_TRANSFORM_CODES[dt_transform],
            "ZOH": discretization == "zoh"}
    config = (2.0 if conjugate_pairs else 1.0, max_log_growth / L, meta)
    params = (p.contiguous() for p in (A_re, A_im, linear_real, log_dt, B, C))
    return _FusedS4DKernel.apply(*params, None if D is None else D.contiguous(), L, n_fft, config)
