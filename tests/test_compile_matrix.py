"""The fused S4D kernels compiled ahead of time for NVIDIA targets without a GPU (models/triton_compile.py,
benchmarks/compile_matrix.py): what a layer launches does not depend on the sequence length, so the recipes fix
the compiled set (with the target: its warps per program); no specialization the recipes or the bilinear
discretization launch spills or runs fewer than 8 warps per SM. The fast suite compiles each tile shape of the
recipe files for sm_90, sm_120's own launches, one sm_100 forward and the bilinear backward; `make test-slow` compiles
every specialization of every recipe, sweep run and bilinear option for sm_75 .. sm_120."""

import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from ssmbench.models import triton_compile  # noqa: E402
from ssmbench.models.s4d import S4D  # noqa: E402
from ssmbench.models.triton_compile import Compiled, Specialization, capture, compile_for, resident_warps  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def compile_matrix():
    spec = importlib.util.spec_from_file_location("compile_matrix", ROOT / "benchmarks" / "compile_matrix.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def constants(spec: Specialization) -> dict:
    names = [name for name, _ in spec.signature]
    return {names[path[0]]: value for path, value in spec.constants}


def test_launches_do_not_depend_on_the_sequence_length():
    layer = S4D(64, d_state=64, bidirectional=True, n_ssm=2)
    found = capture(layer, (1000,))
    assert {s.kernel for s in found} == {"_forward", "_backward_lags", "_backward_parameters"} and len(found) == 3
    assert capture(layer, (1024,)) == found and capture(layer, (777, 4096, 16384)) == found
    assert not hasattr(layer, "fused") or layer.fused.__func__ is S4D.fused  # the capture left the layer as it was


def test_resident_warps_per_sm():
    assert resident_warps(90, 4, 255, 512) == 8  # 256 registers x 32 lanes x 4 warps: 2 blocks of 65,536
    assert resident_warps(90, 4, 154, 512) == 12  # rounded up to 160: 3 blocks
    assert resident_warps(75, 4, 32, 0) == 32  # Turing: 32 warps per SM at most
    assert resident_warps(86, 4, 32, 0) == 48
    assert resident_warps(86, 4, 64, 60 * 1024) == 4  # shared memory: one block of 61 KB (+1 KB) in 100 KB
    spec = Specialization("_forward", (("x", "i32"),), (), (), 4, 3)
    assert Compiled(spec, 90, registers=255, spill_bytes=1336).problems() == [
        "_forward[] /16:- w4 sm_90: spills 1336 bytes per thread (255 registers)"]
    assert Compiled(spec, 86, registers=64, shared_bytes=60 * 1024).problems() == [
        "_forward[] /16:- w4 sm_86: 4 resident warps per SM (< 8) at 64 registers, 61440 bytes shared"]


def test_launch_warps_follow_the_target():
    """The launcher takes its warps per program from the device's compute capability (`vandermonde_triton.WARPS`),
    and the capture for a target reproduces that choice: sm_120 runs `_backward_lags` at BLOCK_M 16 with 8 warps
    (4 spilled 16 bytes per thread there), every other launch and target keeps 4."""
    from ssmbench.models import vandermonde_triton as vt

    layer = S4D(64, d_state=32)  # BLOCK_M 16
    warps = {cc: {s.kernel: s.num_warps for s in capture(layer, (1000,), cc=cc)} for cc in triton_compile.TARGETS}
    assert warps[120] == {"_forward": 4, "_backward_lags": 8, "_backward_parameters": 4}
    assert all(w == {"_forward": 4, "_backward_lags": 4, "_backward_parameters": 4} for cc, w in warps.items()
               if cc != 120)
    assert {s.num_warps for s in capture(S4D(64, d_state=64), (1000,), cc=120)} == {4}  # BLOCK_M 32: 4 warps
    assert vt.num_warps("_backward_lags", 16, 121) == 8 and vt.num_warps("_backward_lags", 16, None) == 4
    assert vt.target_capability is None and vt.capability(torch.device("cpu")) is None  # restored after the capture


def fast_cells() -> list:
    """(specialization, target) pairs of the fast suite: one specialization per (kernel, BLOCK_M, BLOCK_L, warps) of
    the recipe files for sm_90 (the tiles set the register use) and for sm_120 where its launches differ (its own
    warps), the LRA forward (d_state 64) for sm_100, and the bilinear backward's own tile at d_state 64 (no recipe
    ships the bilinear discretization) for sm_90."""
    cm = compile_matrix()
    models = cm.recipe_models(sweeps=False)
    bilinear = {name: m for name, m in cm.option_models().items() if "d_state 64, bidirectional" in name}
    cells: dict = {}
    for cc, found in [(90, cm.specializations(models, 90)), (120, cm.specializations(models, 120)),
                      (90, cm.specializations(bilinear, 90))]:
        for spec in sorted(found, key=lambda s: s.label()):
            c = constants(spec)
            if spec.kernel == "_backward_lags" or spec.kernel == "_forward" and c["ZOH"]:  # _backward_parameters:
                # vectors of BLOCK_M only, 32-40 registers; the bilinear forward has the ZOH forward's tiles
                key = (spec.kernel, c["BLOCK_M"], c["BLOCK_L"], c["ZOH"], spec.num_warps)
                cells.setdefault(key, (spec, cc))
    lra = next(spec for spec, cc in cells.values() if spec.kernel == "_forward" and constants(spec)["BLOCK_M"] == 32)
    return [*cells.values(), (lra, 100)]


def test_every_tile_shape_of_the_recipes_compiles_without_spilling():
    cells = fast_cells()
    shapes = {(s.kernel, constants(s)["BLOCK_M"], constants(s)["ZOH"], s.num_warps, cc) for s, cc in cells}
    assert shapes >= {("_forward", 32, True, 4, 90), ("_backward_lags", 32, True, 4, 90),  # d_state 64: LRA
                      ("_backward_lags", 16, True, 8, 120), ("_forward", 32, True, 4, 100),
                      ("_backward_lags", 32, False, 4, 90)}, shapes
    for spec, cc in cells:
        result = compile_for(spec, cc)
        assert result.problems() == [], result
        assert result.registers > 0 and result.warps_per_sm >= triton_compile.MIN_WARPS_PER_SM


@pytest.mark.slow
def test_every_specialization_of_every_recipe_compiles_for_every_target():
    assert compile_matrix().main([]) == 0
