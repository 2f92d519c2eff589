"""Initializer registry (SPEC.md §A-§D).

Base initializers (`s4d-lin`, `s4d-inv`, `s4d-legs`, `s4d-real`) give the diagonal A and B each SSM layer is
built with. Recipe-level modifiers (`init.alpha`, ...) are applied to the built model by `apply_init`, in a
fixed order, so composing methods is data in the recipe rather than a class per combination.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ssmbench.init.hippo import DiagonalInit, s4d_inv, s4d_legs, s4d_lin, s4d_real  # noqa: F401 (registers)

if TYPE_CHECKING:
    from ssmbench.recipe import InitConfig


def ssm_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The diagonal SSM layers of a model, in depth order."""
    from ssmbench.models.s4d import S4D

    return [m for m in model.modules() if isinstance(m, S4D)]


@torch.no_grad()
def apply_init(model: torch.nn.Module, cfg: "InitConfig", context: dict | None = None) -> dict:
    """Apply the recipe's initialization modifiers to a freshly built model; return facts for the run record."""
    facts: dict = {}
    for layer in ssm_layers(model):
        if cfg.alpha != 1.0:
            layer.A_im.mul_(cfg.alpha)
    return facts
