"""STU and AR-STU: spectral state space layers with fixed Hankel filters (docs/methods.md §E; Agarwal, Suo, Chen, Hazan).

With the top-K eigenpairs (sigma_k, phi_k) of the L x L Hankel matrix (`ssmbench.models.hankel`), lags i >= 0
and u_t = 0 for t <= 0, the features are
    X+_{t,k} = sum_i phi_k(i) u_{t-i},        X-_{t,k} = sum_i (-1)^i phi_k(i) u_{t-i},
and the STU output is
    y_t = [y_{t-2}] + sum_{i=1}^{k_u} M^u_i u_{t+1-i} + sum_k sigma_k^(1/4) (M^{phi+}_k X+_{t-2,k} + M^{phi-}_k X-_{t-2,k}).
The bracketed term is `y_term`: "none" (the default, what google-deepmind/spectral_ssm trains: its STU has no fixed
y term, `learnable_m_y: False`) or "fixed" (Eq. 4 read literally: coefficient 1, a running sum of every second
step whose gain grows like L/2; it suits the marginally stable LDS it was derived for).
With the alternative Hankel matrix Z_L (`hankel: l`, App. B) only the X+ branch exists.

Everything except the y_{t-2} term is one causal convolution with a bank of R = k_u + 2K fixed scalar filters
(`filter_bank`: unit impulses at lags 0..k_u-1, then sigma^(1/4) phi_k and sigma^(1/4) (-1)^i phi_k delayed by 2),
each mixing channels by its own matrix. So the layer applies the matrix transfer function
W(f) = sum_r FFT(tap_r)(f) M_r to one FFT of the input, instead of materializing the (B, L, 2K, H) features.
`SpectralMix` builds W one block of frequencies at a time, in the forward and again in the backward, so neither
the whole complex (L+1, H, H) tensor nor its gradient ever exists (8.6 GB each at L = 16384, H = 256): the layer
saves only U(f), and its extra memory is one block of W. The FFTs run in float32 even under autocast, like S4D.

`mixing: tensordot` (an approximation, after Flash-STU's tensordot option) restricts every M^{phi+-}_k to
diag(m^+-_k) P: one shared projection P (H_out x H_in) and per-filter channel weights m^+-_k (H_out). What is
approximated: the transfer matrix of the phi filters, sum_k sigma_k^(1/4) (FFT(phi+_k)(f) M^{phi+}_k + ...), a
general H x H matrix at every frequency f, becomes diag(Psi(f)) P, one fixed matrix P scaled row by row by a
per-channel frequency response; 2K H^2 parameters become H^2 + 2K H. The spectral term is then one depthwise
causal convolution of P u:
    z_t = sum_{i=1}^{k_u} M^u_i u_{t+1-i} + sum_lag psi_h(lag) (P u)_{t-lag, h},
    psi_h(lag) = sum_k sigma_k^(1/4) (m^+_{k,h} phi_k(lag-2) + m^-_{k,h} (-1)^(lag-2) phi_k(lag-2)),
in O(B L H log L + B L H^2 + L H K) time and O(B L H) memory (`STU.tensordot_spectral`). The k_u terms M^u stay
full matrices. Initialization: P as nn.Linear's default (uniform, bound 1/sqrt(H_in)) and m = 0, so that the
spectral term starts at 0 as with the exact layer's zero M^phi, while the gradient of m (through P != 0) is nonzero
from the first step and P's follows once m moves; with P = 0 as well, both gradients would stay 0 forever.

AR-STU (Eq. 6) learns the y terms instead: y_t = sum_{i=1}^{k_y} M^y_i y_{t-i} + (the rest of Eq. 4), computed
exactly by a chunked scan (`ar_scan`): sqrt(L)-scale sequential steps instead of L.

Initialization (docs/methods.md §E "Initialization"): as the official code, M^phi = 0, M^u from a normal
truncated to +-2 standard deviations and scaled by 1/sqrt(H) (`m_u_init: truncated-normal`; `zero` is App. C.2's
all-zero start), and M^y = 0, learned from zero (`ar_init: 0.0`); `ar_init: 1.0` sets M^y_2 = I, the literal
Eq. 4 term (AR-STU then equals STU with `y_term: fixed` at initialization). M^y gets its own absolute learning
rate (`ar_lr`; the official code's 5e-5 is 0.1 x its lr) and no weight decay, as the official optimizer.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmbench.errors import SSMBenchError
from ssmbench.models.hankel import VARIANTS, spectral_filters
from ssmbench.models.kernels import fft_conv, fft_size
from ssmbench.models.s4d import tag_optim
from ssmbench.registry import LAYERS


def filter_bank(sigma: torch.Tensor, phi: torch.Tensor, k_u: int, negative: bool) -> torch.Tensor:
    """The R fixed causal filters of Eq. 4 as rows of taps (R, L) over lags 0..L-1 (R = k_u + K or k_u + 2K).

    Rows 0..k_u-1: unit impulses at lags 0..k_u-1 (the M^u terms). Then sigma_k^(1/4) phi_k(lag - 2), and if
    `negative` sigma_k^(1/4) (-1)^(lag-2) phi_k(lag - 2): the X+_{t-2} and X-_{t-2} features.
    """
    L, K = phi.shape
    scaled = (phi * sigma.clamp(min=0) ** 0.25).T  # (K, L)
    rows = [torch.eye(k_u, L, dtype=phi.dtype), F.pad(scaled, (2, 0))[:, :L]]
    if negative:
        alternating = 1.0 - 2.0 * (torch.arange(L, dtype=phi.dtype) % 2)  # (-1)^i
        rows.append(F.pad(scaled * alternating, (2, 0))[:, :L])
    return torch.cat(rows)


def lag2_cumsum(z: torch.Tensor) -> torch.Tensor:
    """y_t = y_{t-2} + z_t with y = 0 before the start, along dim 1 of (B, L, H): cumulative sums of the even and
    of the odd time steps."""
    B, L, H = z.shape
    zp = F.pad(z, (0, 0, 0, L % 2))
    return zp.reshape(B, -1, 2, H).cumsum(dim=1).reshape(B, -1, H)[:, :L]


def lag_matrix(M: torch.Tensor) -> torch.Tensor:
    """(k H, H): M_k^T, ..., M_1^T stacked, so that y_t^T = (y_{t-k}^T, ..., y_{t-1}^T) @ lag_matrix(M) for z = 0."""
    k, H = M.shape[0], M.shape[-1]
    return M.transpose(1, 2).flip(0).reshape(k * H, H)


def ar_loop(z: torch.Tensor, M: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor:
    """y_t = z_t + sum_{i=1}^{k} M_i y_{t-i} along dim 1 of z (N, T, H), one time step after the other; the k
    outputs before the start are `init` (N, k, H), oldest first (zeros if None).

    The (N, k + T, H) buffer starts as (init, z); each step adds, in place, one (N, k H) x (k H, H) product to z_t,
    whose left factor is a view of the k previous outputs (one kernel per step, no copies).
    """
    N, T, H = z.shape
    k = M.shape[0]
    y = torch.cat([z.new_zeros(N, k, H) if init is None else init, z], dim=1)
    lags = lag_matrix(M)
    for t in range(T):
        y[:, t + k].addmm_(y[:, t:t + k].reshape(N, k * H), lags)
    return y[:, k:]


def chunk_transition(M: torch.Tensor, T: int) -> torch.Tensor:
    """Phi = C^T (k H, k H): after T steps with z = 0, the window of the last k outputs (oldest first, flattened to
    a row) is w Phi for the window w before them. C is the companion matrix of one step, w' = w C: block (j+1, j)
    is I (the window shifts by one) and the last block column is `lag_matrix(M)` (the new output)."""
    k, H = M.shape[0], M.shape[-1]
    C = M.new_zeros(k * H, k * H)
    C[H:, :-H] = torch.eye((k - 1) * H, dtype=M.dtype, device=M.device)
    C[:, -H:] = lag_matrix(M)
    return torch.linalg.matrix_power(C, T)


def chunk_length(B: int, L: int, H: int, k: int) -> int:
    """The chunk length T of `ar_scan`: about sqrt(L / 2), which minimizes the 2T + L/T sequential steps, and at
    least k. L (one chunk: the plain loop) where the chunked scan does not pay: when the power of the (k H)^2
    companion matrix (~ 2 (k H)^3 log2 T flops) would cost more than one pass of the recurrence (2 B L k H^2)."""
    T = max(k, round(math.sqrt(L / 2)))
    if T >= L or k * k * H * math.log2(T) > B * L:
        return L
    return T


def ar_scan(z: torch.Tensor, M: torch.Tensor, reverse: bool = False, chunk: int | None = None) -> torch.Tensor:
    """y_t = z_t + sum_{i=1}^{k} M_i y_{t-i} (or y_{t+i} if `reverse`) along dim 1 of z (B, L, H); M (k, H, H).

    Exact chunked scan without autograd, with chunks of T >= k steps (T = `chunk`, or `chunk_length` if None;
    T >= L is the plain loop). With n = ceil(L / T) chunks and w_c the window of the last k outputs of chunk c:
    1. every chunk from a zero window, all n at once: T steps of a (B n, k H) x (k H, H) product, giving w0_c;
    2. the true windows in order, w_c = w0_c + w_{c-1} Phi (`chunk_transition`): n steps of (B, k H) x (k H, k H);
    3. every chunk again from its true initial window w_{c-1}, all at once: T steps, giving y.
    2T + n sequential steps instead of L. The outputs come from the recurrence itself (step 3), so powers of M
    enter only the carried windows, through Phi, whose entries stay bounded when the recurrence is stable.
    """
    if reverse:
        return ar_scan(z.flip(1), M, chunk=chunk).flip(1)
    B, L, H = z.shape
    k = M.shape[0]
    T = chunk_length(B, L, H, k) if chunk is None else chunk
    if T >= L:
        return ar_loop(z, M)
    if T < k:
        raise ValueError(f"ar_scan: the chunk length must be at least k = {k}; got {T}")
    n = -(-L // T)
    chunks = F.pad(z, (0, 0, 0, n * T - L)).reshape(B * n, T, H)
    last = ar_loop(chunks, M)[:, T - k:].reshape(B, n, k * H)  # w0_c
    Phi = chunk_transition(M, T)
    windows = [z.new_zeros(B, k * H)]  # the window before chunk c
    for c in range(n - 1):
        windows.append(torch.addmm(last[:, c], windows[-1], Phi))
    init = torch.stack(windows, dim=1).reshape(B * n, k, H)
    return ar_loop(chunks, M, init).reshape(B, n * T, H)[:, :L]


class OutputAutoregression(torch.autograd.Function):
    """y_t = z_t + sum_i M_i y_{t-i} (`ar_scan` with chunk length `chunk`, None: automatic) with a hand-written
    backward, so the scan leaves no autograd graph.

    Backward (the adjoint recurrence runs backwards in time): g_t = dL/dy_t + sum_i M_i^T g_{t+i};
    dL/dz_t = g_t;  dL/dM_i = sum_{b,t} g_t y_{t-i}^T.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, M: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        y = ar_scan(z, M, chunk=chunk)
        ctx.save_for_backward(y, M)
        ctx.chunk = chunk
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        y, M = ctx.saved_tensors
        k, L = M.shape[0], y.shape[1]
        g = ar_scan(grad_y, M.transpose(1, 2), reverse=True, chunk=ctx.chunk)
        grad_M = torch.stack([torch.einsum("bto,bti->oi", g[:, i:], y[:, :L - i]) for i in range(1, k + 1)])
        return g, grad_M, None


