"""The fused S4D kernels compiled ahead of time for NVIDIA targets, without a GPU: registers, spills, occupancy.

A layer's launches are captured by running its forward and backward on the CPU under a stand-in Triton driver
(`capture`): every launch goes through Triton's own binder, which derives the specialization (argument types, the
16-byte divisibility of pointers and integers, the constexprs, the number of warps), and stops at
`triton.knobs.runtime.jit_cache_hook`, before anything is compiled or launched. The kernels do not specialize on
the sequence length (`do_not_specialize` in models/vandermonde_triton.py), so what a layer launches depends only
on its options (d_model, d_state, n_ssm, transforms, discretization, direction, Sobolev filter), which a recipe
states, and on the target: the warps per program may differ per compute capability (`vandermonde_triton.WARPS`),
so launches are captured for each target (`capture(..., cc=...)`), as the launcher chooses them on that device.

`compile_for` compiles one specialization with `triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))`
(LLVM to PTX, then Triton's bundled `ptxas -v`, whose log gives the registers per thread and the spill bytes) and
computes the resident warps per SM of a launch (the theoretical occupancy of the CUDA programming guide):

    blocks = min(R_SM // (num_warps * roundup(32 * max(regs, 1), 256)),  (registers per warp allocated in units of 256)
                 smem_SM // (shared + reserved), max_blocks, max_warps // num_warps)
    resident warps per SM = blocks * num_warps,  with regs rounded up to a multiple of 8.

`problems` fails a compilation on an error, any spill, or fewer than MIN_WARPS_PER_SM resident warps per SM.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from dataclasses import dataclass

import torch

TARGETS = (75, 80, 86, 89, 90, 100, 120)  # compute capabilities compiled for: Turing .. Blackwell
MIN_WARPS_PER_SM = 8
REGISTERS_PER_SM = 65536  # every target above


@dataclass(frozen=True)
class SMLimits:
    """Per-SM limits of a compute capability (CUDA C++ Programming Guide, technical specifications)."""

    max_warps: int
    max_blocks: int
    shared_bytes: int  # shared memory per SM
    reserved_bytes: int  # shared memory the system reserves per block


SM_LIMITS = {75: SMLimits(32, 16, 64 * 1024, 0), 80: SMLimits(64, 32, 164 * 1024, 1024),
             86: SMLimits(48, 16, 100 * 1024, 1024), 89: SMLimits(48, 24, 100 * 1024, 1024),
             90: SMLimits(64, 32, 228 * 1024, 1024), 100: SMLimits(64, 32, 228 * 1024, 1024),
             120: SMLimits(48, 32, 100 * 1024, 1024)}


def _frozen(value):
    """Dicts (in their order) and lists as tuples, so a specialization is hashable."""
    if isinstance(value, dict):
        return tuple((k, _frozen(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


@dataclass(frozen=True)
class Specialization:
    """One compiled variant of a kernel: what Triton's binder derived from a launch."""

    kernel: str
    signature: tuple  # (argument, type) pairs, "constexpr" for the constexpr arguments
    constants: tuple  # ((argument index,), value) pairs
    attrs: tuple  # ((argument index,), [["tt.divisibility", 16]]) pairs
    num_warps: int
    num_stages: int

    def label(self) -> str:
        """`_forward[C=2 ... BLOCK_L=32] /16:S,H,M w4`: the kernel, its constexprs, the integer arguments specialized
        as multiples of 16, its warps."""
        names = [name for name, _ in self.signature]
        consts = " ".join(f"{names[path[0]]}={int(v) if isinstance(v, bool) else v}" for path, v in self.constants)
        types = dict(self.signature)
        div16 = ",".join(names[path[0]] for path, a in self.attrs if a and not types[names[path[0]]].startswith("*"))
        return f"{self.kernel}[{consts}] /16:{div16 or '-'} w{self.num_warps}"

    @property
    def fn(self):
        """The kernel's JITFunction."""
        from ssmbench.models import vandermonde_triton

        return getattr(vandermonde_triton, self.kernel)


