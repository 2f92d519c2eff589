"""Up-front checks that a recipe fits its data and this machine, run after the data is read and before the model
is built: an impossible run stops with a one-line error (and leaves no run directory) instead of failing at
step 1 or after minutes of allocation.

`init-tdi`, which builds the model but does not train it, checks only its weights (`check_weights`).

Data fit: `model.pool: none` only for data with a target at every step; STU's K spectral filters and AR-STU's
k_y output lags need sequences of at least K and k_y steps.

Memory (a lower bound on what a training step holds):

    P            = parameter count, from building the model on PyTorch's meta device (nothing allocated)
    state        = 16 P bytes: fp32 weights, gradients and AdamW's two moments
    activations  = c * b * B * L * H * n_layers bytes, at least c = ACTIVATION_COPIES tensors of shape (B, L, H)
                   saved for backward per block, b = 4 bytes (fp32) or 2 (bf16/fp16 autocast), B the batch of
                   this process (twice the documents for two-document pairs), L the sequence length

The run is refused when state + activations exceed the memory available on the device: CUDA's free memory, or
on the CPU `MemAvailable` of /proc/meminfo (total physical memory where that file is missing).
"""

from __future__ import annotations

import math
import os

import torch

from ssmbench.errors import SSMBenchError

ACTIVATION_COPIES = 4
STATE_BYTES_PER_PARAMETER = 16


def parameter_count(recipe, io) -> int:
    """Parameters of the recipe's model for the data's ends, counted on the meta device (no memory)."""
    from ssmbench.models.backbone import SequenceModel

    with torch.device("meta"):
        model = SequenceModel(recipe.model, recipe.init.name, io)
    return sum(p.numel() for p in model.parameters())


def memory_estimate(recipe, data, amp: torch.dtype | None, world: int = 1) -> dict[str, int]:
    """{"parameters", "state_bytes", "activation_bytes", "total_bytes"} by the formula in the module docstring."""
    m = recipe.model
    P = parameter_count(recipe, data.io)
    batch = math.ceil(recipe.train.batch_size / world) * (2 if data.io.pair else 1)
    activations = ACTIVATION_COPIES * (4 if amp is None else 2) * batch * data.seq_len * m.d_model * m.n_layers
    state = STATE_BYTES_PER_PARAMETER * P
    return {"parameters": P, "state_bytes": state, "activation_bytes": activations, "total_bytes": state + activations}


def available_memory(device: torch.device) -> int | None:
    """Bytes free for this process on `device` (None if unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_weights(recipe, io, device: torch.device) -> int:
    """For commands that build the model without training it (`init-tdi`): refuse when its fp32 weights alone
    (4 bytes per parameter) exceed the memory available on `device`; return the parameter count."""
    P = parameter_count(recipe, io)
    free = available_memory(device)
    if free is not None and 4 * P > free:
        raise SSMBenchError(f"model: the weights alone need {gib(4 * P)} ({P:,} parameters) but {device} has "
                            f"{gib(free)} available; lower model.d_model or model.n_layers")
    return P


def check(recipe, data, device: torch.device, amp: torch.dtype | None, world: int = 1) -> dict[str, int]:
    """Raise SSMBenchError naming the recipe field when the recipe cannot train on this data and device; return
    the memory estimate otherwise."""
    m, L = recipe.model, data.seq_len
    if m.pool == "none" and not data.io.per_step:
        raise SSMBenchError(f"model.pool: none keeps one output per time step, but {recipe.data.name} has one label per "
                            f"sequence; use mean or last")
    if m.kind in ("stu", "ar-stu") and m.stu.k > L:
        raise SSMBenchError(f"model.stu.k: {m.stu.k} spectral filters need sequences of at least {m.stu.k} steps, but "
                            f"{recipe.data.name} has length {L}; use at most {L}")
    if m.kind == "ar-stu" and m.stu.k_y > L:
        raise SSMBenchError(f"model.stu.k_y: {m.stu.k_y} output lags need sequences of at least {m.stu.k_y} steps, "
                            f"but {recipe.data.name} has length {L}; use at most {L}")
    need = memory_estimate(recipe, data, amp, world)
    free = available_memory(device)
    if free is not None and need["total_bytes"] > free:
        raise SSMBenchError(
            f"model: training needs at least {gib(need['total_bytes'])} ({need['parameters']:,} parameters with "
            f"gradients and AdamW moments: {gib(need['state_bytes'])}; activations of batch x length x d_model x "
            f"n_layers: {gib(need['activation_bytes'])}) but {device} has {gib(free)} available; lower model.d_model, "
            f"model.n_layers or train.batch_size")
    return need
