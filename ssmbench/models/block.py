"""The output stage every convolutional SSM block of ssmbench shares (docs/methods.md §A "Block", §I).

    y = ssm(u);  [dropout ->] GELU -> dropout -> Linear(H, 2H) -> GLU

as S4D's block (state-spaces/s4 `s4d.py`), so S4D, DSS, S5, LRU and S4 differ only in `ssm` when they are compared
in one backbone. The SSM part runs in float32 (float64 if the layer is float64) with autocast off; the Linear runs
in the autocast dtype.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ssmbench.models.dropout import sequence_dropout


class SSMBlock(nn.Module):
    """Base of the DSS, S5, LRU and S4 blocks: (batch, length, d_model) -> (batch, length, d_model)."""

    def __init__(self, d_model: int, dropout: float = 0.0, tie_dropout: bool = False,
                 dropout_before_gelu: bool = False):
        super().__init__()
        self.d_model = d_model
        self.activation = nn.GELU()
        self.pre_dropout = sequence_dropout(dropout, tie_dropout) if dropout_before_gelu else nn.Identity()
        self.dropout = sequence_dropout(dropout, tie_dropout)
        self.output_linear = nn.Linear(d_model, 2 * d_model)
        self.glu = nn.GLU(dim=-1)

    def ssm(self, u: torch.Tensor) -> torch.Tensor:
        """The sequence map (B, L, H) -> (B, L, H) of the subclass."""
        raise TypeError(f"{type(self).__name__} defines no ssm()")

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=u.device.type, enabled=False):
            y = self.ssm(u if u.dtype == torch.float64 else u.float())
        y = self.dropout(self.activation(self.pre_dropout(y)))
        return self.glu(self.output_linear(y))