MIXINGS = ("full", "tensordot")
Y_TERMS = ("none", "fixed")  # STU's y_{t-2} term: absent (official code) or Eq. 4's, with coefficient 1
M_U_INITS = ("truncated-normal", "zero")
MIX_BLOCK_BYTES = 2**28  # bytes of one block of the transfer matrix W in `SpectralMix` (256 MiB)


def transfer_block(taps_f: torch.Tensor, M_t: torch.Tensor, H_in: int) -> torch.Tensor:
    """W(f) = sum_r taps_f(f, r) M_r^T for a block of c frequencies: (c, H_in, H_out) from taps_f (c, R) complex
    and M_t (R, H_in * H_out), the M_r^T flattened."""
    W = torch.complex(taps_f.real @ M_t, taps_f.imag @ M_t)
    return W.view(taps_f.shape[0], H_in, -1)


class SpectralMix(torch.autograd.Function):
    """Y(f) = U(f) W(f) with W(f) = sum_r taps_f(f, r) M_r^T, for U (F, B, H_in) complex, taps_f (F, R) complex
    (fixed), M (R, H_out, H_in) real; Y (F, B, H_out).

    W is built `block` frequencies at a time and dropped after use, in the forward and again in the backward
    (saved: U, taps_f, M), so the memory beyond U and Y is one block of W, whatever L. Backward, in PyTorch's
    convention for complex tensors (the gradient is the conjugate Wirtinger derivative):
    dL/dU(f) = dL/dY(f) W(f)^H,   dL/dM_r^T = sum_f Re(conj(taps_f(f, r)) U(f)^H dL/dY(f)).
    """

    @staticmethod
    def forward(ctx, u_f: torch.Tensor, taps_f: torch.Tensor, M: torch.Tensor, block: int) -> torch.Tensor:
        ctx.save_for_backward(u_f, taps_f, M)
        ctx.block = block
        R, H_out, H_in = M.shape
        M_t = M.transpose(1, 2).reshape(R, H_in * H_out)
        y_f = u_f.new_empty(u_f.shape[0], u_f.shape[1], H_out)
        for lo in range(0, u_f.shape[0], block):
            f = slice(lo, lo + block)
            torch.bmm(u_f[f], transfer_block(taps_f[f], M_t, H_in), out=y_f[f])
        return y_f

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        u_f, taps_f, M = ctx.saved_tensors
        R, H_out, H_in = M.shape
        M_t = M.transpose(1, 2).reshape(R, H_in * H_out)
        grad_u = torch.empty_like(u_f) if ctx.needs_input_grad[0] else None
        grad_M_t = torch.zeros_like(M_t) if ctx.needs_input_grad[2] else None
        for lo in range(0, u_f.shape[0], ctx.block):
            f = slice(lo, lo + ctx.block)
            if grad_u is not None:
                W = transfer_block(taps_f[f], M_t, H_in)
                torch.bmm(grad_y[f], W.transpose(1, 2).conj(), out=grad_u[f])
            if grad_M_t is not None:
                grad_W = torch.bmm(u_f[f].transpose(1, 2).conj(), grad_y[f]).flatten(1)  # (c, H_in * H_out)
                grad_M_t.addmm_(taps_f[f].real.T, grad_W.real).addmm_(taps_f[f].imag.T, grad_W.imag)
        grad_M = None if grad_M_t is None else grad_M_t.view(R, H_in, H_out).transpose(1, 2)
        return grad_u, None, grad_M, None


