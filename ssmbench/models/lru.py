"""LRU: the Linear Recurrent Unit of Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
Sequences" (docs/methods.md §I.4), in the shared SSM block (`ssmbench.models.block`).

With N complex states and H features:

    lambda_n = exp(-exp(nu_n) + i exp(theta_n))                       (stable exponential parameterization)
    x_t = diag(lambda) x_{t-1} + gamma ⊙ (B u_t),   gamma_n = exp(gamma_log_n)   (normalization, trained)
    y_t = Re(C x_t) + D ⊙ u_t

Ring initialization: |lambda|^2 ~ U[r_min^2, r_max^2], i.e. nu = log(-log(u1 (r_max^2 - r_min^2) + r_min^2) / 2),
theta = log(max_phase u2) with u1, u2 ~ U[0, 1]; gamma_log = log sqrt(1 - |lambda|^2). B ~ CN(0, 1/H)
((randn + i randn) / sqrt(2H)), C ~ CN(0, 2/N) ((randn + i randn) / sqrt(N)), D ~ N(0, 1) real, as in the paper.

The recurrence is linear and time-invariant, so it runs as a convolution: project u with gamma ⊙ B to N complex
channels, convolve each with lambda_n^l by FFT, project back with C (`kernels.diagonal_mimo`). Optimizer groups
(`model.ssm.lr` / `weight_decay`): nu and theta in group A, gamma and B in group B, C in group C (D untagged).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ssmbench.models.block import SSMBlock, random_modes
from ssmbench.models.kernels import diagonal_mimo, limit_growth
from ssmbench.models.s4d import DEFAULT_LR, DEFAULT_WEIGHT_DECAY, tag_optim
from ssmbench.registry import LAYERS


def ring_init(N: int, r_min: float, r_max: float, max_phase: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(nu_log, theta_log), float64 (N,): |lambda|^2 uniform on [r_min^2, r_max^2], arg(lambda) on [0, max_phase]."""
    u1, u2 = torch.rand(N, dtype=torch.float64), torch.rand(N, dtype=torch.float64)
    nu_log = torch.log(-0.5 * torch.log(u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2))
    theta_log = torch.log(max_phase * u2.clamp_min(1e-12))
    return nu_log, theta_log


class LRU(SSMBlock):
    """LRU block: (batch, length, d_model) -> (batch, length, d_model)."""

    def __init__(self, d_model: int, d_state: int = 64, r_min: float = 0.0, r_max: float = 0.99,
                 max_phase: float = 2 * math.pi, dropout: float = 0.0, bidirectional: bool = False,
                 lr: dict | None = None, weight_decay: dict | None = None, tie_dropout: bool = False,
                 dropout_before_gelu: bool = False):
        super().__init__(d_model, dropout, tie_dropout, dropout_before_gelu)
        if not 0.0 <= r_min < r_max < 1.0:
            raise ValueError(f"LRU ring: need 0 <= r_min < r_max < 1, got r_min = {r_min}, r_max = {r_max}")
        H, N, c = d_model, d_state, 2 if bidirectional else 1
        lr, wd = {**DEFAULT_LR, **(lr or {})}, {**DEFAULT_WEIGHT_DECAY, **(weight_decay or {})}
        nu_log, theta_log = ring_init(N, r_min, r_max, max_phase)
        self.nu_log = tag_optim(nn.Parameter(nu_log.float()), lr["A"], wd["A"])
        self.theta_log = tag_optim(nn.Parameter(theta_log.float()), lr["A"], wd["A"])
        gamma_log = 0.5 * torch.log(-torch.expm1(-2 * torch.exp(nu_log)))  # log sqrt(1 - |lambda|^2)
        self.gamma_log = tag_optim(nn.Parameter(gamma_log.float()), lr["B"], wd["B"])
        B = torch.randn(N, H, dtype=torch.complex64) / math.sqrt(H)  # complex randn has E|z|^2 = 1: CN(0, 1/H)
        self.B = tag_optim(nn.Parameter(torch.view_as_real(B).clone()), lr["B"], wd["B"])
        C = torch.randn(c, H, N, dtype=torch.complex64) * math.sqrt(2.0 / N)
        self.C = tag_optim(nn.Parameter(torch.view_as_real(C).clone()), lr["C"], wd["C"])
        self.D = nn.Parameter(torch.randn(H))
        # Modes set to |lambda| = 1 by the zero-real-part method (docs/methods.md §I.6): -log|lambda| = nu_log raw.
        self.register_buffer("unit_modulus", torch.zeros(N, dtype=torch.bool))

    @property
    def log_lambda(self) -> torch.Tensor:
        """log lambda = -exp(nu_log) + i exp(theta_log), complex (N,); on `unit_modulus` modes -nu_log + i exp(theta_log)."""
        neg_re = torch.where(self.unit_modulus, self.nu_log, torch.exp(self.nu_log))
        return torch.complex(-neg_re, torch.exp(self.theta_log))

    @torch.no_grad()
    def scale_frequencies(self, alpha: float) -> None:
        """alpha on the phases: theta <- alpha theta (theta_log += log alpha), docs/methods.md §I.6."""
        self.theta_log.add_(math.log(alpha))

    @torch.no_grad()
    def place_frequencies(self, omega: torch.Tensor, dt_ref: float) -> None:
        """TDI's F.1 placement (docs/methods.md §I.6): the phase theta_n = omega_n (LRU's phase is already in radians
        per step; theta_log = log max(omega_n, 1e-12), as the ring init clamps it). |lambda| keeps the ring draw and
        gamma with it; LRU has no step size, so dt_ref is not used."""
        self.theta_log.copy_(torch.log(omega.to(self.theta_log).clamp_min(1e-12)))

    @torch.no_grad()
    def zero_real(self, fraction: float, dt0: float, generator: torch.Generator) -> int:
        """|lambda| = 1 on floor(fraction N) random modes (raw -log|lambda| = 0, free to move), with gamma = 1 there
        (sqrt(1 - |lambda|^2) = 0 would silence them); LRU has no step size, so dt0 does not apply."""
        chosen = random_modes(self.nu_log.shape[0], fraction, generator, self.nu_log.device)
        self.unit_modulus[chosen] = True
        self.nu_log[chosen] = 0.0
        self.gamma_log[chosen] = 0.0
        return len(chosen)

    def ssm(self, u: torch.Tensor) -> torch.Tensor:
        """y = Re(C x) + D u with x_t = lambda x_{t-1} + gamma B u_t, in float32 (float64 if the layer is)."""
        B = torch.exp(self.gamma_log)[:, None] * torch.view_as_complex(self.B)
        log_lam = limit_growth(self.log_lambda, u.shape[1])  # only unit-modulus modes can grow
        return diagonal_mimo(u, B, log_lam, torch.view_as_complex(self.C)) + u * self.D


@LAYERS.register("lru")
def build_lru(cfg, init_name: str) -> nn.Module:
    """LRU from `model.lru` (ring) and `model.ssm` (d_state = N complex states, lr/weight_decay groups A, B, C)."""
    s, r = cfg.ssm, cfg.lru
    return LRU(cfg.d_model, d_state=s.d_state, r_min=r.r_min, r_max=r.r_max, max_phase=r.max_phase,
               dropout=cfg.dropout, bidirectional=cfg.bidirectional, lr=s.lr.model_dump(),
               weight_decay=s.weight_decay.model_dump(), tie_dropout=cfg.tie_dropout,
               dropout_before_gelu=cfg.dropout_before_gelu)
