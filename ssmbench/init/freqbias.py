"""Frequency-bias tuning (Yu, Lyu, Lim, Mahoney, Erichson, ICLR 2025; docs/methods.md §B).

Two knobs move the frequencies an S4D layer favours:

- **alpha** (here, `init.alpha`): A_n <- Re A_n + i * alpha * Im A_n for every mode of every SSM layer, applied
  after the base initializer (s4d-lin/inv/legs). Only Im(A) changes; alpha = 1 leaves the model untouched. Since
  a mode's frequency response peaks at omega = dt * Im A (docs/methods.md §C, Theorem F.1), alpha > 1 moves the peaks
  to higher frequencies. Im(A) stays trainable with the usual SSM learning rate.

- **beta** (the Sobolev filter, `model.ssm.beta` / `beta_lr` / `kappa`), implemented in the layer itself
  (`ssmbench.models.s4d.S4D.beta` and `ssmbench.models.kernels.sobolev_weights`): the convolution's spectrum is
  multiplied by w_k = (1 + k/kappa)^beta_h on the rfft bins k = 0..n/2 of size n = fft_size(L) >= 2L (kappa = n by default, so
  the maximum gain is 1.5^beta); D*u is added after the filter, unfiltered. beta is a per-channel parameter with
  its own learning rate and zero weight decay; beta = 0 is exactly the unfiltered layer.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def apply_alpha(layers: list[torch.nn.Module], alpha: float) -> dict:
    """Scale Im(A) of every layer by alpha (A_im <- alpha * A_im); return the facts for the run record."""
    if alpha != 1.0:
        for layer in layers:
            if hasattr(layer, "scale_frequencies"):  # DSS, S5: Im(Lambda); LRU: the phase (docs/methods.md §I.6)
                layer.scale_frequencies(alpha)
            else:
                layer.A_im.mul_(alpha)
    return {"alpha": alpha}