class STU(nn.Module):
    """STU block: (batch, length, d_model) -> (batch, length, d_model); STU -> GELU -> dropout -> Linear(H, 2H) -> GLU.

    `cache_dir`: folder of the on-disk filter cache (None: memory only). The filters are a cached attribute (not a
    buffer, not in the state dict), rebuilt when the sequence length or the layer's device changes.
    `mixing`: "full" (Eq. 4 exactly: parameters M_u, M_phi_plus, M_phi_minus) or "tensordot" (the approximation
    M^{phi+-}_k = diag(m^+-_k) P of the module docstring: parameters M_u, P (H, H), m_plus, m_minus (K, H); the
    M_phi_* attributes are None). `y_term`: "none" (the official code's STU) or "fixed" (Eq. 4's y_{t-2} term).
    `m_u_init`: "truncated-normal" (the official code: N(0, 1) truncated to [-2, 2], times 1/sqrt(H)) or "zero".
    """

    def __init__(self, d_model: int, k: int = 16, k_u: int = 3, hankel: str = "z", dropout: float = 0.0,
                 cache_dir: str | None = None, mixing: str = "full", y_term: str = "none",
                 m_u_init: str = "truncated-normal"):
        super().__init__()
        if hankel not in VARIANTS:
            raise ValueError(f"unknown Hankel variant {hankel!r}; known: {', '.join(VARIANTS)}")
        if mixing not in MIXINGS:
            raise ValueError(f"unknown STU mixing {mixing!r}; known: {', '.join(MIXINGS)}")
        if y_term not in Y_TERMS:
            raise ValueError(f"unknown STU y term {y_term!r}; known: {', '.join(Y_TERMS)}")
        if m_u_init not in M_U_INITS:
            raise ValueError(f"unknown M^u initialization {m_u_init!r}; known: {', '.join(M_U_INITS)}")
        H = d_model
        self.d_model, self.k, self.k_u, self.hankel, self.cache_dir = H, k, k_u, hankel, cache_dir
        self.y_term = y_term
        self.M_u = nn.Parameter(torch.zeros(k_u, H, H))
        if m_u_init == "truncated-normal":
            with torch.no_grad():
                nn.init.trunc_normal_(self.M_u, mean=0.0, std=1.0, a=-2.0, b=2.0).mul_(H ** -0.5)
        self.M_phi_plus = self.M_phi_minus = self.P = self.m_plus = self.m_minus = None
        if mixing == "full":
            self.M_phi_plus = nn.Parameter(torch.zeros(k, H, H))
            self.M_phi_minus = nn.Parameter(torch.zeros(k, H, H)) if hankel == "z" else None
        else:
            self.P = nn.Parameter(torch.empty(H, H).uniform_(-H**-0.5, H**-0.5))  # (H_out, H_in), nn.Linear's init
            self.m_plus = nn.Parameter(torch.zeros(k, H))
            self.m_minus = nn.Parameter(torch.zeros(k, H)) if hankel == "z" else None
        # A cache, not a buffer: DDP would broadcast a buffer (R x L float64) from rank 0 at every forward.
        self.taps: torch.Tensor | None = None

        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.output_linear = nn.Linear(H, 2 * H)
        self.glu = nn.GLU(dim=-1)

    def filters(self, L: int) -> torch.Tensor:
        """The (R, L) tap buffer for length L, float64 from the (cached) eigenpairs, moved to the layer's device."""
        if self.taps is None or self.taps.shape[-1] != L or self.taps.device != self.M_u.device:
            if L < self.k:
                raise SSMBenchError(f"model.stu.k: {self.k} spectral filters need sequences of at least {self.k} "
                                    f"steps, got length {L}; lower model.stu.k")
            cache = None if self.cache_dir is None else str(Path(self.cache_dir).resolve())  # the memory cache keys on it
            sigma, phi = spectral_filters(L, self.k, self.hankel, cache)
            self.taps = filter_bank(sigma, phi, self.k_u, self.hankel == "z").to(self.M_u.device)
        return self.taps

    def mixing(self) -> torch.Tensor:
        """The channel-mixing matrix of every filter, (R, H_out, H_in), in the order of `filter_bank` (full mixing)."""
        mats = [self.M_u, self.M_phi_plus] + ([self.M_phi_minus] if self.M_phi_minus is not None else [])
        return torch.cat(mats)

    def spectral(self, u: torch.Tensor) -> torch.Tensor:
        """Eq. 4 without the autoregressive term, by the layer's mixing (`full_spectral` or `tensordot_spectral`)."""
        return self.full_spectral(u) if self.P is None else self.tensordot_spectral(u)

    def full_spectral(self, u: torch.Tensor) -> torch.Tensor:
        """Eq. 4 without the autoregressive term: z_t = sum_r sum_lag tap_r(lag) M_r u_{t-lag}, by FFT.

        Y(f) = U(f) W(f) with W(f) = sum_r rfft(tap_r)(f) M_r^T, at n_fft = 2L (no wrap-around), by `SpectralMix`
        in blocks of at most MIX_BLOCK_BYTES of W.
        """
        B, L, H = u.shape
        n_fft = 2 * L
        taps_f = torch.fft.rfft(self.filters(L).to(u.dtype), n=n_fft).T  # (F, R)
        u_f = torch.fft.rfft(u, n=n_fft, dim=1).transpose(0, 1).contiguous()  # (F, B, H_in)
        block = max(1, MIX_BLOCK_BYTES // (H * H * u_f.element_size()))
        y_f = SpectralMix.apply(u_f, taps_f, self.mixing().to(u.dtype), block).transpose(0, 1)  # (B, F, H_out)
        return torch.fft.irfft(y_f, n=n_fft, dim=1)[:, :L]

    def tensordot_spectral(self, u: torch.Tensor) -> torch.Tensor:
        """The spectral term with M^{phi+-}_k = diag(m^+-_k) P: z_t = sum_{i<k_u} M^u_{i+1} u_{t-i} + (psi * P u)_t.

        psi (H, L) = m^T (H, nK) @ the phi rows of `filter_bank` (nK, L), one causal filter per output channel,
        applied to P u by `fft_conv` (one depthwise FFT convolution of size `fft_size(L)` >= 2L, as in S4D).
        P u and the M^u_i u are one matmul of u with the stacked (P; M^u_1; ...; M^u_k_u).
        """
        B, L, H = u.shape
        taps = self.filters(L).to(u.dtype)
        m = torch.cat([self.m_plus] + ([self.m_minus] if self.m_minus is not None else [])).to(u.dtype)  # (nK, H)
        n_fft = fft_size(L)
        psi_f = torch.fft.rfft(m.T @ taps[self.k_u:], n=n_fft)  # (H, n_fft/2 + 1)
        stacked = torch.cat([self.P[None], self.M_u]).to(u.dtype).flatten(0, 1)  # ((1 + k_u) H_out, H_in)
        v, *terms = (u @ stacked.T).split(H, dim=-1)
        z = fft_conv(v, psi_f, n_fft)
        for i, term in enumerate(terms[:L]):  # M^u_{i+1} u_{t-i}
            z[:, i:] += term[:, :L - i]
        return z

    def autoregress(self, z: torch.Tensor) -> torch.Tensor:
        """y_t = y_{t-2} + z_t (Eq. 4, `y_term: fixed`) or y_t = z_t (`y_term: none`)."""
        return lag2_cumsum(z) if self.y_term == "fixed" else z

    def stu(self, u: torch.Tensor) -> torch.Tensor:
        """The STU map of Eq. 4, in float32 (float64 inputs stay float64) whatever the autocast state."""
        with torch.autocast(device_type=u.device.type, enabled=False):
            u = u.to(torch.promote_types(u.dtype, torch.float32))
            return self.autoregress(self.spectral(u))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.activation(self.stu(u)))
        return self.glu(self.output_linear(y))


