"""`ssmbench bench`: forward+backward time and peak memory of sequence blocks, fast path vs straightforward path.

For every block and length L, the paths of that block are timed in the same process with interleaved
repetitions (one step of each path per round), so machine load hits them alike; the median and the minimum are
reported. One step = forward of a (batch, L, d_model) input plus backward of a fixed random cotangent, with the
parameter gradients reset in between. On CUDA the step is timed with CUDA events after a synchronize.

Peak memory is measured in a fresh subprocess per case, around one step that follows a warm-up step at
L = 16, batch 1 (so library and thread-pool start-up are not counted, and no allocator cache of the large
step is reused):
- CPU: the rise of the resident set size, VmHWM - VmRSS before the step, after resetting VmHWM through
  /proc/self/clear_refs (Linux); elsewhere ru_maxrss, which includes the import peak. tracemalloc cannot see
  torch's allocations, and RSS also counts pages touched by the FFT and BLAS libraries.
- CUDA: torch.cuda.max_memory_allocated() - memory_allocated() before the step.

The difference check runs the paths of one block with identical parameters on the same input and cotangent and
reports the largest difference of the outputs and of all gradients (input and parameters), absolute and relative
to the largest |value| of each tensor (the table shows the relative ones).

A block is built by `build_block(case)`: "s4d" (`S4D(d_model, d_state)` with `path` fast or direct), "stu"
(`ssmbench.models.stu.STU`, one path), "ar-stu" (`ARSTU` with k_y = 2 and M^y_2 = 0.9 I as in the LRA recipes,
`path` chunked: the chunked scan, loop: one time step after the other; in both STU blocks the zero-initialized
M^u and M^phi are drawn from N(0, 1 / (k H)), so the output is not 0), or any "FILE.py:function" that takes the
case and returns (module, layout) with layout "BLH" or "BHL" (benchmarks/compare_reference.py uses this for a
reference s4d.py).
"""

from __future__ import annotations

import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ssmbench.errors import SSMBenchError

PATHS = {"s4d": ("fast", "direct"), "stu": ("fast",), "ar-stu": ("chunked", "loop")}


@dataclass
class Case:
    block: str  # "s4d", "stu", "ar-stu" or "FILE.py:function"
    path: str  # "fast" | "direct" for s4d, "chunked" | "loop" for ar-stu; a label otherwise
    L: int
    batch: int
    d_model: int
    d_state: int = 64
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0
    options: dict = field(default_factory=dict)  # passed through to external builders


def build_block(case: Case) -> tuple[torch.nn.Module, str]:
    """(module, input layout) for a case, with parameters drawn from `case.seed`."""
    torch.manual_seed(case.seed)
    if case.block == "s4d":
        from ssmbench.models.s4d import S4D

        return S4D(case.d_model, d_state=case.d_state, path=case.path), "BLH"
    if case.block in ("stu", "ar-stu"):
        from ssmbench.models.stu import ARSTU, STU

        if case.block == "stu":
            layer = STU(case.d_model)
        else:
            layer = ARSTU(case.d_model, ar_init=0.9, scan_chunk=case.L if case.path == "loop" else None)
        with torch.no_grad():  # M^u, M^phi start at 0 (the output would be 0): N(0, 1 / (k H)) instead
            for M in (layer.M_u, layer.M_phi_plus, layer.M_phi_minus):
                if M is not None:
                    M.normal_(std=(layer.k * case.d_model) ** -0.5)
        return layer, "BLH"
    file, _, name = case.block.rpartition(":")
    spec = importlib.util.spec_from_file_location(f"ssmbench_bench_{Path(file).stem}", file)
    if not file.endswith(".py") or spec is None or not Path(file).is_file():
        raise SSMBenchError(f"bench: block {case.block!r} is neither s4d, stu, ar-stu nor FILE.py:function")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)(case)


