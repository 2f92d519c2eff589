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

A block is built by `build_block(case)`: "s4", "dss", "s5", "lru" (the papers' baselines, `baseline_block`), "s4d" (`S4D(d_model, d_state)` with `path` fast or direct, or
"blocked": the fast path with the PyTorch kernel instead of the Triton one, timed on CUDA), "stu"
(`ssmbench.models.stu.STU`, one path), "ar-stu" (`ARSTU` with k_y = 2 and M^y_2 = 0.9 I as in the LRA recipes,
`path` chunked: the chunked scan, loop: one time step after the other), "stu-tensordot" (`STU` with
`mixing="tensordot"`, the approximation M^phi_k = diag(m_k) P; in the STU blocks the zero-initialized M^u, M^phi and m
are drawn from N(0, 1 / (k H)), so the output is not 0), "reference" (the S4D of a reference `s4d.py`
given with `--reference`, e.g. state-spaces/s4's `models/s4/s4d.py`: the user's file, loaded at run time, never part
of ssmbench), or any "FILE.py:function" that takes the case and returns (module, layout) with layout "BLH" or "BHL".

Precision: `fp32`, or `bf16` (the step under torch.autocast, as `train.precision: bf16` runs it). On CUDA every
case also gets a lower bound (`lower_bound`) computed from the device's datasheet peaks (`PEAKS`), and the
table shows how far the measured time is from it, and the reference's time over each case's.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import resource
import statistics
import subprocess
import sys
import time
import types
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from ssmbench.errors import SSMBenchError
from ssmbench.models.s4d import TRITON_INSTALLED, TRITON_INTERPRETED

PATHS = {"s4d": ("fast", "direct"), "stu": ("fast",), "ar-stu": ("chunked", "loop"), "stu-tensordot": ("fast",),
         "s4": ("fast",), "dss": ("fast",), "s5": ("fast",), "lru": ("fast",)}
BASELINE_BLOCKS = ("s4", "dss", "s5", "lru")
STU_BLOCKS = ("stu", "ar-stu", "stu-tensordot")


@dataclass
class Case:
    block: str  # "s4d", "stu", "ar-stu", "stu-tensordot" or "FILE.py:function"
    path: str  # "fast" | "direct" for s4d, "chunked" | "loop" for ar-stu; a label otherwise
    L: int
    batch: int
    d_model: int
    d_state: int = 64
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0
    options: dict = field(default_factory=dict)  # passed through to external builders; s4d: {"bidirectional": True}
    precision: str = "fp32"  # or "bf16": the step under torch.autocast


def build_block(case: Case) -> tuple[torch.nn.Module, str]:
    """(module, input layout) for a case, with parameters drawn from `case.seed`."""
    torch.manual_seed(case.seed)
    if case.block == "s4d":
        from ssmbench.models.s4d import S4D

        path = "fast" if case.path == "blocked" else case.path
        return S4D(case.d_model, d_state=case.d_state, path=path, bidirectional=case.options.get("bidirectional", False),
                   backend="torch" if case.path == "blocked" else "triton"), "BLH"
    if case.block in BASELINE_BLOCKS:
        return baseline_block(case), "BLH"
    if case.block == "reference":
        ref = load_reference(case.options["reference"])
        torch.manual_seed(case.seed)
        if reference_block(ref) == "s4":  # state-spaces/s4 models/s4/s4.py: S4 itself (DPLR kernel, rank 1)
            return ref.S4Block(case.d_model, d_state=case.d_state, mode="nplr", dropout=0.0, transposed=True), "BHL"
        return ref.S4D(case.d_model, d_state=case.d_state, dropout=0.0, transposed=True), "BHL"
    if case.block in STU_BLOCKS:
        from ssmbench.models.stu import ARSTU, STU

        if case.block == "ar-stu":
            layer = ARSTU(case.d_model, ar_init=0.9, scan_chunk=case.L if case.path == "loop" else None)
        else:
            layer = STU(case.d_model, mixing="tensordot" if case.block == "stu-tensordot" else "full")
        with torch.no_grad():  # M^u, M^phi, m start at 0 (the output would be 0): N(0, 1 / (k H)) instead
            for M in (layer.M_u, layer.M_phi_plus, layer.M_phi_minus, layer.m_plus, layer.m_minus):
                if M is not None:
                    M.normal_(std=(layer.k * case.d_model) ** -0.5)
        return layer, "BLH"
    file, _, name = case.block.rpartition(":")
    spec = importlib.util.spec_from_file_location(f"ssmbench_bench_{Path(file).stem}", file)
    if not file.endswith(".py") or spec is None or not Path(file).is_file():
        raise SSMBenchError(f"bench: block {case.block!r} is neither {', '.join(PATHS)} nor FILE.py:function")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)(case)


