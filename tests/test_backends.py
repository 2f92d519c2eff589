"""Sweep execution backends (ssmbench/backends.py): the `resources` section, clear errors, and the same run records
from Ray tasks (a local 2-CPU Ray instance) and submitit jobs (its local executor) as from the local backend."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import yaml

from ssmbench import backends, runs
from ssmbench.errors import RecipeError, SSMBenchError

TINY = {
    "name": "tiny", "data": {"name": "smnist", "permute": False, "train_fraction": 0.01},
    "model": {"d_model": 4, "n_layers": 1, "ssm": {"d_state": 4}},
    "train": {"max_steps": 2, "batch_size": 4, "eval_batch_size": 4, "max_eval_batches": 1, "threads": 1,
              "max_test_batches": 1, "device": "cpu", "precision": "fp32"},
}


def write_sweep(tmp_path: Path, seeds=(0, 1), resources: dict | None = None) -> Path:
    (tmp_path / "recipes").mkdir(exist_ok=True)
    (tmp_path / "recipes" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    sweep = {"name": "t", "recipe": "recipes/{variant}.yaml", "runs_dir": str(tmp_path / "runs"),
             "grid": {"variants": ["tiny"], "seeds": list(seeds)}, **({"resources": resources} if resources else {})}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def records(runs_dir: Path) -> dict[str, dict]:
    """run name -> (metrics without timings, test metrics) of every finished run under runs_dir."""
    out = {}
    for d in sorted(d for d in runs_dir.iterdir() if d.name != ".claims"):  # the sweep's run claims
        res = runs.read_json(d / runs.RESULTS)
        assert res and res["status"] == "finished", (d, res)
        rows = [{k: v for k, v in r.items() if k != "seconds"} for r in runs.read_jsonl(d / runs.METRICS)]
        out[res["name"]] = {"metrics": rows, "test": res["test"], "ckpts": sorted(p.name for p in (d / "checkpoints").iterdir())}
    return out


def assert_same_records(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and len(a) == 2
    for name in a:
        assert a[name]["ckpts"] == b[name]["ckpts"]
        assert [(r["step"], r["split"]) for r in a[name]["metrics"]] == [(r["step"], r["split"]) for r in b[name]["metrics"]]
        for ra, rb in zip(a[name]["metrics"], b[name]["metrics"]):
            assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6) and ra.get("accuracy") == rb.get("accuracy")


@pytest.fixture(scope="module")
def local_records(tmp_path_factory):
    """The reference: the same 2-run sweep on the local backend."""
    tmp = tmp_path_factory.mktemp("local")
    results = backends.run_sweep(write_sweep(tmp), "local")
    assert [r["status"] for r in results] == ["finished", "finished"]
    return records(tmp / "runs")


# ---- resources, errors -----------------------------------------------------------------------------------


def test_resources_section_defaults_and_validation(tmp_path):
    assert backends.load_resources(write_sweep(tmp_path)) == backends.Resources()
    path = write_sweep(tmp_path, resources={"cpus": 2, "gpus": 1, "ray": {"address": "auto"},
                                            "slurm": {"partition": "gpu", "time": 240, "extra": {"account": "x"}}})
    res = backends.load_resources(path)
    assert (res.cpus, res.gpus, res.ray.address, res.slurm.partition, res.slurm.time, res.slurm.extra) == \
        (2, 1, "auto", "gpu", 240, {"account": "x"})
    path = write_sweep(tmp_path, resources={"cpus": 0, "slurm": {"partion": "gpu"}})
    with pytest.raises(RecipeError) as e:
        backends.run_sweep(path, "slurm", slurm_cluster="local")  # rejected before anything is submitted
    text = str(e.value)
    assert "sweep.yaml: resources.cpus:" in text and "resources.slurm.partion: unknown key" in text
    assert not (tmp_path / "runs").exists()


def test_bad_backend_arguments_are_clear_errors(tmp_path):
    path = write_sweep(tmp_path)
    with pytest.raises(SSMBenchError, match="unknown backend 'k8s'"):
        backends.run_sweep(path, "k8s")
    with pytest.raises(SSMBenchError, match="--jobs applies to the local backend"):
        backends.run_sweep(path, "ray", jobs=2)


@pytest.mark.parametrize("module,extra", [("ray", "ray"), ("submitit", "slurm")])
def test_missing_optional_package_says_how_to_install(monkeypatch, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(SSMBenchError, match=rf"pip install 'ssmbench\[{extra}\]'"):
        backends.require(module, extra)


# ---- Ray -------------------------------------------------------------------------------------------------


@pytest.mark.slow  # starting Ray and its workers: ~15-45 s here
def test_ray_backend_runs_the_sweep_as_ray_tasks(tmp_path, local_records):
    ray = pytest.importorskip("ray", reason="the ray backend needs `pip install 'ssmbench[ray]'`")
    path = write_sweep(tmp_path)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a local 2-CPU Ray instance
    try:
        results = backends.run_sweep(path, "ray")
        assert [r["status"] for r in results] == ["finished", "finished"]
        assert_same_records(records(tmp_path / "runs"), local_records)
        again = backends.run_sweep(path, "ray")  # finished runs are not submitted again
        assert [r["status"] for r in again] == ["skipped", "skipped"]
    finally:
        ray.shutdown()


# ---- Slurm (submitit's local executor) ---------------------------------------------------------------


def test_slurm_backend_waits_for_submitit_jobs(tmp_path, local_records):
    pytest.importorskip("submitit", reason="the slurm backend needs `pip install 'ssmbench[slurm]'`")
    path = write_sweep(tmp_path, resources={"slurm": {"folder": str(tmp_path / "logs"), "time": 5, "partition": "x"}})
    results = backends.run_sweep(path, "slurm", slurm_cluster="local")
    assert [r["status"] for r in results] == ["finished", "finished"]
    assert_same_records(records(tmp_path / "runs"), local_records)
    assert any((tmp_path / "logs").iterdir())  # submitit's job logs
    assert [r["status"] for r in backends.run_sweep(path, "slurm", slurm_cluster="local")] == ["skipped", "skipped"]


@pytest.mark.slow
def test_slurm_backend_detaches(tmp_path):
    pytest.importorskip("submitit", reason="the slurm backend needs `pip install 'ssmbench[slurm]'`")
    path = write_sweep(tmp_path, seeds=(0,), resources={"slurm": {"folder": str(tmp_path / "logs")}})
    results = backends.run_sweep(path, "slurm", wait=False, slurm_cluster="local")
    assert [r["status"] for r in results] == ["submitted"] and "job " in results[0]["run_dir"]
    deadline = time.time() + 300  # the detached job finishes on its own and writes the usual record
    while time.time() < deadline:
        dirs = list((tmp_path / "runs").glob("*/results.json")) if (tmp_path / "runs").exists() else []
        if dirs and (runs.read_json(dirs[0]) or {}).get("status") == "finished":
            break
        time.sleep(0.5)
    assert len(dirs) == 1 and runs.read_json(dirs[0])["status"] == "finished"
