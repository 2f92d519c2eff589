"""Memory of one training step of a recipe's whole model: the bytes saved for the backward and the peak.

    python benchmarks/model_memory.py recipes/lra/pathx/stu.yaml --lengths 1024,2048,4096 --batch 16

For each length L: the model of the recipe (input: one real channel, two classes) takes one forward+backward on a
random (batch, L, 1) input under autocast (bf16 unless --precision fp32), after a warm-up step at batch 1.
- saved: the bytes of every tensor the forward saves for the backward (`saved_tensors_hooks`), each storage
  counted once, parameters included;
- peak: the rise of memory during the step, as `ssmbench bench` measures it (CPU: VmHWM - VmRSS; CUDA:
  max_memory_allocated - memory_allocated).
Both are O(L) for the STU models, so a few short lengths extrapolate to Path-X (L = 16384) where the machine has
too little memory to run it; on a large GPU pass the recipe's own length.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ssmbench.bench import _rss_bytes
from ssmbench.models.backbone import ModelIO, SequenceModel
from ssmbench.recipe import load_recipe


def step(model: torch.nn.Module, L: int, batch: int, device: torch.device, amp: torch.dtype | None) -> dict[int, int]:
    """One forward+backward; returns {storage address: bytes} of what the forward saved for the backward."""
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x = torch.randn(batch, L, 1, device=device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = model(x)
    out.float().sum().backward()
    model.zero_grad(set_to_none=True)
    return saved


def measure(model: torch.nn.Module, L: int, batch: int, device: torch.device, amp: torch.dtype | None) -> dict:
    step(model, L, 1, device, amp)  # filters, FFT plans, thread pools
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        saved = step(model, L, batch, device, amp)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        base = _rss_bytes("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS (Linux)
        saved = step(model, L, batch, device, amp)
        peak = _rss_bytes("VmHWM") - base
    return {"L": L, "saved_GiB": sum(saved.values()) / 2**30, "peak_GiB": peak / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--lengths", default="1024,2048,4096")
    parser.add_argument("--batch", type=int, help="default: the recipe's train.batch_size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, ["model.stu.cache_dir=null"])
    device = torch.device(args.device)
    batch = args.batch or recipe.train.batch_size
    model = SequenceModel(recipe.model, recipe.init.name, ModelIO(d_input=1, input_kind="real", n_outputs=2)).to(device)
    amp = torch.bfloat16 if args.precision == "bf16" else None
    print(f"{args.recipe}: {recipe.model.n_layers} x {recipe.model.d_model}, batch {batch}, {args.precision}, {device}")
    for L in (int(t) for t in args.lengths.split(",")):
        r = measure(model, L, batch, device, amp)
        print(f"L = {r['L']:6d}: saved for the backward {r['saved_GiB']:.2f} GiB, step peak {r['peak_GiB']:.2f} GiB")


if __name__ == "__main__":
    main()
