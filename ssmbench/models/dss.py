"""DSS: Diagonal State Spaces (Gupta, Gu, Berant, NeurIPS 2022; ag1988/dss `standalone/dss.py`;
docs/methods.md §I.2), in the shared SSM block (`ssmbench.models.block`).

N complex modes Lambda (shared by the H channels), a complex W (c, H, N) per channel, step sizes dt per channel
(`sep_dt_re_im`: one for Re and one for Im of Lambda, z = dt_re Re(Lambda) + i dt_im Im(Lambda), else z = dt Lambda):

    DSS-exp:      K_l = Re sum_n W_n (e^{z_n} - 1) / Lambda_n * e^{l z_n},          Re Lambda = -exp(param) < 0
    DSS-softmax:  K_l = Re sum_n W_n / Lambda_n * e^{l z_n} / sum_{j<L} e^{j z_n}   (a softmax over l; Re Lambda free)

The softmax equals W_n (e^{z_n} - 1) / ((e^{L z_n} - 1) Lambda_n) e^{l z_n}; for modes with Re Lambda > 0 it is
evaluated with the exponents shifted by (L - 1) z_n, i.e. the decaying Vandermonde of -z_n reversed in l, so no
power overflows. Initialization: Lambda = the eigenvalues of the normal part of HiPPO-LegS of size 2N with
Im > 0, -1/2 + i mu (the diagonal of its skew-symmetric part, `Lambda_init: hippo_skew_pos_imag`), W complex with
N(0, 1) parts, D ~ N(0, 1), log dt uniform on [log dt_min, log dt_max]. The kernel goes through the blocked
Vandermonde and `fft_conv` of S4D (D folded into the spectrum). Optimizer groups: log_dt -> dt, Lambda -> A,
W -> C (`model.ssm.lr` / `weight_decay`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ssmbench.models.block import KernelBlock, RawModes
from ssmbench.models.hippo import legs_normal_eig
from ssmbench.models.kernels import blocked_vandermonde_kernel
from ssmbench.models.s4d import DEFAULT_LR, DEFAULT_WEIGHT_DECAY, tag_optim
from ssmbench.registry import LAYERS


def dss_lambda(N: int) -> torch.Tensor:
    """DSS's `hippo_skew_pos_imag`: the N eigenvalues with Im > 0 of the normal part of HiPPO-LegS of size 2N,
    -1/2 + i mu, largest Im first (complex128)."""
    Lambda, _ = legs_normal_eig(2 * N)
    return Lambda[:N].conj()  # eigh's first half has Im <= 0, most negative first


def safe_reciprocal(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """1/x as conj(x) / (|x|^2 + eps): bounded near x = 0 (ag1988/dss `reciprocal`)."""
    return x.conj() / (x.real ** 2 + x.imag ** 2 + eps)


class DSS(RawModes, KernelBlock):
    """DSS block: (batch, length, d_model) -> (batch, length, d_model)."""

    def __init__(self, d_model: int, d_state: int = 64, version: str = "softmax", sep_dt_re_im: bool = True,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, dropout: float = 0.0, bidirectional: bool = False,
                 lr: dict | None = None, weight_decay: dict | None = None, tie_dropout: bool = False,
                 dropout_before_gelu: bool = False):
        super().__init__(d_model, dropout, tie_dropout, dropout_before_gelu)
        if version not in ("softmax", "exp"):
            raise ValueError(f"unknown DSS version {version!r}; known: softmax, exp")
        H, N, c = d_model, d_state, 2 if bidirectional else 1
        self.version, self.bidirectional = version, bidirectional
        self.epsilon = 1e-7  # of the bounded reciprocals (ag1988/dss `epsilon`)
        lr, wd = {**DEFAULT_LR, **(lr or {})}, {**DEFAULT_WEIGHT_DECAY, **(weight_decay or {})}
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = tag_optim(nn.Parameter(log_dt[:, None].repeat(1, 2) if sep_dt_re_im else log_dt),
                                lr["dt"], wd["dt"])
        Lambda = dss_lambda(N)
        if version == "exp":  # Re Lambda = -exp(Lambda_re) < 0
            self.Lambda_re = tag_optim(nn.Parameter(torch.log(-Lambda.real).float()), lr["A"], wd["A"])
        else:
            self.Lambda_re = tag_optim(nn.Parameter(Lambda.real.float()), lr["A"], wd["A"])
        self.Lambda_im = tag_optim(nn.Parameter(Lambda.imag.float()), lr["A"], wd["A"])
        self.W = tag_optim(nn.Parameter(torch.randn(c, H, N, 2)), lr["C"], wd["C"])
        self.D = nn.Parameter(torch.randn(H))

    @property
    def Lambda(self) -> torch.Tensor:
        """The modes, complex (N,): Re = Lambda_re (softmax) or -exp(Lambda_re) (exp)."""
        re = -torch.exp(self.Lambda_re) if self.version == "exp" else self.Lambda_re
        return torch.complex(re, self.Lambda_im)

    @torch.no_grad()
    def zero_real(self, fraction: float, dt0: float, generator: torch.Generator) -> int:
        """Re(Lambda) = 0 on floor(fraction N) random modes (DSS-softmax: Re(Lambda) is raw and may cross 0). The
        modes are shared by all channels and the step sizes are per channel, so dt0 does not apply."""
        if self.version == "exp":
            raise ValueError("DSS-exp keeps Re(Lambda) < 0 by construction; zero real part needs dss.version: softmax")
        return len(self.zero_modes(fraction, generator))

    @torch.no_grad()
    def place_frequencies(self, omega: torch.Tensor, dt_ref: float) -> None:
        """TDI's F.1 placement (docs/methods.md §I.6): Im(z_{h,n}) = omega_n for every channel h. The modes are shared
        and dt is per channel, so the channels get one common step size for Im, dt_ref (with `sep_dt_re_im` only
        dt_im; dt_re keeps its per-channel draw, and with it each channel's decay), and Im(Lambda_n) = omega_n / dt_ref.
        Re(Lambda) and W keep their initialization."""
        if self.log_dt.dim() == 2:
            self.log_dt[:, 1] = math.log(dt_ref)
        else:
            self.log_dt.fill_(math.log(dt_ref))
        self.Lambda_im.copy_(omega.to(self.Lambda_im) / dt_ref)

    def dt_lambda(self) -> torch.Tensor:
        """z = dt Lambda, complex (H, N); with separate step sizes dt_re Re(Lambda) + i dt_im Im(Lambda)."""
        Lambda, dt = self.Lambda, torch.exp(self.log_dt)
        if dt.dim() == 1:
            return dt[:, None] * Lambda
        return torch.complex(dt[:, :1] * Lambda.real, dt[:, 1:] * Lambda.imag)

    def kernel(self, L: int) -> torch.Tensor:
        """The real kernel K (c, H, L) of DSS-exp or DSS-softmax."""
        z, W, inv_Lambda = self.dt_lambda(), torch.view_as_complex(self.W), safe_reciprocal(self.Lambda, self.epsilon)
        if self.version == "exp":
            return blocked_vandermonde_kernel(W * torch.expm1(z) * inv_Lambda, z, L, conjugate_pairs=False)
        grows = self.Lambda.real > 0  # these modes take the shifted exponents: the reversed Vandermonde of -z
        z = torch.where(grows, -z, z)
        coeff = W * torch.expm1(z) * safe_reciprocal(torch.expm1(L * z) * self.Lambda, self.epsilon)
        K = blocked_vandermonde_kernel(torch.where(grows, 0, coeff), z, L, conjugate_pairs=False)
        if bool(grows.any()):
            K = K + blocked_vandermonde_kernel(torch.where(grows, coeff, 0), z, L, conjugate_pairs=False).flip(-1)
        return K


@LAYERS.register("dss")
def build_dss(cfg, init_name: str) -> nn.Module:
    """DSS from `model.dss` and `model.ssm` (d_state = N complex modes, dt range, lr/weight_decay groups)."""
    s = cfg.ssm
    return DSS(cfg.d_model, d_state=s.d_state, version=cfg.dss.version, sep_dt_re_im=cfg.dss.sep_dt_re_im,
               dt_min=s.dt_min, dt_max=s.dt_max, dropout=cfg.dropout, bidirectional=cfg.bidirectional,
               lr=s.lr.model_dump(), weight_decay=s.weight_decay.model_dump(), tie_dropout=cfg.tie_dropout,
               dropout_before_gelu=cfg.dropout_before_gelu)