def make_inputs(case: Case, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Input x (requires grad) and cotangent g, both (B, L, H) or (B, H, L), from a fixed seed."""
    shape = (case.batch, case.L, case.d_model) if layout == "BLH" else (case.batch, case.d_model, case.L)
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(shape, generator=gen).to(case.device).requires_grad_()
    g = torch.randn(shape, generator=gen).to(case.device)
    return x, g


def step(module: torch.nn.Module, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """One forward+backward; returns the output (detached)."""
    module.zero_grad(set_to_none=True)
    x.grad = None
    y = module(x)
    y = y[0] if isinstance(y, tuple) else y
    y.backward(g)
    return y.detach()


def _prepare(case: Case) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    module, layout = build_block(case)
    module = module.to(case.device)
    x, g = make_inputs(case, layout)
    return module, x, g


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call; CUDA events around it on CUDA, perf_counter on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_cases(cases: list[Case], reps: int) -> list[dict[str, float]]:
    """Interleaved timing of cases (the paths of one block and length): median and min seconds per case."""
    prepared = [_prepare(c) for c in cases]
    device = torch.device(cases[0].device)
    for module, x, g in prepared:  # warm-up: filters, FFT plans, allocator
        step(module, x, g)
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(reps):
        for i, (module, x, g) in enumerate(prepared):
            times[i].append(timed(lambda: step(module, x, g), device))
    return [{"median_s": statistics.median(t), "min_s": min(t), "reps": len(t)} for t in times]


def max_differences(cases: list[Case]) -> dict[str, float]:
    """Largest |difference| of the output and of every gradient (input and parameters) between cases[1:] and
    cases[0] with the same parameters: absolute, and relative to the largest |value| of the same tensor."""
    ref_module, x, g = _prepare(cases[0])
    y_ref = step(ref_module, x, g)
    ref = {"output": y_ref, "input": x.grad.clone(), **{n: p.grad for n, p in ref_module.named_parameters()}}
    out = {"output": 0.0, "output_rel": 0.0, "grad": 0.0, "grad_rel": 0.0}
    for case in cases[1:]:
        module, x2, g2 = _prepare(case)
        module.load_state_dict(ref_module.state_dict())
        y = step(module, x2, g2)
        other = {"output": y, "input": x2.grad, **{n: p.grad for n, p in module.named_parameters()}}
        for name, r in ref.items():
            diff = (other[name] - r).abs().max().item()
            kind = "output" if name == "output" else "grad"
            out[kind] = max(out[kind], diff)
            out[kind + "_rel"] = max(out[kind + "_rel"], diff / max(r.abs().max().item(), 1e-30))
    return out


def _rss_bytes(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_memory_here(case: Case) -> dict[str, Any]:
    """Peak extra memory of one step of `case` in this (fresh) process; see the module docstring."""
    if case.threads:
        torch.set_num_threads(case.threads)
    module, x, g = _prepare(case)
    warm = Case(**{**asdict(case), "L": min(case.L, 16), "batch": 1})
    step(module, *make_inputs(warm, build_block(warm)[1]))  # library and thread-pool start-up is not the step's
    module.zero_grad(set_to_none=True)
    if torch.device(case.device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(module, x, g)
        torch.cuda.synchronize()
        return {"peak_bytes": torch.cuda.max_memory_allocated() - base, "method": "cuda max_memory_allocated"}
    def max_rss() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

    base = _rss_bytes("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        method = "rss: VmHWM - VmRSS (clear_refs)"
    except OSError:
        base, method = max_rss(), "rss: ru_maxrss delta"
    step(module, x, g)
    peak = _rss_bytes("VmHWM") if method.endswith("(clear_refs)") else max_rss()
    return {"peak_bytes": max(0, peak - base), "method": method}


def peak_memory(case: Case) -> dict[str, Any]:
    """Run `peak_memory_here` in a fresh Python process (`python -m ssmbench.bench CASE_JSON`)."""
    proc = subprocess.run([sys.executable, "-m", "ssmbench.bench", json.dumps(asdict(case))],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"peak_bytes": None, "method": f"failed: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def environment(device: str, threads: int) -> dict[str, Any]:
    from ssmbench import runs

    env = runs.environment(device)
    env["torch_threads"] = threads
    return env


def run_bench(lengths: list[int], batch: int, d_model: int, d_state: int, blocks: list[str], reps: int,
              device: str = "auto", threads: int | None = None, memory: bool = True, stu_d_model: int | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Time (and measure) every block x path x length; returns the JSON-ready record."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SSMBenchError(f"bench --device: '{device}' requested but CUDA is not available; use auto or cpu")
    if threads:
        torch.set_num_threads(threads)
    results = []
    for block in blocks:
        if block in ("stu", "ar-stu") and importlib.util.find_spec("ssmbench.models.stu") is None:
            log("bench: ssmbench.models.stu is not available; skipping the STU block")
            continue
        H = stu_d_model if (block in ("stu", "ar-stu") and stu_d_model) else d_model
        for L in lengths:
            cases = [Case(block, p, L, batch, H, d_state, device, torch.get_num_threads()) for p in PATHS[block]]
            log(f"bench: {block} L={L} B={batch} H={H}: timing {', '.join(PATHS[block])} ({reps} rounds)")
            timing = time_cases(cases, reps)
            diffs = max_differences(cases) if len(cases) > 1 else None
            for case, t in zip(cases, timing):
                row = {"group": f"{block} L={L}", "block": block, "path": case.path, "L": L, "batch": batch,
                       "d_model": H, "d_state": d_state, **t, "max_abs_diff": diffs}
                if memory:
                    row.update(peak_memory(case))
                results.append(row)
    return {"environment": environment(device, torch.get_num_threads()),
            "config": {"lengths": lengths, "batch": batch, "d_model": d_model, "d_state": d_state, "reps": reps,
                       "blocks": blocks, "stu_d_model": stu_d_model},
            "results": results}


def print_table(record: dict, console=None) -> None:
    """Rich table: time and memory per case, ratios against the first case of its group, differences."""
    from rich.console import Console
    from rich.table import Table

    env = record["environment"]
    table = Table(title=f"forward+backward on {env['device']} ({env['device_name']}), {env['torch_threads']} threads, "
                        f"torch {env['torch']}")
    for col in ("case", "L", "med ms", "min ms", "t/1st", "MB", "MB/1st", "dy rel", "dgrad rel"):
        table.add_column(col, justify="left" if col == "case" else "right", no_wrap=True)
    first: dict[str, dict] = {}
    for r in record["results"]:
        ref = first.setdefault(r["group"], r)
        mem = r.get("peak_bytes")
        d = r.get("max_abs_diff") or {}
        case = r["block"] if r["block"] == r["path"] else f"{r['block']} {r['path']}"
        table.add_row(case, str(r["L"]), f"{r['median_s'] * 1e3:.0f}", f"{r['min_s'] * 1e3:.0f}",
                      f"{r['median_s'] / ref['median_s']:.2f}",
                      "-" if mem is None else f"{mem / 2**20:.0f}",
                      "-" if not (mem and ref.get("peak_bytes")) else f"{mem / ref['peak_bytes']:.2f}",
                      f"{d['output_rel']:.1e}" if d else "-", f"{d['grad_rel']:.1e}" if d else "-")
    (console or Console()).print(table)


def write_json(record: dict, out: Path) -> None:
    from ssmbench import runs

    out.parent.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_json(out, record)


def parse_list(text: str, option: str, cast: Callable = str) -> list:
    """"1024,4096" -> [1024, 4096]; a clear error naming the option otherwise."""
    try:
        items = [cast(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SSMBenchError(f"bench {option}: expected a comma-separated list, got {text!r}") from None
    if not items:
        raise SSMBenchError(f"bench {option}: the list is empty")
    return items


def bench(lengths: str, batch: int, d_model: int, d_state: int, blocks: str, reps: int, device: str,
          threads: int | None, memory: bool, stu_d_model: int | None, out: Path, console=None) -> dict:
    """The `ssmbench bench` command: run, print the table, write the JSON record to `out`."""
    Ls = parse_list(lengths, "--lengths", int)
    if min(Ls) < 1:
        raise SSMBenchError("bench --lengths: every length must be >= 1")
    names = parse_list(blocks, "--blocks")
    unknown = [b for b in names if b not in PATHS]
    if unknown:
        raise SSMBenchError(f"bench --blocks: unknown block(s) {', '.join(unknown)}; known: {', '.join(PATHS)}")
    log = console.print if console else print
    record = run_bench(Ls, batch, d_model, d_state, names, reps, device, threads, memory, stu_d_model, log=log)
    print_table(record, console)
    write_json(record, out)
    log(f"wrote {out}")
    return record


if __name__ == "__main__":  # worker for `peak_memory`: one case, one step, JSON on stdout
    print(json.dumps(peak_memory_here(Case(**json.loads(sys.argv[1])))))
