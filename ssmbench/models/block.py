"""The output stage every convolutional SSM block of ssmbench shares (docs/methods.md §A "Block", §I).

    y = ssm(u);  [dropout ->] GELU -> dropout -> Linear(H, 2H) -> GLU

as S4D's block (state-spaces/s4 `s4d.py`), so S4D, DSS, S5, LRU and S4 differ only in `ssm` when they are compared
in one backbone. The SSM part runs in float32 (float64 if the layer is float64) with autocast off; the Linear runs
in the autocast dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ssmbench.models.dropout import sequence_dropout
from ssmbench.models.kernels import bidirectional_kernel, fft_conv, fft_size


def random_modes(n: int, fraction: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """floor(fraction n) distinct indices of n modes, drawn with `generator` (the zero-real-part method, §I.6)."""
    return torch.randperm(n, generator=generator)[:math.floor(fraction * n)].to(device)


class RawModes:
    """Mixin of the layers that store their continuous eigenvalues as raw `Lambda_re`, `Lambda_im` (DSS-softmax, S5):
    alpha and the zero real part act on them directly (docs/methods.md §I.6)."""

    Lambda_re: nn.Parameter
    Lambda_im: nn.Parameter

    @torch.no_grad()
    def scale_frequencies(self, alpha: float) -> None:
        """alpha: Im(Lambda) <- alpha Im(Lambda) for every mode."""
        self.Lambda_im.mul_(alpha)

    @torch.no_grad()
    def zero_modes(self, fraction: float, generator: torch.Generator) -> torch.Tensor:
        """Re(Lambda) = 0 on floor(fraction n) random modes; returns their indices."""
        chosen = random_modes(self.Lambda_re.shape[0], fraction, generator, self.Lambda_re.device)
        self.Lambda_re[chosen] = 0.0
        return chosen


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


class KernelBlock(SSMBlock):
    """A block whose SSM is a real convolution kernel per channel, `kernel(L)` (c, H, L), plus D u (DSS, S4)."""

    bidirectional: bool
    D: nn.Parameter

    def kernel(self, L: int) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} defines no kernel()")

    def ssm(self, u: torch.Tensor) -> torch.Tensor:
        """y = K * u + D u by `fft_conv` (D folded into the spectrum); bidirectional as S4D (strictly anti-causal
        backward half)."""
        L = u.shape[1]
        n = fft_size(L)
        K = self.kernel(L)
        k = bidirectional_kernel(K, L, n) if self.bidirectional else K[0]
        return fft_conv(u, torch.fft.rfft(k, n=n) + self.D[:, None], n)
