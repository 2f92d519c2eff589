"""`ssmbench bench` plumbing on tiny shapes (a benchmark, so no timing assertions): record layout, the fast vs
direct difference check, the memory worker, and argument errors."""

import json

import pytest

from ssmbench.bench import Case, bench, peak_memory_here, run_bench
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


def test_memory_worker_reports_bytes():
    out = peak_memory_here(Case("s4d", "fast", L=64, batch=1, d_model=4, d_state=8))
    assert isinstance(out["peak_bytes"], int) and out["peak_bytes"] >= 0 and out["method"]


def test_bench_command_writes_json_and_rejects_bad_arguments(tmp_path):
    out = tmp_path / "b.json"
    bench("12", 1, 4, 8, "s4d", 1, "cpu", None, False, None, out)
    assert len(json.loads(out.read_text())["results"]) == 2
    with pytest.raises(SSMBenchError, match="--blocks"):
        bench("12", 1, 4, 8, "s4d,mamba", 1, "cpu", None, False, None, out)
    with pytest.raises(SSMBenchError, match="--lengths"):
        bench("12,x", 1, 4, 8, "s4d", 1, "cpu", None, False, None, out)


def test_ar_stu_block_compares_the_chunked_scan_with_the_loop():
    record = run_bench([64], batch=2, d_model=8, d_state=8, blocks=["stu", "ar-stu"], reps=1, device="cpu",
                       memory=False, stu_d_model=4, log=lambda *a: None)
    rows = record["results"]
    assert [(r["block"], r["path"], r["d_model"]) for r in rows] == [("stu", "fast", 4), ("ar-stu", "chunked", 4),
                                                                     ("ar-stu", "loop", 4)]
    assert chunk_length(2, 64, 4, 2) < 64  # the chunked path is not the loop at this size
    assert rows[1]["max_abs_diff"]["output_rel"] < 1e-5 and rows[1]["max_abs_diff"]["grad_rel"] < 1e-5
