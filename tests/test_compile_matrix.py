"""The fused S4D kernels compiled ahead of time for NVIDIA targets without a GPU (models/triton_compile.py,
benchmarks/compile_matrix.py): what a layer launches does not depend on the sequence length, so the recipes fix
the compiled set; no specialization the recipes launch spills or runs fewer than 8 warps per SM. The fast suite
compiles each tile shape of the recipe files for sm_90; `make test-slow` compiles every specialization of every
recipe and sweep run for sm_75 .. sm_120."""

import importlib.util
from pathlib import Path

import pytest

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


def test_every_tile_shape_of_the_recipes_compiles_for_sm90_without_spilling():
    """One specialization per (kernel, BLOCK_M, BLOCK_L) of the recipe files (the tiles set the register use)."""
    cm = compile_matrix()
    specs = cm.specializations(cm.recipe_models(sweeps=False))
    shapes = {}
    for spec in sorted(specs, key=lambda s: s.label()):
        c = constants(spec)
        if spec.kernel != "_backward_parameters":  # vectors of BLOCK_M only: 32 registers
            shapes.setdefault((spec.kernel, c["BLOCK_M"], c["BLOCK_L"]), spec)
    assert {(k, m) for k, m, _ in shapes} >= {("_forward", 32), ("_backward_lags", 32)}  # d_state 64: the LRA recipes
    for spec in shapes.values():
        result = compile_for(spec, 90)
        assert result.problems() == [], result
        assert result.registers > 0 and result.warps_per_sm >= triton_compile.MIN_WARPS_PER_SM


@pytest.mark.slow
def test_every_specialization_of_every_recipe_compiles_for_every_target():
    assert compile_matrix().main([]) == 0
