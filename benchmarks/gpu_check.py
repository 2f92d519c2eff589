"""Every GPU figure of issues 12 (S4D) and 13 (STU, AR-STU) in one process, in OUT/gpu_check.json and OUT/gpu_check.md.

    python benchmarks/gpu_check.py --reference PATH/s4d.py --out OUT        (run by benchmarks/gpu_check.sh)

1. numerics: an S4D block (bidirectional, H = 256, N = 64, L = 4096, B = 2) on the device, fp32 and bf16 autocast,
   with the Triton kernel and with the PyTorch (blocked) kernel, against the same block in float64 on the CPU:
   largest |difference| of the output and of every gradient (input and parameters), relative to the largest
   |value| of that tensor.
2. layer: `ssmbench.bench.run_bench` at the issue's shapes (L = 1024 B = 32, L = 4096 B = 8, L = 16384 B = 8;
   H = 256, N = 64; fp32 and bf16), with the reference s4d.py timed in the same rounds, the lower bound, the
   kernel launches per forward+backward (`ops`) and the peak memory of each case.
3. recipes: the training step of recipes/lra/{image,text,pathx}/s4d.yaml on synthetic data of the task's shape
   (random pixels or bytes, random labels: no dataset files), through `Trainer.train_step` as `ssmbench train`
   runs it (precision auto = bf16), eager and with `train.cuda_graphs` (the warm-up then includes the 3 warm-up
   steps and the capture): seconds per step and samples/s over the timed steps after a warm-up (one
   synchronization at each end), peak memory (torch.cuda.max_memory_allocated, and max_memory_reserved, which
   includes the graph's private memory pool).
4. stu (issue 13): the same (eager and with graphs) for recipes/lra/{image,text,pathx}/{stu,ar-stu}.yaml and
   recipes/lra/pathx/stu-tensordot.yaml (a step that runs out of memory is recorded as such), the step-time ratios
   of the issue's targets, and the STU (exact and tensordot) and AR-STU blocks alone (H = 256, L = 1024 / 4096 /
   16384, B = 8, fp32) through `run_bench`: time and peak memory, AR-STU's chunked scan beside its plain loop.
`--sections` picks some of s4d (1-3) and stu (4); both by default.

`--smoke` shrinks every shape and skips the memory measurement, so the script runs in seconds on the CPU
(tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import TensorDataset

from ssmbench import runs
from ssmbench.bench import environment, milliseconds, run_bench
from ssmbench.data.base import DataBundle
from ssmbench.data.text import BYTE_VOCAB
from ssmbench.errors import SSMBenchError
from ssmbench.models.backbone import ModelIO
from ssmbench.models.s4d import S4D
from ssmbench.recipe import validate_recipe
from ssmbench.train import engine

ROOT = Path(__file__).resolve().parents[1]
LAYER_SHAPES = [(1024, 32), (4096, 8), (16384, 8)]  # (L, B) of the table
# recipe -> (sequence length, ModelIO of the task)
TASKS = {"image": (1024, ModelIO(1, "real", 10)), "text": (4096, ModelIO(BYTE_VOCAB, "tokens", 2)),
         "pathx": (16384, ModelIO(1, "real", 2))}
STU_LENGTHS, STU_BATCH, STU_D_MODEL = [1024, 4096, 16384], 8, 256  # the STU/AR-STU block alone (section 4)
# the STU-family recipes of section 4 per task (pathx also with the tensordot approximation)
STU_MODELS = {"image": ("stu", "ar-stu"), "text": ("stu", "ar-stu"), "pathx": ("stu", "stu-tensordot", "ar-stu")}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()


def forward_backward(block: torch.nn.Module, x: torch.Tensor, g: torch.Tensor, precision: str) -> list[torch.Tensor]:
    x = x.clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        y = block(x)
    y.float().backward(g)
    return [y, x.grad] + [p.grad for p in block.parameters()]


def numerics(device: str, L: int, H: int, N: int, B: int) -> list[dict]:
    """Output and gradient errors against float64 on the CPU (section 1 of the module docstring)."""
    torch.manual_seed(0)
    ref = S4D(H, d_state=N, bidirectional=True).double()
    x, g = torch.randn(B, L, H, dtype=torch.float64), torch.randn(B, L, H, dtype=torch.float64)
    exact = forward_backward(ref, x, g, "fp32")
    rows = []
    for kernel in ("triton", "blocked"):
        block = S4D(H, d_state=N, bidirectional=True, backend="triton" if kernel == "triton" else "torch")
        block.load_state_dict(ref.state_dict())
        block.to(device)
        for precision in ("fp32", "bf16"):
            block.zero_grad(set_to_none=True)
            got = forward_backward(block, x.float().to(device), g.float().to(device), precision)
            rows.append({"kernel": kernel, "precision": precision, "L": L, "output_rel": relative(got[0], exact[0]),
                         "grad_rel": max(relative(a, b) for a, b in zip(got[1:], exact[1:]))})
    return rows


def synthetic_bundle(io: ModelIO, L: int, n: int) -> DataBundle:
    """Random inputs of the task's shape and random labels (timing only)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randint(1, io.d_input, (n, L), generator=g) if io.input_kind == "tokens"
         else torch.randn(n, L, io.d_input, generator=g))
    data = TensorDataset(x, torch.randint(0, io.n_outputs, (n,), generator=g))
    return DataBundle(train=data, val=data, test=data, io=io, seq_len=L, task="classification", source="synthetic",
                      provenance="gpu_check: random inputs and labels", facts={})


