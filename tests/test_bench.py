"""`ssmbench bench` plumbing on tiny shapes (a benchmark, so no timing assertions): record layout, the fast vs
direct difference check, the memory worker, and argument errors."""

import json

import pytest

import torch

from ssmbench.bench import Case, OpCounter, bench, lower_bound, peak_memory, peak_memory_here, run_bench
from ssmbench.errors import SSMBenchError
from ssmbench.models.stu import chunk_length


def test_run_bench_record(tmp_path):
    record = run_bench([16, 40], batch=2, d_model=4, d_state=8, blocks=["s4d"], reps=1, device="cpu", memory=False,
                       log=lambda *a: None)
    rows = record["results"]
    assert [(r["L"], r["path"]) for r in rows] == [(16, "fast"), (16, "direct"), (40, "fast"), (40, "direct")]
    for r in rows:
        assert r["median_s"] > 0 and r["min_s"] <= r["median_s"]
        d = r["max_abs_diff"]
        assert d["output_rel"] < 1e-5 and d["grad_rel"] < 1e-4
    env = record["environment"]
    assert env["device"] == "cpu" and env["torch_threads"] >= 1 and env["torch"]


def test_op_counter_counts_ops_that_launch_kernels():
    x = torch.randn(4, 3, requires_grad=True)
    with OpCounter() as counter:
        y = (x.t().exp() * 2).sum()  # the transpose is a view: no kernel
        torch.empty(5)  # an allocation: no kernel
        y.backward()  # seed ones_like; sum -> expand (a view); mul, exp -> mul; the transposed grad: one copy_
    assert dict(counter.aten) == {"exp": 1, "mul": 3, "sum": 1, "ones_like": 1, "copy_": 1} and not counter.triton


def test_ops_only_counts_every_case_without_timing():
    record = run_bench([16], batch=1, d_model=4, d_state=8, blocks=["s4d"], reps=1, device="cpu", memory=True,
                       log=lambda *a: None, ops_only=True)
    fast, direct = record["results"]
    assert "median_s" not in fast and "peak_bytes" not in fast and fast["max_abs_diff"] is None
    assert fast["ops"] == fast["aten_ops"] + fast["triton_launches"] > 50 and direct["ops"] > 50
    both = run_bench([16], batch=1, d_model=4, d_state=8, blocks=["s4d"], reps=1, device="cpu", memory=False,
                     log=lambda *a: None, ops_only=True, bidirectional=True)
    assert both["results"][0]["ops"] > fast["ops"]  # the backward kernel: flip, pad and add, and their gradients


def test_memory_worker_reports_bytes():
    out = peak_memory_here(Case("s4d", "fast", L=64, batch=1, d_model=4, d_state=8))
    assert isinstance(out["peak_bytes"], int) and out["peak_bytes"] >= 0 and out["method"]


@pytest.mark.parametrize("block", ["s4", "dss", "s5", "lru"])
def test_memory_worker_measures_the_baseline_blocks(block):
    out = peak_memory_here(Case(block, "fast", L=64, batch=1, d_model=4, d_state=8))
    assert isinstance(out["peak_bytes"], int) and out["peak_bytes"] >= 0 and out["method"]


def test_peak_memory_of_a_baseline_step_in_a_fresh_process_counts_its_activations():
    """S5 at L = 4096, H = 32: the step's output projection alone is B L 2H float32 = 1 MiB, so the measured rise
    of the resident set (CPU) or of the allocator (CUDA) must exceed 1 MB."""
    out = peak_memory(Case("s5", "fast", L=4096, batch=1, d_model=32, d_state=16, threads=1))
    assert out["peak_bytes"] is not None and out["peak_bytes"] > 1_000_000, out


def test_bench_command_writes_json_and_rejects_bad_arguments(tmp_path):
    out = tmp_path / "b.json"
    bench("12", 1, 4, 8, "s4d", 1, "cpu", None, False, None, out)
    assert len(json.loads(out.read_text())["results"]) == 2
    with pytest.raises(SSMBenchError, match="--blocks"):
        bench("12", 1, 4, 8, "s4d,mamba", 1, "cpu", None, False, None, out)
    with pytest.raises(SSMBenchError, match="--lengths"):
        bench("12,x", 1, 4, 8, "s4d", 1, "cpu", None, False, None, out)


FAKE_REFERENCE = '''
import math
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat
from src.models.nn import DropoutNd

class S4D(torch.nn.Module):  # the interface and imports of state-spaces/s4 models/s4/s4d.py: (B, H, L) in and out
    def __init__(self, d_model, d_state=64, dropout=0.0, transposed=True):
        super().__init__()
        self.scale = torch.nn.Parameter(repeat(torch.ones(1), "o -> h o", h=d_model))  # einops, as the real one

    def forward(self, u):
        return u * self.scale, None
'''