def baseline_block(case: Case) -> torch.nn.Module:
    """The papers' baselines at the work of an S4D block with N = `d_state` (N/2 complex modes per channel): S4 with
    N real states (DPLR, rank 1), DSS with N/2 modes, S5 with P = N states (conjugate symmetric: N/2 complex, one
    block), LRU with N/2 complex states; S5 and LRU are MIMO (one state vector for all H channels)."""
    from ssmbench.models.dss import DSS
    from ssmbench.models.lru import LRU
    from ssmbench.models.s4 import S4
    from ssmbench.models.s5 import S5

    H, N, bidirectional = case.d_model, case.d_state, case.options.get("bidirectional", False)
    if case.block == "s4":
        return S4(H, d_state=N, bidirectional=bidirectional)
    if case.block == "dss":
        return DSS(H, d_state=N // 2, bidirectional=bidirectional)
    if case.block == "s5":
        return S5(H, d_state=N, blocks=1, bidirectional=bidirectional)
    return LRU(H, d_state=N // 2, bidirectional=bidirectional)


def reference_block(module: types.ModuleType) -> str:
    """The ssmbench block a reference file is timed beside: "s4" for an s4.py (it defines S4Block), else "s4d"."""
    return "s4" if hasattr(module, "S4Block") else "s4d"


def load_reference(path: str) -> types.ModuleType:
    """Import a reference s4d.py or s4.py as a module. s4d.py imports `einops` and `src.models.nn.DropoutNd` (only
    used for dropout > 0): when `src.models.nn` is not importable a stand-in module (torch's Dropout) is registered.
    s4.py imports `pytorch_lightning` for `rank_zero_only` (logging only): a stand-in is registered when it is
    missing."""
    if not Path(path).is_file():
        raise SSMBenchError(f"bench --reference: {path}: no such file; pass the path of a reference s4d.py")
    try:
        importlib.import_module("src.models.nn")
    except ImportError:
        for name in ("src", "src.models"):
            sys.modules.setdefault(name, types.ModuleType(name))
        nn_stub = types.ModuleType("src.models.nn")
        nn_stub.DropoutNd = torch.nn.Dropout
        sys.modules["src.models.nn"] = nn_stub
    if "pytorch_lightning" not in sys.modules and importlib.util.find_spec("pytorch_lightning") is None:
        utilities = types.ModuleType("pytorch_lightning.utilities")
        utilities.rank_zero_only = lambda fn: fn
        sys.modules.setdefault("pytorch_lightning", types.ModuleType("pytorch_lightning"))
        sys.modules.setdefault("pytorch_lightning.utilities", utilities)
    loader = importlib.machinery.SourceFileLoader("reference_s4d", str(path))  # whatever the file's suffix
    spec = importlib.util.spec_from_file_location("reference_s4d", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        raise SSMBenchError(f"bench --reference {path}: {e}; install what it imports (pip install -e '.[bench]')") from None
    except (Exception, SystemExit) as e:  # not Python (a SyntaxError), or a module that fails or exits on import
        raise SSMBenchError(f"bench --reference {path}: not an importable Python module ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); pass the path of a reference s4d.py") from None
    if not (hasattr(module, "S4D") or hasattr(module, "S4Block")):
        raise SSMBenchError(f"bench --reference {path}: defines no class S4D or S4Block; pass the path of a "
                            f"reference s4d.py or s4.py")
    return module


def make_inputs(case: Case, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Input x (requires grad) and cotangent g, both (B, L, H) or (B, H, L), from a fixed seed."""
    shape = (case.batch, case.L, case.d_model) if layout == "BLH" else (case.batch, case.d_model, case.L)
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(shape, generator=gen).to(case.device).requires_grad_()
    g = torch.randn(shape, generator=gen).to(case.device)
    return x, g


def step(module: torch.nn.Module, x: torch.Tensor, g: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """One forward+backward (under bf16 autocast for precision "bf16"); returns the output (detached)."""
    module.zero_grad(set_to_none=True)
    x.grad = None
    with torch.autocast(x.device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext():
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


WARMUP = 3


def time_cases(cases: list[Case], reps: int) -> list[dict[str, float]]:
    """Interleaved timing of cases (the paths of one block and length): median and min seconds per case, after
    WARMUP untimed steps of each (the first steps of a process also pay for CUDA/cuFFT set-up and allocator growth)."""
    prepared = [_prepare(c) for c in cases]
    device = torch.device(cases[0].device)
    for _ in range(WARMUP):  # warm-up: Triton compilation, filters, FFT plans, allocator
        for case, (module, x, g) in zip(cases, prepared):
            step(module, x, g, case.precision)
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(reps):
        for i, (module, x, g) in enumerate(prepared):
            times[i].append(timed(lambda: step(module, x, g, cases[i].precision), device))
    return [{"median_s": statistics.median(t), "min_s": min(t), "reps": len(t)} for t in times]


def max_differences(cases: list[Case]) -> dict[str, float]:
    """Largest |difference| of the output and of every gradient (input and parameters) between cases[1:] and
    cases[0] with the same parameters: absolute, and relative to the largest |value| of the same tensor."""
    ref_module, x, g = _prepare(cases[0])
    y_ref = step(ref_module, x, g, cases[0].precision)
    ref = {"output": y_ref, "input": x.grad.clone(), **{n: p.grad for n, p in ref_module.named_parameters()}}
    out = {"output": 0.0, "output_rel": 0.0, "grad": 0.0, "grad_rel": 0.0}
    for case in cases[1:]:
        module, x2, g2 = _prepare(case)
        module.load_state_dict(ref_module.state_dict())
        y = step(module, x2, g2, case.precision)
        other = {"output": y, "input": x2.grad, **{n: p.grad for n, p in module.named_parameters()}}
        for name, r in ref.items():
            diff = (other[name] - r).abs().max().item()
            kind = "output" if name == "output" else "grad"
            out[kind] = max(out[kind], diff)
            out[kind + "_rel"] = max(out[kind + "_rel"], diff / max(r.abs().max().item(), 1e-30))
    return out


# ATen ops that launch no kernel on CUDA: allocations and aliases (view ops are recognized by `OpOverload.is_view`).
NO_KERNEL_OPS = frozenset({"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "detach", "alias",
                           "lift_fresh"})


class OpCounter(TorchDispatchMode):
    """Counts what one piece of code launches: the ATen ops dispatched below autograd (forward and backward), each
    roughly one kernel launch on CUDA, except views and allocations (`NO_KERNEL_OPS`); and the launches of the
    fused Triton kernels (`models.vandermonde_triton.launch_observer`), which bypass the dispatcher. The tensor ops
    of Triton's interpreter inside a launch (TRITON_INTERPRET=1 on the CPU) are not counted."""

    def __init__(self):
        super().__init__()
        self.aten: Counter = Counter()
        self.triton: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not func.is_view and name not in NO_KERNEL_OPS:
            self.aten[name] += 1
        return func(*args, **(kwargs or {}))

    @contextmanager
    def launch(self, kernel: str):
        self.triton[kernel] += 1
        with _disable_current_modes():
            yield

    def __enter__(self):
        self._observed = importlib.import_module("ssmbench.models.vandermonde_triton") if TRITON_INSTALLED else None
        if self._observed is not None:
            self._observed.launch_observer = self.launch
        return super().__enter__()

    def __exit__(self, *exc):
        if self._observed is not None:
            self._observed.launch_observer = None
        return super().__exit__(*exc)


def count_ops(case: Case) -> dict[str, Any]:
    """Kernel launches of one forward+backward step of `case` (after a warm-up step): `ops` = ATen ops + Triton
    launches (`OpCounter`), and the most frequent ATen ops."""
    module, x, g = _prepare(case)
    step(module, x, g, case.precision)
    with OpCounter() as counter:
        step(module, x, g, case.precision)
    aten, triton = sum(counter.aten.values()), sum(counter.triton.values())
    return {"ops": aten + triton, "aten_ops": aten, "triton_launches": triton,
            "top_ops": dict(counter.aten.most_common(8))}


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
    step(module, *make_inputs(warm, build_block(warm)[1]), case.precision)  # library start-up is not the step's
    module.zero_grad(set_to_none=True)
    if torch.device(case.device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(module, x, g, case.precision)
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
    step(module, x, g, case.precision)
    peak = _rss_bytes("VmHWM") if method.endswith("(clear_refs)") else max_rss()
    return {"peak_bytes": max(0, peak - base), "method": method}


def peak_memory(case: Case) -> dict[str, Any]:
    """Run `peak_memory_here` in a fresh Python process (`python -m ssmbench.bench CASE_JSON`); on CUDA in this
    process, since the allocator's peak statistics see only this step's allocations."""
    if torch.device(case.device).type == "cuda":
        return peak_memory_here(case)
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


# Datasheet peaks (dense): memory bandwidth (bytes/s), float32 FLOP/s without tensor cores, bf16 tensor-core FLOP/s.
# Matched against torch.cuda.get_device_name in this order (the first name contained in it).
PEAKS = {"H200": (4.8e12, 67e12, 989e12), "H100 PCIe": (2.0e12, 51e12, 756e12), "H100": (3.35e12, 67e12, 989e12),
         "A100": (2.0e12, 19.5e12, 312e12)}


def device_peaks(device: str) -> dict[str, Any] | None:
    """The `PEAKS` entry of a CUDA device, None for the CPU or an unknown card."""
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    key = next((k for k in PEAKS if k in name), None)
    return None if key is None else dict(zip(("card", "bytes_per_s", "fp32_flops", "bf16_flops"), (key, *PEAKS[key])))


def lower_bound(case: Case, peaks: dict[str, Any]) -> dict[str, float]:
    """Seconds below which no implementation of one S4D block forward+backward can run on a device with `peaks`:

        t >= max(bytes / bandwidth, matmul FLOPs / matmul peak + FFT FLOPs / float32 peak)

    bytes: the input x read and the output y written by the forward; x and the cotangent g read and dx written by
    the backward: 5 B L H float32 values (anything more is an intermediate that a fused implementation keeps on
    chip). matmul: the Linear(H, 2H) costs 2 B L H (2H) FLOPs forward and twice that backward (dx and dW):
    12 B L H^2, on tensor cores in bf16 or in float32 (fp32; TF32 off). FFT: four real FFTs of size n =
    fft_size(L) per (batch, channel) (rfft of x and irfft forward; rfft of g and irfft backward), 2.5 n log2 n
    FLOPs each, in float32 (the kernel generation, O(H M L), is smaller for B > 1 and left out)."""
    from ssmbench.models.kernels import fft_size

    B, L, H = case.batch, case.L, case.d_model
    n = fft_size(L)
    data = 5 * B * L * H * 4
    matmul, fft = 12 * B * L * H * H, 4 * B * H * 2.5 * n * math.log2(n)
    matmul_peak = peaks["bf16_flops"] if case.precision == "bf16" else peaks["fp32_flops"]
    seconds = max(data / peaks["bytes_per_s"], matmul / matmul_peak + fft / peaks["fp32_flops"])
    return {"bound_s": seconds, "bound_bytes": data, "bound_flops": matmul + fft}


def run_bench(lengths: list[int], batch: int, d_model: int, d_state: int, blocks: list[str], reps: int,
              device: str = "auto", threads: int | None = None, memory: bool = True, stu_d_model: int | None = None,
              log: Callable[[str], None] = print, reference: str | None = None,
              precisions: tuple[str, ...] = ("fp32",), ops_only: bool = False, bidirectional: bool = False) -> dict:
    """Time (and measure) every block x path x precision x length; returns the JSON-ready record. With
    `reference`, the reference S4D (s4d.py) or S4 (s4.py) of that file is timed beside ssmbench's block of that kind
    in the same rounds.
    Every case also gets its kernel-launch count (`count_ops`); `ops_only` counts without timing, memory and
    differences (for the fused kernel in Triton's slow CPU interpreter, TRITON_INTERPRET=1). `bidirectional`
    builds the S4D blocks bidirectional (the STU blocks and the reference are causal)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SSMBenchError(f"bench --device: '{device}' requested but CUDA is not available; use auto or cpu")
    if threads:
        torch.set_num_threads(threads)
    ref_block = None if reference is None else reference_block(load_reference(reference))  # fails before timing
    peaks = device_peaks(device)
    results = []
    for block in blocks:
        if block in STU_BLOCKS and importlib.util.find_spec("ssmbench.models.stu") is None:
            log("bench: ssmbench.models.stu is not available; skipping the STU block")
            continue
        H = stu_d_model if (block in STU_BLOCKS and stu_d_model) else d_model
        paths = list(PATHS[block])
        if block == "s4d" and TRITON_INSTALLED and (device.startswith("cuda") or TRITON_INTERPRETED):
            paths.insert(1, "blocked")  # the fast path with the PyTorch kernel instead of the Triton one
        for precision in precisions:
            for L in lengths:
                common = dict(L=L, batch=batch, d_model=H, d_state=d_state, device=device,
                              threads=torch.get_num_threads(), precision=precision)
                cases = [Case(block, p, **common, options={"bidirectional": True} if bidirectional else {})
                         for p in paths]
                if block == ref_block:
                    cases.append(Case("reference", "reference", **common, options={"reference": reference}))
                log(f"bench: {block} L={L} B={batch} H={H} {precision}: "
                    f"{'counting' if ops_only else 'timing'} {', '.join(c.path for c in cases)}"
                    f"{'' if ops_only else f' ({reps} rounds)'}")
                timing = [{}] * len(cases) if ops_only else time_cases(cases, reps)
                ours = [c for c in cases if c.block == block]
                diffs = max_differences(ours) if len(ours) > 1 and not ops_only else None
                for case, t in zip(cases, timing):
                    row = {"group": f"{block} L={L} {precision}", "block": case.block, "path": case.path, "L": L,
                           "batch": batch, "d_model": H, "d_state": d_state, "precision": precision, **t,
                           "max_abs_diff": diffs if case.block == block else None, **count_ops(case)}
                    if peaks is not None and block == "s4d":
                        row.update(lower_bound(case, peaks))
                    if memory and not ops_only:
                        row.update(peak_memory(case))
                    results.append(row)
    return {"environment": {**environment(device, torch.get_num_threads()), "peaks": peaks},
            "config": {"lengths": lengths, "batch": batch, "d_model": d_model, "d_state": d_state, "reps": reps,
                       "blocks": blocks, "stu_d_model": stu_d_model, "reference": reference,
                       "precisions": list(precisions), "ops_only": ops_only, "bidirectional": bidirectional},
            "results": results}


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}" if seconds < 0.01 else f"{seconds * 1e3:.0f}"


def print_table(record: dict, console=None) -> None:
    """Rich table: time and memory per case, ratios against the first case of its group, the reference's time
    over the case's (ref/t, > 1: faster than the reference), the time over the lower bound, kernel launches per
    forward+backward (ops), differences. Without timings (ops_only) the time columns show "-"."""
    from rich.console import Console
    from rich.table import Table

    env = record["environment"]
    table = Table(title=f"forward+backward on {env['device']} ({env['device_name']}), {env['torch_threads']} threads, "
                        f"torch {env['torch']}")
    for col in ("case", "L", "prec", "med ms", "min ms", "t/1st", "ref/t", "t/bound", "ops", "MB", "MB/1st",
                "dy rel", "dgrad rel"):
        table.add_column(col, justify="left" if col == "case" else "right", no_wrap=True)
    first: dict[str, dict] = {}
    references = {r["group"]: r for r in record["results"] if r["block"] == "reference"}
    for r in record["results"]:
        ref = first.setdefault(r["group"], r)
        mem = r.get("peak_bytes")
        d = r.get("max_abs_diff") or {}
        case = r["block"] if r["block"] == r["path"] else f"{r['block']} {r['path']}"
        timed_row = "median_s" in r
        reference = references.get(r["group"]) if timed_row else None
        table.add_row(case, str(r["L"]), r.get("precision", "fp32"), milliseconds(r["median_s"]) if timed_row else "-",
                      milliseconds(r["min_s"]) if timed_row else "-",
                      f"{r['median_s'] / ref['median_s']:.2f}" if timed_row else "-",
                      f"{reference['median_s'] / r['median_s']:.2f}" if reference else "-",
                      f"{r['median_s'] / r['bound_s']:.1f}" if timed_row and r.get("bound_s") else "-",
                      str(r["ops"]) if "ops" in r else "-",
                      "-" if mem is None else f"{mem / 2**20:.0f}",
                      "-" if not (mem and ref.get("peak_bytes")) else f"{mem / ref['peak_bytes']:.2f}",
                      f"{d['output_rel']:.1e}" if d else "-", f"{d['grad_rel']:.1e}" if d else "-")
    (console or Console(width=None if sys.stdout.isatty() else 240)).print(table)  # off a terminal: no cut columns


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
          threads: int | None, memory: bool, stu_d_model: int | None, out: Path, console=None,
          reference: Path | None = None, precision: str = "fp32", ops_only: bool = False,
          bidirectional: bool = False) -> dict:
    """The `ssmbench bench` command: run, print the table, write the JSON record to `out`."""
    Ls = parse_list(lengths, "--lengths", int)
    if min(Ls) < 1:
        raise SSMBenchError("bench --lengths: every length must be >= 1")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise SSMBenchError(f"bench --device: '{device}' is not a device; use auto, cpu or cuda[:i]")
    if d_state % 2:
        raise SSMBenchError(f"bench --d-state: S4D-Lin stores complex-conjugate pairs, so the state size must be even "
                            f"(got {d_state}); use {d_state + 1}")
    names = parse_list(blocks, "--blocks")
    unknown = [b for b in names if b not in PATHS]
    if unknown:
        raise SSMBenchError(f"bench --blocks: unknown block(s) {', '.join(unknown)}; known: {', '.join(PATHS)}")
    precisions = parse_list(precision, "--precision")
    if set(precisions) - {"fp32", "bf16"}:
        raise SSMBenchError(f"bench --precision: {precision!r}; use fp32, bf16 or both (fp32,bf16)")
    if reference is not None and reference_block(load_reference(str(reference))) not in names:
        kind = reference_block(load_reference(str(reference)))
        raise SSMBenchError(f"bench --reference: the reference is an {kind.upper()} block; add {kind} to --blocks")
    if reference is not None and bidirectional:
        raise SSMBenchError("bench --reference: the reference S4D is causal; drop --bidirectional to compare with it")
    log = console.print if console else print
    record = run_bench(Ls, batch, d_model, d_state, names, reps, device, threads, memory, stu_d_model, log=log,
                       reference=None if reference is None else str(reference), precisions=tuple(precisions),
                       ops_only=ops_only, bidirectional=bidirectional)
    print_table(record, console)
    write_json(record, out)
    log(f"wrote {out}")
    return record


if __name__ == "__main__":  # worker for `peak_memory`: one case, one step, JSON on stdout
    print(json.dumps(peak_memory_here(Case(**json.loads(sys.argv[1])))))
