"""benchmarks/gpu_check.py end to end at --smoke shapes on the CPU (the script runs once on a lent GPU, so it
must not fail there for a reason the CPU can show): every section is filled and the report is written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from test_bench import FAKE_REFERENCE

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_on_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    ref = tmp_path / "s4d.py"
    ref.write_text(FAKE_REFERENCE)
    gpu_check.main(["--smoke", "--device", "cpu", "--reps", "1", "--reference", str(ref), "--out", str(tmp_path / "out")])
    record = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [(r["kernel"], r["precision"]) for r in record["numerics"]] == [
        ("triton", "fp32"), ("triton", "bf16"), ("blocked", "fp32"), ("blocked", "bf16")]
    assert all(r["output_rel"] < 1e-5 and r["grad_rel"] < 1e-5 for r in record["numerics"] if r["precision"] == "fp32")
    assert all(r["output_rel"] < 3e-2 for r in record["numerics"])  # bf16 autocast: the linear in bf16
    assert {r["path"] for r in record["layer"]} == {"fast", "direct", "reference"}
    assert [(r["recipe"].split("/")[2], r["cuda_graphs"]) for r in record["recipes"]] == [
        ("image", False), ("image", False), ("text", False), ("text", False), ("pathx", False), ("pathx", False)]
    assert all(r["samples_per_s"] > 0 for r in record["recipes"])
    assert [r["recipe"] for r in record["stu_recipes"]] == [
        f"recipes/lra/{task}/{model}.yaml" for task, models in gpu_check.STU_MODELS.items() for model in models
        for _ in range(2)]  # CUDA graphs off and on (ignored on the CPU)
    assert all(r["status"] == "ok" and r["samples_per_s"] > 0 for r in record["stu_recipes"])
    assert {(r["block"], r["path"]) for r in record["stu_layer"]} == {("stu", "fast"), ("stu-tensordot", "fast"),
                                                                      ("ar-stu", "chunked"), ("ar-stu", "loop")}
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| `recipes/lra/pathx/s4d.yaml` |" in report and "| `recipes/lra/pathx/ar-stu.yaml` |" in report
    assert "- pathx: stu-tensordot / s4d step time = " in report and "- text: ar-stu / stu step time = " in report
