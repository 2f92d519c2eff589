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


def run_gpu_check_sh(tmp_path, reference: str, shadow_einops: bool = False):
    """benchmarks/gpu_check.sh as after `make install` (VENV: a stand-in virtualenv whose python logs its calls,
    then runs this interpreter); with `shadow_einops` that python lacks einops, as before the bench extra."""
    import os
    import stat
    import subprocess
    import sys

    log, shadow = tmp_path / "python.log", tmp_path / "shadow"
    (shadow / "einops").mkdir(parents=True)
    (shadow / "einops" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'einops'\", name='einops')\n")
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    prefix = f"PYTHONPATH={shadow}:$PYTHONPATH " if shadow_einops else ""
    python.write_text(f"#!/bin/sh\necho \"$*\" >> {log}\n{prefix}exec {sys.executable} \"$@\"\n")
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    ref = tmp_path / "s4d.py"
    ref.write_text(reference)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(ref), str(tmp_path / "out")],
                          env={**env, "VENV": str(python.parents[1])}, capture_output=True, text=True, timeout=300)
    return proc, log.read_text().splitlines() if log.exists() else []


def test_gpu_check_sh_uses_the_venv_and_its_preflight_imports_the_reference(tmp_path):
    proc, calls = run_gpu_check_sh(tmp_path / "a", FAKE_REFERENCE)  # imports what the real s4d.py imports
    assert proc.stdout.startswith(f"gpu_check: {tmp_path / 'a' / 'venv' / 'bin' / 'python'}")
    assert len(calls) >= 3  # the wheel probe, the preflight, the CUDA probe: all through the virtualenv's python
    assert proc.returncode == 1 and proc.stderr.strip() == "gpu_check: no CUDA device"  # past the preflight
    proc, _ = run_gpu_check_sh(tmp_path / "b", FAKE_REFERENCE, shadow_einops=True)
    assert proc.returncode == 1 and "gpu_check: preflight: bench --reference" in proc.stderr
    assert "No module named 'einops'" in proc.stderr and "`make install` installs the bench extra" in proc.stderr
    assert not (tmp_path / "b" / "out" / "tests.txt").exists()  # stopped before the first section