class _CaptureDriver:
    """Stands in for Triton's CUDA driver while launches are captured: a device key of its own (so the binders and
    compiled kernels of real devices are untouched), no stream, and the target the binder is made for."""

    device = "capture"

    def __init__(self, cc: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", cc, 32)

    def get_current_device(self):
        return self.device

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target


def _interpreted(kernel) -> bool:
    return not hasattr(kernel, "device_caches")  # Triton's interpreter makes InterpretedFunctions


@contextlib.contextmanager
def capturing(found: set, cc: int = 90):
    """Within: every fused-kernel launch adds its Specialization to `found` and returns without compiling. The
    launches are made for sm_`cc` (the binder's target, and `vandermonde_triton.target_capability` for the launch
    options that depend on it)."""
    from triton import knobs
    from triton.runtime.driver import driver

    from ssmbench.models import vandermonde_triton

    if _interpreted(vandermonde_triton._forward):
        raise RuntimeError("cannot capture launches under TRITON_INTERPRET=1 (the kernels are interpreted, not "
                           "compiled); unset it")

    def hook(*, key, repr, fn, compile, is_manual_warmup, already_compiled):
        found.add(Specialization(fn.name, _frozen(compile["signature"]), _frozen(compile["constants"]),
                                 _frozen(compile["configs"][0]), compile["num_warps"], compile["num_stages"]))
        return True  # handled: Triton neither compiles nor launches

    previous, active = knobs.runtime.jit_cache_hook, driver._active  # no default driver is made on a CPU machine
    previous_cc = vandermonde_triton.target_capability
    driver.set_active(_CaptureDriver(cc))
    knobs.runtime.jit_cache_hook = hook
    vandermonde_triton.target_capability = cc
    try:
        yield found
    finally:
        vandermonde_triton.target_capability = previous_cc
        knobs.runtime.jit_cache_hook = previous
        driver.set_active(active)
        for kernel in (vandermonde_triton._forward, vandermonde_triton._backward_lags,
                       vandermonde_triton._backward_parameters):
            kernel.device_caches.pop(_CaptureDriver.device, None)


def capture(layer, lengths: tuple[int, ...] = (1000, 1024), cc: int = 90) -> set[Specialization]:
    """The specializations an S4D layer launches in a training step (forward and backward of `layer.ssm`) at each
    sequence length in `lengths` on sm_`cc`, captured on the CPU. The layer takes its fused path here as it would
    on CUDA."""
    found: set[Specialization] = set()
    layer.fused = lambda: layer.path == "fast"  # this layer only: its launches go to the capture driver
    try:
        with capturing(found, cc):
            for L in lengths:
                u = torch.zeros(1, L, layer.d_model, requires_grad=True)
                layer.ssm(u).sum().backward()
    finally:
        del layer.fused
    return found


def capture_recipe(model_cfg, init_name: str, cc: int = 90) -> set[Specialization]:
    """The specializations a recipe's S4D layers launch on sm_`cc` (every layer of a model has the same options)."""
    from ssmbench.registry import LAYERS

    if model_cfg.kind != "s4d":
        return set()
    return capture(LAYERS.get("s4d")(model_cfg, init_name), cc=cc)


@dataclass
class Compiled:
    """One specialization compiled for one target."""

    spec: Specialization
    cc: int
    registers: int = 0
    spill_bytes: int = 0  # spill stores + spill loads, bytes per thread
    shared_bytes: int = 0
    error: str | None = None

    @property
    def warps_per_sm(self) -> int:
        return resident_warps(self.cc, self.spec.num_warps, self.registers, self.shared_bytes)

    def problems(self) -> list[str]:
        """Why this compilation fails the check: an error, a spill, or too few resident warps per SM."""
        where = f"{self.spec.label()} sm_{self.cc}"
        if self.error:
            return [f"{where}: {self.error}"]
        out = []
        if self.spill_bytes:
            out.append(f"{where}: spills {self.spill_bytes} bytes per thread ({self.registers} registers)")
        if self.warps_per_sm < MIN_WARPS_PER_SM:
            out.append(f"{where}: {self.warps_per_sm} resident warps per SM (< {MIN_WARPS_PER_SM}) at "
                       f"{self.registers} registers, {self.shared_bytes} bytes shared")
        return out


def resident_warps(cc: int, num_warps: int, registers: int, shared_bytes: int) -> int:
    """Warps of a kernel resident on one SM of compute capability `cc` (module docstring)."""
    limits = SM_LIMITS[cc]
    regs = 8 * math.ceil(max(registers, 1) / 8)
    per_warp = 256 * math.ceil(32 * regs / 256)
    blocks = min(REGISTERS_PER_SM // (num_warps * per_warp), limits.max_blocks, limits.max_warps // num_warps)
    if shared_bytes:
        blocks = min(blocks, limits.shared_bytes // (shared_bytes + limits.reserved_bytes))
    return blocks * num_warps


PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")
PTXAS_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def compile_for(spec: Specialization, cc: int) -> Compiled:
    """Compile `spec` for sm_`cc` with Triton (never from its cache, so ptxas runs and reports)."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    result = Compiled(spec, cc)
    src = ASTSource(spec.fn, dict(spec.signature), dict(spec.constants), {k: [list(a) for a in v] for k, v in spec.attrs})
    log = io.StringIO()
    with knobs.compilation.scope(), knobs.nvidia.scope(), contextlib.redirect_stdout(log):
        knobs.compilation.always_compile = True
        knobs.nvidia.dump_ptxas_log = True
        try:
            kernel = triton.compile(src, target=GPUTarget("cuda", cc, 32),
                                    options={"num_warps": spec.num_warps, "num_stages": spec.num_stages})
        except Exception as e:  # a compile error of any stage is the finding, reported in one line
            result.error = f"compile error: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            return result
    text = log.getvalue()
    registers, spills = PTXAS_REGISTERS.search(text), PTXAS_SPILLS.search(text)
    if registers is None or spills is None:
        result.error = "ptxas -v reported no register count"
        return result
    result.registers = int(registers.group(1))
    result.spill_bytes = int(spills.group(1)) + int(spills.group(2))
    result.shared_bytes = int(kernel.metadata.shared)
    return result