class ARSTU(STU):
    """AR-STU block (Eq. 6): the y terms are learned, sum_{i=1}^{k_y} M^y_i y_{t-i} (any `mixing`).

    M^y_2 = ar_init * I and the other M^y_i = 0 at initialization: ar_init = 0 (default) learns M^y from zero
    as the official code; ar_init = 1 starts as STU with `y_term: fixed`. M^y is trained with learning rate
    `ar_lr` and no weight decay. `scan_chunk`: the chunk length of `ar_scan` (None: `chunk_length`'s choice;
    >= L: the plain loop, which `ssmbench bench` compares against).
    """

    def __init__(self, d_model: int, k: int = 16, k_u: int = 3, k_y: int = 2, hankel: str = "z", dropout: float = 0.0,
                 cache_dir: str | None = None, ar_lr: float = 1e-3, ar_init: float = 0.0, scan_chunk: int | None = None,
                 mixing: str = "full", m_u_init: str = "truncated-normal"):
        super().__init__(d_model, k=k, k_u=k_u, hankel=hankel, dropout=dropout, cache_dir=cache_dir, mixing=mixing,
                         m_u_init=m_u_init)
        self.scan_chunk = scan_chunk
        if k_y < 2:
            raise ValueError(f"AR-STU needs k_y >= 2 (M^y_2 carries the y_(t-2) term of STU); got {k_y}")
        M_y = torch.zeros(k_y, d_model, d_model)
        M_y[1] = ar_init * torch.eye(d_model)
        self.M_y = tag_optim(nn.Parameter(M_y), ar_lr, weight_decay=0.0)

    def autoregress(self, z: torch.Tensor) -> torch.Tensor:
        """y_t = sum_i M^y_i y_{t-i} + z_t (Eq. 6)."""
        return OutputAutoregression.apply(z, self.M_y.to(z.dtype), self.scan_chunk)


@LAYERS.register("stu")
def build_stu(cfg, init_name: str) -> nn.Module:
    """STU from `model.stu` (`init.name` configures diagonal SSMs and does not apply here)."""
    s = cfg.stu
    return STU(cfg.d_model, k=s.k, k_u=s.k_u, hankel=s.hankel, dropout=cfg.dropout, cache_dir=s.cache_dir,
               mixing=s.mixing, y_term=s.y_term, m_u_init=s.m_u_init)


@LAYERS.register("ar-stu")
def build_ar_stu(cfg, init_name: str) -> nn.Module:
    """AR-STU from `model.stu`."""
    s = cfg.stu
    return ARSTU(cfg.d_model, k=s.k, k_u=s.k_u, k_y=s.k_y, hankel=s.hankel, dropout=cfg.dropout,
                 cache_dir=s.cache_dir, ar_lr=s.ar_lr, ar_init=s.ar_init, mixing=s.mixing, m_u_init=s.m_u_init)
