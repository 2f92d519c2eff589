"""Initializers (registry INITIALIZERS, docs/methods.md §A-§D) and `apply_init`, which applies the recipe's modifiers.

Base initializers (`s4d-lin`, `s4d-inv`, `s4d-legs`, `s4d-real`; `tdi` builds S4D-Lin) give the diagonal A and B
each SSM layer is built with. Recipe-level modifiers (`init.alpha`, ...) are applied to the built model by `apply_init`, in a
fixed order, so composing methods is data in the recipe rather than a class per combination.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ssmbench.init.freqbias import apply_alpha
from ssmbench.init.tdi import apply_base, apply_tdi
from ssmbench.init.zero_real import apply_zero_real

if TYPE_CHECKING:
    from ssmbench.recipe import InitConfig


def ssm_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The diagonal SSM layers of a model, in depth order: S4D, and the DSS, S5 and LRU layers (which take alpha
    and the zero real part through their `scale_frequencies` / `zero_real` methods, and TDI's F.1 placement through
    `place_frequencies`, docs/methods.md §I.6)."""
    from ssmbench.models.s4d import S4D

    return [m for m in model.modules() if isinstance(m, S4D) or hasattr(m, "zero_real")]


@torch.no_grad()
def apply_init(model: torch.nn.Module, cfg: "InitConfig", context: dict | None = None) -> dict:
    """Apply the recipe's initialization modifiers to a freshly built model; return facts for the run record.

    Fixed order: (tdi: `init.base` on every S4D layer), alpha (§B), zero real part (§D), TDI on the first layer (§C;
    on DSS, S5 and LRU its F.1 placement, §I.6).
    `context` = {"data": DataBundle, "recipe": Recipe, "log": print-like}; zero real part and TDI need it.
    """
    layers = ssm_layers(model)
    facts: dict = {}
    if cfg.name == "tdi":
        apply_base(layers, cfg.base)
    if cfg.alpha != 1.0:
        facts.update(apply_alpha(layers, cfg.alpha))
    if cfg.zero_real_fraction > 0:
        facts["zero_real"] = apply_zero_real(layers, cfg, context)
    if cfg.name == "tdi" and layers:
        facts["tdi"] = apply_tdi(model, layers, cfg, context)
    return facts
