"""`ssmbench doctor`: whether this machine can train on its GPUs, and if not, why and what to do (docs/gpu.md).

One line per fact, each marked ok, warn, FAIL or info:
- torch's version and CUDA build, and the GPU code its wheel carries (`torch._C._cuda_getArchFlags`, which, unlike
  `torch.cuda.get_arch_list`, answers without a usable GPU);
- the driver and the GPUs as nvidia-smi lists them (or "no GPU"), and why CUDA is unusable when it is
  (`nvidia.cuda_problem`: a CPU build, a driver too old for the build, hidden devices, torch's own error);
- per GPU: whether the wheel has code for its compute capability (the same architecture, an older minor version of
  the same major one, whose code it runs, or PTX it compiles), native bf16 (capability >= 8.0; not
  `torch.cuda.is_bf16_supported`, which also counts emulation), free memory;
- NCCL;
- Triton: an ahead-of-time compile of the fused S4D forward for the first GPU's target (sm_90 without a GPU;
  models/triton_compile.py), and with a usable GPU the fused kernel's self-check there (models/backend.py).

The exit status is 1 when nvidia-smi lists a GPU that torch cannot use (or has no code for), else 0.
"""

from __future__ import annotations

import re

import torch

from ssmbench import nvidia

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"


def wheel_archs() -> list[str]:
    """The GPU code in this torch wheel, e.g. ['sm_75', ..., 'compute_120']; [] for a CPU build."""
    flags = getattr(torch._C, "_cuda_getArchFlags", None)
    return (flags() or "").split() if flags and torch.version.cuda else []


def runs_on(capability: float, archs: list[str]) -> str | None:
    """Which of the wheel's code a GPU of `capability` runs: its own SASS, an older minor version's SASS of the same
    major version, or PTX of an older capability (compiled by the driver at first use); None: nothing."""
    major, minor = divmod(round(capability * 10), 10)
    sass = [int(a[3:]) for a in archs if re.fullmatch(r"sm_\d+", a)]
    own = [s for s in sass if s // 10 == major and s % 10 <= minor]
    if own:
        return f"sm_{max(own)}"
    ptx = [int(a[8:]) for a in archs if re.fullmatch(r"compute_\d+", a) and int(a[8:]) <= 10 * major + minor]
    return f"compute_{max(ptx)} (PTX, compiled at first use)" if ptx else None


def triton_compile_line(cc: int) -> tuple[str, str]:
    """(status, text) of an ahead-of-time compile of the fused S4D forward (d_state 64, bidirectional) for sm_cc."""
    try:
        import triton

        from ssmbench.models.s4d import S4D
        from ssmbench.models.triton_compile import capture, compile_for
    except ImportError as e:
        return WARN, f"Triton: not importable ({e}); the S4D layers use the PyTorch path"
    try:
        forward = next(s for s in capture(S4D(4, d_state=64, bidirectional=True), lengths=(256,), cc=cc)
                       if s.kernel == "_forward")
        result = compile_for(forward, cc)
    except Exception as e:  # any failure of Triton's toolchain is the finding
        return WARN, f"Triton {triton.__version__}: cannot compile the fused S4D kernel ({type(e).__name__}: {e})"
    if result.error:
        return WARN, f"Triton {triton.__version__}: the fused S4D forward for sm_{cc}: {result.error}"
    return OK, (f"Triton {triton.__version__}: compiles the fused S4D forward for sm_{cc} ({result.registers} "
                f"registers, {result.spill_bytes} bytes spilled, {result.warps_per_sm} warps per SM)")


def diagnose() -> tuple[list[tuple[str, str]], bool]:
    """([(status, text)], unusable): the report, and whether a GPU is present that torch cannot use."""
    lines: list[tuple[str, str]] = []
    archs = wheel_archs()
    build = f"CUDA {torch.version.cuda} build, code for {' '.join(archs) or '(none listed)'}" \
        if torch.version.cuda else "CPU build"
    lines.append((INFO, f"torch {torch.__version__} ({build})"))
    gpus, why_none = nvidia.query()
    unusable = False
    if not gpus:
        lines.append((INFO, f"no GPU: {why_none}; training runs on the CPU"))
    else:
        lines.append((INFO, f"NVIDIA driver {gpus[0].driver}, {len(gpus)} GPU{'s' if len(gpus) > 1 else ''}"))
        problem = nvidia.cuda_problem()
        if problem:
            lines.append((FAIL, f"CUDA unusable: {problem}"))
            unusable = True
        else:
            lines.append((OK, f"CUDA usable: {torch.cuda.device_count()} device(s)"))
    usable = torch.cuda.is_available()
    for i, g in enumerate(gpus):
        capability = g.capability
        if usable and i < torch.cuda.device_count():
            capability = float("{}.{}".format(*torch.cuda.get_device_capability(i)))
        name = f"GPU {g.index} {g.name}"
        if capability is None:
            lines.append((WARN, f"{name}: compute capability unknown (nvidia-smi too old to report it)"))
        else:
            code = runs_on(capability, archs) if archs else "code (its list unreadable)"
            if code is None:
                lines.append((FAIL, f"{name} (compute capability {capability:.1f}): torch {torch.__version__} has no "
                                    f"code for it; make clean install (picks the build for it; docs/gpu.md)"))
                unusable = True
            elif code:
                lines.append((OK, f"{name} (compute capability {capability:.1f}): runs the wheel's {code}"))
            bf16 = (OK, "native bf16") if capability >= 8.0 else \
                (WARN, "no native bf16 (capability < 8.0; emulated, slow): train.precision fp16 or fp32")
            lines.append((bf16[0], f"{name}: {bf16[1]}"))
        free, total = g.free_mib, g.total_mib
        if usable and i < torch.cuda.device_count():
            free, total = (b // 2**20 for b in torch.cuda.mem_get_info(i))
        if free is not None:
            lines.append((INFO, f"{name}: {free:,} MiB free of {total:,} MiB"))
    import torch.distributed as dist

    nccl = dist.is_available() and dist.is_nccl_available()
    version = ".".join(map(str, torch.cuda.nccl.version())) if nccl and torch.version.cuda else ""
    lines.append((OK if nccl else (WARN if gpus else INFO),
                  f"NCCL {version} available (multi-GPU DDP)" if nccl else "NCCL not available (DDP uses gloo)"))
    target = round(10 * gpus[0].capability) if gpus and gpus[0].capability else 90
    lines.append(triton_compile_line(target if target in _targets() else 90))
    if usable:
        from ssmbench.models.backend import self_check

        for i in range(torch.cuda.device_count()):
            failure = self_check(torch.device("cuda", i))
            lines.append((WARN, f"cuda:{i}: fused S4D kernel self-check failed: {failure}; model.ssm.backend: auto "
                                f"uses the PyTorch path") if failure else
                         (OK, f"cuda:{i}: fused S4D kernel self-check passed (forward and gradients)"))
    return lines, unusable


def _targets() -> tuple[int, ...]:
    from ssmbench.models.triton_compile import SM_LIMITS

    return tuple(SM_LIMITS)
