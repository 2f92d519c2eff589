"""Optimizer and schedule (docs/methods.md §A "Optimizer").

Parameters tagged with `_optim = {"lr": ..., "weight_decay": ...}` where they are created (dt, A, B, C, beta, ...)
get the group of those values, a None value meaning the global one; everything else gets AdamW with the recipe's
lr and weight decay, except that `no_weight_decay` exempts biases ("bias": every parameter named `*bias`),
normalization layers ("norm": all parameters of BatchNorm/LayerNorm/GroupNorm modules) and embeddings
("embedding": nn.Embedding weights) from weight decay, as state-spaces/s4 `optimizer_param_grouping` does.
With no exemptions every untagged parameter is decayed (state-spaces/s4 `example.py`, AnnanYu/FreqBiasSSM).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn

NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
                nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def exempt_from_decay(model: nn.Module, no_weight_decay: Iterable[str]) -> set[str]:
    """Names of the untagged parameters that `no_weight_decay` (bias, norm, embedding) exempts from weight decay."""
    kinds = set(no_weight_decay)
    unknown = kinds - {"bias", "norm", "embedding"}
    if unknown:
        raise ValueError(f"unknown no_weight_decay entries {sorted(unknown)}; known: bias, norm, embedding")
    names = set()
    for module_name, module in model.named_modules():
        for param_name, p in module.named_parameters(recurse=False):
            if hasattr(p, "_optim"):
                continue
            if (("bias" in kinds and param_name.endswith("bias"))
                    or ("norm" in kinds and isinstance(module, NORM_MODULES))
                    or ("embedding" in kinds and isinstance(module, nn.Embedding))):
                names.add(f"{module_name}.{param_name}" if module_name else param_name)
    return names


def param_groups(model: nn.Module, lr: float, weight_decay: float, no_weight_decay: Iterable[str] = ()) -> list[dict]:
    """AdamW groups, one per distinct (lr, weight_decay), in order of first appearance; each lists `names`."""
    exempt = exempt_from_decay(model, no_weight_decay)
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hp = getattr(p, "_optim", None) or {}
        p_lr = lr if hp.get("lr") is None else hp["lr"]
        p_wd = 0.0 if name in exempt else weight_decay if hp.get("weight_decay") is None else hp["weight_decay"]
        group = groups.setdefault((p_lr, p_wd), {"params": [], "names": [], "lr": p_lr, "weight_decay": p_wd})
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, lr: float, weight_decay: float,
                    no_weight_decay: Iterable[str] = ()) -> torch.optim.AdamW:
    """AdamW with the fused (one kernel per device) implementation. Besides being fast, it honours
    `optimizer.found_inf` (a 0/1 tensor on the device): at 1 the update, the moments and the step count are left
    unchanged, which is how the engine drops a non-finite update without reading the flag on the host."""
    return torch.optim.AdamW(param_groups(model, lr, weight_decay, no_weight_decay), lr=lr,
                             weight_decay=weight_decay, fused=True)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 over `warmup_steps`, then cosine decay to 0 at `total_steps` (each group's own lr)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