def time_recipe(name: str, device: str, warmup: int, steps: int, smoke: bool, cuda_graphs: bool,
                model: str = "s4d") -> dict:
    """Seconds per training step, samples/s and peak memory of recipes/lra/NAME/MODEL.yaml (sections 3 and 4); a
    step that runs out of device memory gives a row with status "out of memory" and no timing."""
    path = f"recipes/lra/{name}/{model}.yaml"
    raw = yaml.safe_load((ROOT / path).read_text())
    raw["train"].update(device=device, cuda_graphs=cuda_graphs)
    L, io = TASKS[name]
    if smoke:
        L = 64
        raw["model"].update(d_model=16, n_layers=1)
        raw["train"]["batch_size"] = 4
    recipe = validate_recipe(raw)
    B = recipe.train.batch_size
    real_build_data = engine.build_data
    engine.build_data = lambda cfg: synthetic_bundle(io, L, B * (warmup + steps))
    try:
        with tempfile.TemporaryDirectory() as folder:  # not a writer: no run record, no checkpoints
            trainer = engine.Trainer(recipe, Path(folder), quiet=True, log=lambda *_: None, is_writer=False)
    finally:
        engine.build_data = real_build_data
    data = trainer.data.train
    batches = list(engine.loader(data, engine.EpochBatches(len(data), B, 0, 0), 0, trainer.device))
    cuda = trainer.device.type == "cuda"
    row = {"recipe": path, "L": L, "batch": B, "d_model": recipe.model.d_model, "n_layers": recipe.model.n_layers,
           "precision": str(trainer.amp or "fp32").replace("torch.", ""), "cuda_graphs": trainer.graph is not None,
           "steps": steps, "status": "ok", "s_per_step": None, "samples_per_s": None, "peak_gib": None,
           "reserved_gib": None}
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()  # the graph's pool, reserved at the capture, stays in the reserved peak
    try:
        for x, y in batches[:warmup]:
            trainer.train_step(x, y)
        trainer.collect()
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for x, y in batches[warmup:]:
            trainer.train_step(x, y)
        trainer.collect()  # reads the device tally: waits for the last step
    except torch.OutOfMemoryError:
        row["status"] = "out of memory"
    except (RuntimeError, SSMBenchError) as e:  # e.g. a failed capture: recorded, the other rows still run
        row["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    else:
        seconds = (time.perf_counter() - start) / steps
        row.update(s_per_step=seconds, samples_per_s=B / seconds)
    if cuda:
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        row["reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    del trainer, batches
    return row


def step_ratios(rows: list[dict]) -> list[str]:
    """Issue 13's targets as ratios of step times: AR-STU / STU per task, STU / S4D at Path-X (where both ran)."""
    step = {(r["recipe"], r["cuda_graphs"]): r["s_per_step"] for r in rows if r["s_per_step"] is not None}
    pairs = [(f"recipes/lra/{t}/ar-stu.yaml", f"recipes/lra/{t}/stu.yaml") for t in TASKS]
    pairs += [(f"recipes/lra/pathx/{m}.yaml", "recipes/lra/pathx/s4d.yaml") for m in ("stu", "stu-tensordot")]
    found = [f"- {a.split('/')[2]}{' (CUDA graphs)' if g else ''}: {a.split('/')[3][:-5]} / {b.split('/')[3][:-5]} "
             f"step time = {step[a, g] / step[b, g]:.2f}"
             for g in (False, True) for a, b in pairs if (a, g) in step and (b, g) in step]
    return ["", "## Step-time ratios", ""] + found if found else []


def markdown(record: dict) -> str:
    env = record["environment"]
    lines = [f"# GPU check: {env.get('device_name')} ({env['device']}), torch {env['torch']}", "",
             f"triton {env.get('triton')}, CUDA {env.get('cuda')}, peaks {env.get('peaks')}"]
    if record["numerics"]:
        lines += ["", "## Numerics vs float64 on the CPU (S4D block, bidirectional; max |diff| / max |value|)", "",
                  "| kernel | precision | L | output | gradients |", "|---|---|---|---|---|"]
        lines += [f"| {r['kernel']} | {r['precision']} | {r['L']} | {r['output_rel']:.1e} | {r['grad_rel']:.1e} |"
                  for r in record["numerics"]]
    if record["layer"]:
        lines += ["", "## S4D block forward+backward (ref/t > 1: faster than the reference; t/bound: x the lower bound)",
                  "", "| case | L | B | precision | median ms | ref/t | t/bound | ops | peak MB | memory vs reference |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
    rows = record["layer"]
    for r in rows:
        ref = next((q for q in rows if q["block"] == "reference" and q["L"] == r["L"]
                    and q["precision"] == r["precision"]), None)
        mem = r.get("peak_bytes")
        speed = f"{ref['median_s'] / r['median_s']:.2f}" if ref else "-"
        bound = f"{r['median_s'] / r['bound_s']:.1f}" if r.get("bound_s") else "-"
        peak = "-" if mem is None else f"{mem / 2**20:.0f}"
        memory = f"{mem / ref['peak_bytes']:.2f}" if mem and ref and ref.get("peak_bytes") else "-"
        case = r["block"] if r["block"] == r["path"] else f"{r['block']} {r['path']}"
        lines.append(f"| {case} | {r['L']} | {r['batch']} | {r['precision']} | "
                     f"{milliseconds(r['median_s'])} | {speed} | {bound} | {r.get('ops', '-')} | {peak} | {memory} |")
    lines += ["", "## Training step on synthetic data of the task's shape", "",
              "| recipe | L | B | layers x H | precision | CUDA graph | s/step | samples/s | peak GiB | reserved GiB "
              "| status |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in record["recipes"] + record["stu_recipes"]:
        peak, reserved = ("-" if r[k] is None else f"{r[k]:.2f}" for k in ("peak_gib", "reserved_gib"))
        timing = "- | -" if r["s_per_step"] is None else f"{r['s_per_step']:.4f} | {r['samples_per_s']:.0f}"
        lines.append(f"| `{r['recipe']}` | {r['L']} | {r['batch']} | {r['n_layers']} x {r['d_model']} | "
                     f"{r['precision']} | {'yes' if r['cuda_graphs'] else 'no'} | {timing} | {peak} | {reserved} "
                     f"| {r['status']} |")
    lines += step_ratios(record["recipes"] + record["stu_recipes"])
    if record["stu_layer"]:
        lines += ["", "## STU / AR-STU block forward+backward (fp32)", "",
                  "| block | path | L | B | H | median ms | peak MB |", "|---|---|---|---|---|---|---|"]
        for r in record["stu_layer"]:
            peak = "-" if r.get("peak_bytes") is None else f"{r['peak_bytes'] / 2**20:.0f}"
            lines.append(f"| {r['block']} | {r['path']} | {r['L']} | {r['batch']} | {r['d_model']} | "
                         f"{milliseconds(r['median_s'])} | {peak} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", help="path of the reference s4d.py (state-spaces/s4 models/s4/s4d.py)")
    p.add_argument("--out", default="gpu-check", help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--device", default="cuda")
    p.add_argument("--reps", type=int, default=10, help="timed rounds per layer case")
    p.add_argument("--smoke", action="store_true", help="tiny shapes (a CPU test of the script)")
    p.add_argument("--sections", default="s4d,stu", help="comma-separated: s4d (issue 12), stu (issue 13)")
    a = p.parse_args(argv)
    sections = set(a.sections.split(","))
    if not sections or sections - {"s4d", "stu"}:
        p.error(f"--sections: expected a comma-separated subset of s4d,stu; got {a.sections!r}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    H, N = (8, 8) if a.smoke else (256, 64)
    shapes = [(64, 2)] if a.smoke else LAYER_SHAPES
    record: dict = {"environment": environment(a.device, torch.get_num_threads()), "numerics": [], "layer": [],
                    "recipes": [], "stu_recipes": [], "stu_layer": []}
    try:
        import triton

        record["environment"]["triton"] = triton.__version__
    except ImportError:
        record["environment"]["triton"] = None
    record["environment"]["cuda"] = torch.version.cuda
    t0 = time.perf_counter()

    def done(what: str) -> None:
        """Log a finished part and rewrite the report with everything so far (a timeout loses only the rest)."""
        record["seconds"] = time.perf_counter() - t0
        runs.atomic_write_json(out / "gpu_check.json", record)
        runs.atomic_write_text(out / "gpu_check.md", markdown(record))
        print(f"{what} done ({record['seconds']:.0f} s)", flush=True)

    def bench_part(*args, **kwargs) -> list[dict]:
        part = run_bench(*args, device=a.device, log=lambda m: print(m, flush=True), **kwargs)
        record["environment"].update(part["environment"])
        return part["results"]

    if "s4d" in sections:
        record["numerics"] = numerics(a.device, 64 if a.smoke else 4096, H, N, 2)
        done("numerics")
        for L, B in shapes:
            record["layer"] += bench_part([L], B, H, N, ["s4d"], a.reps, memory=not a.smoke, reference=a.reference,
                                          precisions=("fp32", "bf16"))
        done("layer table")
        for name in TASKS:
            for cuda_graphs in (False, True):  # on the CPU (--smoke) the field is ignored: both rows run eager
                record["recipes"].append(time_recipe(name, a.device, 2 if a.smoke else 6, 2 if a.smoke else 30,
                                                     a.smoke, cuda_graphs))
            done(name)
    if "stu" in sections:
        for name in TASKS:
            for model in STU_MODELS[name]:
                for cuda_graphs in (False, True):
                    record["stu_recipes"].append(time_recipe(name, a.device, 2 if a.smoke else 6, 2 if a.smoke else 10,
                                                             a.smoke, cuda_graphs, model))
                done(f"{name} {model}")
        record["stu_layer"] = bench_part([64] if a.smoke else STU_LENGTHS, 2 if a.smoke else STU_BATCH, H, N,
                                         ["stu", "stu-tensordot", "ar-stu"], 1 if a.smoke else 3, memory=not a.smoke,
                                         stu_d_model=8 if a.smoke else STU_D_MODEL)
        done("STU block table")
    print((out / "gpu_check.md").read_text())
    return record


if __name__ == "__main__":
    main()