def test_reference_is_timed_beside_s4d_at_each_precision(tmp_path):
    ref = tmp_path / "s4d.py"
    ref.write_text(FAKE_REFERENCE)
    record = run_bench([16], batch=2, d_model=4, d_state=8, blocks=["s4d"], reps=1, device="cpu", memory=False,
                       log=lambda *a: None, reference=str(ref), precisions=("fp32", "bf16"))
    rows = record["results"]
    assert [(r["path"], r["precision"]) for r in rows] == [
        ("fast", "fp32"), ("direct", "fp32"), ("reference", "fp32"), ("fast", "bf16"), ("direct", "bf16"),
        ("reference", "bf16")]
    assert rows[2]["block"] == "reference" and rows[2]["max_abs_diff"] is None
    assert rows[4]["max_abs_diff"]["output_rel"] < 1e-2  # fast vs direct, both under bf16 autocast
    assert "bound_s" not in rows[0]  # the CPU has no datasheet peaks
    with pytest.raises(SSMBenchError, match="--reference"):
        bench("12", 1, 4, 8, "s4d", 1, "cpu", None, False, None, tmp_path / "b.json", reference=tmp_path / "none.py")
    with pytest.raises(SSMBenchError, match="--precision"):
        bench("12", 1, 4, 8, "s4d", 1, "cpu", None, False, None, tmp_path / "b.json", precision="fp8")


def test_lower_bound_is_the_larger_of_memory_and_compute_time():
    peaks = {"bytes_per_s": 1e12, "fp32_flops": 1e13, "bf16_flops": 1e14}
    case = Case("s4d", "fast", L=1024, batch=8, d_model=256, precision="bf16")
    b = lower_bound(case, peaks)
    n = 2048  # fft_size(1024)
    matmul, fft = 12 * 8 * 1024 * 256**2, 4 * 8 * 256 * 2.5 * n * 11
    assert b["bound_bytes"] == 5 * 8 * 1024 * 256 * 4 and b["bound_flops"] == matmul + fft
    assert b["bound_s"] == pytest.approx(max(b["bound_bytes"] / 1e12, matmul / 1e14 + fft / 1e13))
    fp32 = lower_bound(Case("s4d", "fast", L=1024, batch=8, d_model=256), peaks)
    assert fp32["bound_s"] == pytest.approx(matmul / 1e13 + fft / 1e13)  # compute-bound without tensor cores


def test_ar_stu_block_compares_the_chunked_scan_with_the_loop():
    record = run_bench([64], batch=2, d_model=8, d_state=8, blocks=["stu", "ar-stu"], reps=1, device="cpu",
                       memory=False, stu_d_model=4, log=lambda *a: None)
    rows = record["results"]
    assert [(r["block"], r["path"], r["d_model"]) for r in rows] == [("stu", "fast", 4), ("ar-stu", "chunked", 4),
                                                                     ("ar-stu", "loop", 4)]
    assert chunk_length(2, 64, 4, 2) < 64  # the chunked path is not the loop at this size
    assert rows[1]["max_abs_diff"]["output_rel"] < 1e-5 and rows[1]["max_abs_diff"]["grad_rel"] < 1e-5


def test_stu_tensordot_block():
    """The tensordot approximation is a block of its own beside the exact STU, with m drawn so its output is not 0."""
    from ssmbench.bench import build_block, make_inputs

    record = run_bench([32], batch=2, d_model=8, d_state=8, blocks=["stu", "stu-tensordot"], reps=1, device="cpu",
                       memory=False, stu_d_model=4, log=lambda *a: None)
    assert [(r["block"], r["path"], r["d_model"]) for r in record["results"]] == [("stu", "fast", 4),
                                                                                  ("stu-tensordot", "fast", 4)]
    case = Case("stu-tensordot", "fast", L=32, batch=2, d_model=4)
    layer, layout = build_block(case)
    assert layer.P is not None and layer.m_plus.abs().min() > 0
    assert layer.stu(make_inputs(case, layout)[0]).abs().max() > 0.01


FAKE_S4_REFERENCE = '''
import torch
from pytorch_lightning.utilities import rank_zero_only  # what state-spaces/s4 models/s4/s4.py imports

class S4Block(torch.nn.Module):  # its interface: (B, H, L) in, (y, state) out
    def __init__(self, d_model, d_state=64, mode="nplr", dropout=0.0, transposed=True):
        super().__init__()
        assert mode == "nplr"
        self.scale = torch.nn.Parameter(torch.ones(d_model, 1))

    def forward(self, u):
        return u * self.scale, None
'''


def test_baseline_blocks_and_the_s4_reference(tmp_path):
    """s4, dss, s5, lru are blocks of their own; an s4.py reference (S4Block) is timed beside the S4 block."""
    ref = tmp_path / "s4.py"
    ref.write_text(FAKE_S4_REFERENCE)
    record = run_bench([16], batch=2, d_model=4, d_state=8, blocks=["s4", "dss", "s5", "lru"], reps=1, device="cpu",
                       memory=False, log=lambda *a: None, reference=str(ref))
    assert [(r["block"], r["path"]) for r in record["results"]] == [
        ("s4", "fast"), ("reference", "reference"), ("dss", "fast"), ("s5", "fast"), ("lru", "fast")]
    assert record["results"][1]["group"] == "s4 L=16 fp32"
    with pytest.raises(SSMBenchError, match="the reference is an S4 block; add s4 to --blocks"):
        bench("12", 1, 4, 8, "s4d", 1, "cpu", None, False, None, tmp_path / "b.json", reference=ref)
