"""S5: the simplified state space layer (Smith, Warrington, Linderman, ICLR 2023; lindermanlab/S5 `s5/ssm.py`,
`s5/ssm_init.py`; docs/methods.md §I.3), in the shared SSM block (`ssmbench.models.block`).

One MIMO SSM with P complex states for all H features, diagonal in the eigenbasis of HiPPO-N:

    x_t = Lambda_bar ⊙ x_{t-1} + B_bar u_t,   y_t = s Re(C~ x_t) + D ⊙ u_t    (s = 2 with conjugate symmetry)

- Lambda: J blocks, each the eigenvalues -1/2 + i mu of the normal part of HiPPO-LegS of size P/J (`blocks`);
  with `conj_sym` only the half with Im <= 0 of each block is kept (P/2 states) and the output is 2 Re(.).
- B~ = V^-1 B with B (P, H) lecun-normal (truncated normal, variance 1/P) and V the block-diagonal eigenvectors
  (V^-1 = V^*); C~ = C V with C (H, P) complex lecun-normal per row (`trunc_standard_normal`, variance 1/P) or over
  the whole matrix (`lecun_normal`, variance 1/(P H)), or C~ complex normal with variance 1/2 per part
  (`complex_normal`); D ~ N(0, 1).
- One step size per state, log dt uniform on [log dt_min, log dt_max]; ZOH (B_bar = (Lambda_bar - 1)/Lambda B~) or
  bilinear; `clip_eigs`: Re Lambda = min(Lambda_re, -1e-4).
- Bidirectional: a second C~ reads the recurrence run from the end (S5's reversed scan).

With fixed step sizes the layer is a convolution: project with B_bar to the complex states, convolve each with
Lambda_bar_p^l by FFT, project back with C~ (`kernels.diagonal_mimo`), no scan. Optimizer groups: log dt -> dt,
Lambda -> A, B -> B, C -> C (`model.ssm.lr` / `weight_decay`; S5's `opt_config` variants are values of B and C).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ssmbench.models.block import RawModes, SSMBlock
from ssmbench.models.hippo import legs_normal_eig
from ssmbench.models.kernels import diagonal_mimo, discretize, limit_growth
from ssmbench.models.s4d import DEFAULT_LR, DEFAULT_WEIGHT_DECAY, tag_optim
from ssmbench.registry import LAYERS

TRUNCATED_STD = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


def lecun_normal(*shape: int, fan_in: int) -> torch.Tensor:
    """Truncated-normal samples on [-2, 2] rescaled to variance 1/fan_in (JAX's lecun_normal), float64."""
    x = torch.nn.init.trunc_normal_(torch.empty(*shape, dtype=torch.float64), a=-2.0, b=2.0)
    return x / TRUNCATED_STD / math.sqrt(fan_in)


def block_hippo(P: int, blocks: int, conj_sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(Lambda (P_s,), V (P, P_s)): J copies of the eigendecomposition of the HiPPO-N block of size P/J, with V
    block-diagonal; P_s = P/2 with conjugate symmetry (the Im <= 0 half of each block), else P. complex128."""
    size = P // blocks
    Lambda, V = legs_normal_eig(size)
    if conj_sym:
        Lambda, V = Lambda[:size // 2], V[:, :size // 2]
    return Lambda.repeat(blocks), torch.block_diag(*[V] * blocks)


class S5(RawModes, SSMBlock):
    """S5 block: (batch, length, d_model) -> (batch, length, d_model)."""

    def __init__(self, d_model: int, d_state: int = 64, blocks: int = 8, conj_sym: bool = True,
                 clip_eigs: bool = False, C_init: str = "trunc_standard_normal", discretization: str = "zoh",
                 dt_min: float = 1e-3, dt_max: float = 1e-1, dropout: float = 0.0, bidirectional: bool = False,
                 lr: dict | None = None, weight_decay: dict | None = None, tie_dropout: bool = False,
                 dropout_before_gelu: bool = False):
        super().__init__(d_model, dropout, tie_dropout, dropout_before_gelu)
        H, P, c = d_model, d_state, 2 if bidirectional else 1
        if P % blocks or (conj_sym and (P // blocks) % 2):
            raise ValueError(f"S5: P = {P} states in {blocks} blocks need P/J whole (and even with conj_sym)")
        if C_init not in ("trunc_standard_normal", "lecun_normal", "complex_normal"):
            raise ValueError(f"unknown S5 C_init {C_init!r}; known: trunc_standard_normal, lecun_normal, complex_normal")
        self.conj_sym, self.clip_eigs, self.discretization = conj_sym, clip_eigs, discretization
        lr, wd = {**DEFAULT_LR, **(lr or {})}, {**DEFAULT_WEIGHT_DECAY, **(weight_decay or {})}
        Lambda, V = block_hippo(P, blocks, conj_sym)
        P_s = Lambda.shape[0]
        self.Lambda_re = tag_optim(nn.Parameter(Lambda.real.float()), lr["A"], wd["A"])
        self.Lambda_im = tag_optim(nn.Parameter(Lambda.imag.float()), lr["A"], wd["A"])
        B = V.conj().T @ lecun_normal(P, H, fan_in=P).to(torch.complex128)  # B~ = V^-1 B
        self.B = tag_optim(nn.Parameter(torch.view_as_real(B).float()), lr["B"], wd["B"])
        if C_init == "complex_normal":
            C = torch.complex(*torch.randn(2, c, H, P_s, dtype=torch.float64)) * math.sqrt(0.5)
        else:
            fan_in = P if C_init == "trunc_standard_normal" else P * H
            C = torch.complex(*lecun_normal(2, c, H, P, fan_in=fan_in)) @ V  # C~ = C V
        self.C = tag_optim(nn.Parameter(torch.view_as_real(C).float()), lr["C"], wd["C"])
        self.D = nn.Parameter(torch.randn(H))
        log_dt = torch.rand(P_s) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = tag_optim(nn.Parameter(log_dt), lr["dt"], wd["dt"])

    @property
    def Lambda(self) -> torch.Tensor:
        """The continuous-time eigenvalues, complex (P_s,); with clip_eigs Re = min(Lambda_re, -1e-4)."""
        re = self.Lambda_re.clamp(max=-1e-4) if self.clip_eigs else self.Lambda_re
        return torch.complex(re, self.Lambda_im)

    @torch.no_grad()
    def zero_real(self, fraction: float, dt0: float, generator: torch.Generator) -> int:
        """Re(Lambda) = 0 and dt = dt0 on floor(fraction P_s) random states (S5 has one step size per state);
        Lambda_re is already raw. With clip_eigs the real part stays clamped at -1e-4."""
        chosen = self.zero_modes(fraction, generator)
        self.log_dt[chosen] = math.log(dt0)
        return len(chosen)

    @torch.no_grad()
    def place_frequencies(self, omega: torch.Tensor, dt_ref: float) -> None:
        """TDI's F.1 placement (docs/methods.md §I.6): Im(Lambda_p) = omega_p / dt_p with the state's own step size,
        so arg(Lambda_bar_p) = omega_p under ZOH. Re(Lambda), dt, B~ and C~ keep their initialization; dt_ref is not
        used (S5 has one step size per state)."""
        self.Lambda_im.copy_(omega.to(self.Lambda_im) / torch.exp(self.log_dt))

    def discrete(self, L: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(log Lambda_bar (P_s,), B_bar (P_s, H)) with one step size per state and S4D's overflow guard."""
        log_lam, B_bar = discretize(self.Lambda[:, None], torch.view_as_complex(self.B), torch.exp(self.log_dt),
                                    self.discretization)
        return limit_growth(log_lam[:, 0], L), B_bar

    def ssm(self, u: torch.Tensor) -> torch.Tensor:
        """y = s Re(C~ x) + D u by the MIMO FFT convolution."""
        log_lam, B_bar = self.discrete(u.shape[1])
        return diagonal_mimo(u, B_bar, log_lam, torch.view_as_complex(self.C), 2.0 if self.conj_sym else 1.0) \
            + u * self.D


@LAYERS.register("s5")
def build_s5(cfg, init_name: str) -> nn.Module:
    """S5 from `model.s5` and `model.ssm` (d_state = P, dt range, discretization, lr/weight_decay groups)."""
    s, o = cfg.ssm, cfg.s5
    return S5(cfg.d_model, d_state=s.d_state, blocks=o.blocks, conj_sym=o.conj_sym, clip_eigs=o.clip_eigs,
              C_init=o.C_init, discretization=s.discretization, dt_min=s.dt_min, dt_max=s.dt_max,
              dropout=cfg.dropout, bidirectional=cfg.bidirectional, lr=s.lr.model_dump(),
              weight_decay=s.weight_decay.model_dump(), tie_dropout=cfg.tie_dropout,
              dropout_before_gelu=cfg.dropout_before_gelu)
