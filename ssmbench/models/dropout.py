"""Dropout on (batch, length, features) activations, elementwise or tied across the sequence.

Tied (state-spaces/s4 `DropoutNd`): one Bernoulli(1 - p) mask entry per (sequence, feature), the same at every
time step, y[b, l, h] = x[b, l, h] * m[b, h] / (1 - p). Elementwise is `nn.Dropout`.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class TiedDropout(nn.Module):
    """Dropout whose mask is constant over the length axis (dim 1) of (batch, length, features)."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, *x.shape[2:], device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def sequence_dropout(p: float, tie: bool) -> nn.Module:
    """TiedDropout(p) if `tie`, else nn.Dropout(p)."""
    return TiedDropout(p) if tie else nn.Dropout(p)
