"""S4: the structured state space layer with a diagonal plus low-rank state matrix (Gu, Goel, Ré, ICLR 2022;
state-spaces/s4 `models/s4/s4.py` `SSMKernelDPLR`, `src/models/sequence/kernels/dplr.py`; docs/methods.md §I.5),
in the shared SSM block (`ssmbench.models.block`).

Per channel, in the eigenbasis of the normal part of HiPPO-LegS, with M = N/2 stored modes standing for conjugate
pairs (the full N-state system is real):

    A = diag(Lambda) - sum_r P_r P_r^*,  Lambda = -exp(A_re) + i A_im,  bilinear discretization with step dt,
    K_l = C A_bar^l B_bar (l < L),  y = K * u + D u.

The kernel is computed from its truncated generating function at the roots of unity omega_k = exp(-2 pi i k / L):
with the trained C~ = C (I - A_bar^L) (set from C once, at the first forward of length L, as the source does),

    K^(omega) = 2/(1 + omega) * C~ (z - dt A)^-1 dt B,   z = 2 (1 - omega)/(1 + omega),

where (z - dt A)^-1 = (z - dt Lambda + dt P P^*)^-1 is the Cauchy matrix diag(1/(z - dt Lambda)) corrected by the
Woodbury identity. With g = (1 + omega)/2 and s_XY = sum_n X_n Y_n dt / ((1 - omega) - g dt Lambda_n) (+ the
conjugate modes; = r_XY / g for the Cauchy sums r_XY at z), which stays finite at omega = -1 where z is infinite:

    K^ = s_CB - g s_CP (I + g s_QP)^-1 s_QB,   Q = conj(P),   K = irfft(K^, L). The Cauchy sums run over chunks of the frequency bins with
activation checkpointing, so memory is O(H N chunk) instead of O(H N L) forward and backward. A longer input
doubles the attuned length (C~ <- C~ (I + A_bar^L)), a shorter one truncates the kernel (the source's behaviour).

Initialization (`init: legs`, rank 1): Lambda = -1/2 + i mu (the Im <= 0 half of the eigenvalues of the normal
part), P = V^* sqrt(n + 1/2), B = V^* sqrt(2n + 1), C ~ CN(0, 1), D ~ N(0, 1), dt log-uniform. Optimizer groups:
dt -> dt, (Lambda, P) -> A, B -> B, C -> C; with `n_ssm` < H, (Lambda, P, B) are shared as in S4D.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ssmbench.models.block import KernelBlock
from ssmbench.models.hippo import hippo_legs, legs_normal_eig
from ssmbench.models.s4d import DEFAULT_LR, DEFAULT_WEIGHT_DECAY, DT_TRANSFORMS, tag_optim
from ssmbench.registry import LAYERS


def legs_nplr(N: int, rank: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Lambda (M,), P (rank, M), B (M,)), complex128: HiPPO-LegS = V (diag(Lambda) - P P^*) V^* restricted to the
    Im <= 0 half of the conjugate pairs (M = N/2). A rank above 1 pads P with zero rows."""
    _, B, P = hippo_legs(N)
    Lambda, V = legs_normal_eig(N)
    V = V[:, :N // 2]
    P_t = V.conj().T @ P.to(torch.complex128)
    P_r = torch.cat([P_t[None], torch.zeros(rank - 1, N // 2, dtype=torch.complex128)])
    return Lambda[:N // 2], P_r, V.conj().T @ B.to(torch.complex128)


def cauchy_woodbury(v: torch.Tensor, w: torch.Tensor, omega: torch.Tensor, c: int) -> torch.Tensor:
    """K^ (c, H, K) at the nodes omega (K,) from v (c + R, 1 + R, H, M), the products dt X_a Y_b of the rows
    [C~; Q] and the columns [B; P], and the poles w = dt Lambda (H, M); the conjugate modes are included."""
    g = (1 + omega) / 2
    one_minus = 1 - omega
    s = (torch.einsum("abhm,hmk->abhk", v, 1 / (one_minus - g * w[..., None]))
         + torch.einsum("abhm,hmk->abhk", v.conj(), 1 / (one_minus - g * w.conj()[..., None])))
    s_cb, s_cp, s_qb, s_qp = s[:c, 0], s[:c, 1:], s[c:, 0], s[c:, 1:]
    R = s_qp.shape[0]
    if R == 1:
        return s_cb - g * s_cp[:, 0] * s_qb[0] / (1 + g * s_qp[0, 0])
    M = torch.eye(R, dtype=s.dtype, device=s.device) + g[:, None, None] * s_qp.permute(2, 3, 0, 1)  # (H, K, i, j)
    return s_cb - g * torch.einsum("cjhk,hkji,ihk->chk", s_cp, torch.linalg.inv(M), s_qb)


class S4(KernelBlock):
    """S4 (DPLR) block: (batch, length, d_model) -> (batch, length, d_model)."""

    def __init__(self, d_model: int, d_state: int = 64, rank: int = 1, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 dt_transform: str = "exp", n_ssm: int | None = None, dropout: float = 0.0,
                 bidirectional: bool = False, lr: dict | None = None, weight_decay: dict | None = None,
                 chunk: int = 512, tie_dropout: bool = False, dropout_before_gelu: bool = False):
        super().__init__(d_model, dropout, tie_dropout, dropout_before_gelu)
        H, c = d_model, 2 if bidirectional else 1
        S = H if n_ssm is None else n_ssm
        if d_state < 2 or d_state % 2 or H % S:
            raise ValueError(f"S4: d_state must be even (got {d_state}) and n_ssm ({S}) must divide d_model ({H})")
        self.bidirectional, self.dt_transform, self.chunk, self.n_ssm = bidirectional, dt_transform, chunk, S
        lr, wd = {**DEFAULT_LR, **(lr or {})}, {**DEFAULT_WEIGHT_DECAY, **(weight_decay or {})}
        Lambda, P, B = legs_nplr(d_state, rank)
        M = Lambda.shape[0]
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        raw_dt = log_dt if dt_transform == "exp" else DT_TRANSFORMS[dt_transform][1](torch.exp(log_dt))
        self.log_dt = tag_optim(nn.Parameter(raw_dt), lr["dt"], wd["dt"])
        self.A_re = tag_optim(nn.Parameter(torch.log(-Lambda.real).float().repeat(S, 1)), lr["A"], wd["A"])
        self.A_im = tag_optim(nn.Parameter(Lambda.imag.float().repeat(S, 1)), lr["A"], wd["A"])
        self.P = tag_optim(nn.Parameter(torch.view_as_real(P[:, None].repeat(1, S, 1)).float()), lr["A"], wd["A"])
        self.B = tag_optim(nn.Parameter(torch.view_as_real(B.repeat(S, 1)).float()), lr["B"], wd["B"])
        self.C = tag_optim(nn.Parameter(torch.view_as_real(torch.randn(c, H, M, dtype=torch.complex64))),
                           lr["C"], wd["C"])
        self.D = nn.Parameter(torch.randn(H))
        self.register_buffer("l_kernel", torch.tensor(0))  # the length C~ is attuned to (0: C still holds C)

    def per_channel(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of a shared (..., n_ssm, M) parameter for every channel, (..., H, M): channel h uses row h mod n_ssm."""
        k = self.d_model // self.n_ssm
        return x if k == 1 else x.repeat(*([1] * (x.dim() - 2)), k, 1)

    def params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dt (H,), Lambda (H, M), P (R, H, M), B (H, M), C~ (c, H, M)), complex where complex."""
        dt = DT_TRANSFORMS[self.dt_transform][0](self.log_dt)
        Lambda = self.per_channel(torch.complex(-torch.exp(self.A_re), self.A_im))
        P = self.per_channel(torch.view_as_complex(self.P))
        return dt, Lambda, P, self.per_channel(torch.view_as_complex(self.B)), torch.view_as_complex(self.C)

    def dense_A_bar(self) -> torch.Tensor:
        """The bilinear A_bar of the full N-state system in the eigenbasis, (H, N, N): modes [Lambda, conj Lambda],
        low-rank columns [P, conj P]. Used only to set C~ (cost O(H N^3 log L), once per attuned length)."""
        dt, Lambda, P, _, _ = self.params()
        P_full = torch.cat([P, P.conj()], -1)  # (R, H, N)
        A = torch.diag_embed(torch.cat([Lambda, Lambda.conj()], -1)) - torch.einsum("rhn,rhm->hnm", P_full, P_full.conj())
        eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        half = dt[:, None, None] / 2 * A
        return torch.linalg.solve(eye - half, eye + half)

    @torch.no_grad()
    def attune(self, L: int) -> None:
        """C~ <- C (I - A_bar^L) at the first call; later C~ <- C~ (I + A_bar^l_kernel), doubling the length."""
        first = int(self.l_kernel) == 0
        n = L if first else int(self.l_kernel)
        C = torch.view_as_complex(self.C)
        M = C.shape[-1]
        C_full = torch.cat([C, C.conj()], -1).to(torch.complex128)
        power = torch.linalg.matrix_power(self.dense_A_bar().to(torch.complex128), n)
        prod = torch.einsum("chn,hnm->chm", C_full, power)[..., :M]
        self.C.copy_(torch.view_as_real((C_full[..., :M] - prod) if first else (C_full[..., :M] + prod)).to(self.C.dtype))
        self.l_kernel.fill_(n if first else 2 * n)

    def kernel(self, L: int) -> torch.Tensor:
        """The real kernel K (c, H, L): the generating function at the roots of unity of the attuned length,
        in chunks of bins (checkpointed), then an inverse FFT."""
        if int(self.l_kernel) == 0:
            self.attune(L)
        while L > int(self.l_kernel):
            self.attune(L)
        n = int(self.l_kernel)
        dt, Lambda, P, B, C = self.params()
        c = C.shape[0]
        rows = torch.cat([C, P.conj()], 0)  # (c + R, H, M)
        cols = torch.cat([B[None], P], 0)  # (1 + R, H, M)
        v = rows[:, None] * cols[None] * dt[:, None]
        w = dt[:, None] * Lambda
        omega = torch.polar(torch.ones(n // 2 + 1, dtype=dt.dtype, device=dt.device),
                            -2 * math.pi * torch.arange(n // 2 + 1, dtype=dt.dtype, device=dt.device) / n)
        parts = []
        for start in range(0, n // 2 + 1, self.chunk):
            nodes = omega[start:start + self.chunk]
            parts.append(checkpoint(cauchy_woodbury, v, w, nodes, c, use_reentrant=False)
                         if torch.is_grad_enabled() else cauchy_woodbury(v, w, nodes, c))
        return torch.fft.irfft(torch.cat(parts, -1), n=n)[..., :L]


@LAYERS.register("s4")
def build_s4(cfg, init_name: str) -> nn.Module:
    """S4 from `model.s4` (rank, chunk) and `model.ssm` (d_state = N real states, dt, n_ssm, lr/weight_decay)."""
    s = cfg.ssm
    return S4(cfg.d_model, d_state=s.d_state, rank=cfg.s4.rank, dt_min=s.dt_min, dt_max=s.dt_max,
              dt_transform=s.dt_transform, n_ssm=s.n_ssm, dropout=cfg.dropout, bidirectional=cfg.bidirectional,
              lr=s.lr.model_dump(), weight_decay=s.weight_decay.model_dump(), chunk=cfg.s4.chunk,
              tie_dropout=cfg.tie_dropout, dropout_before_gelu=cfg.dropout_before_gelu)
