"""Optimizer and schedule (SPEC.md §A "Optimizer").

Parameters tagged with `_optim = {"lr": ..., "weight_decay": ...}` where they are created (dt, A, B, beta, ...)
get a group of their own; everything else gets AdamW with the recipe's lr and weight decay. Biases and
normalization weights are decayed like the rest, as in state-spaces/s4 `example.py`.
"""

from __future__ import annotations

import math

import torch


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float) -> list[dict]:
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hp = getattr(p, "_optim", None) or {"lr": lr, "weight_decay": weight_decay}
        key = (hp["lr"], hp["weight_decay"])
        group = groups.setdefault(key, {"params": [], "names": [], "lr": hp["lr"], "weight_decay": hp["weight_decay"]})
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with the fused (one kernel per device) implementation. Besides being fast, it honours
    `optimizer.found_inf` (a 0/1 tensor on the device): at 1 the update, the moments and the step count are left
    unchanged, which is how the engine drops a non-finite update without reading the flag on the host."""
    return torch.optim.AdamW(param_groups(model, lr, weight_decay), lr=lr, weight_decay=weight_decay, fused=True)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 over `warmup_steps`, then cosine decay to 0 at `total_steps` (each group's own lr)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
