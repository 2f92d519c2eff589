"""`ssmbench sweep`: the exact grid, skipping finished runs, resuming interrupted ones, recording failures."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml

from ssmbench import runs
from ssmbench.errors import RecipeError
from ssmbench.smoke import recipe_files
from ssmbench.sweep import expand, find_finished, format_grid, index_runs, run_spec, run_sweep, spec_state

TINY = {
    "name": "tiny", "data": {"name": "smnist", "permute": False},
    "model": {"d_model": 4, "n_layers": 1, "ssm": {"d_state": 4}},
    "train": {"max_steps": 2, "batch_size": 4, "eval_batch_size": 4, "max_eval_batches": 1, "max_test_batches": 1,
              "threads": 1},
}


def run_dirs(root: Path) -> list[Path]:
    """The run directories under `root` (not the sweep's .claims folder)."""
    return [d for d in root.iterdir() if not d.name.startswith(".")]


def write_sweep(tmp_path: Path, grid: dict, **top) -> Path:
    (tmp_path / "recipes").mkdir(exist_ok=True)
    (tmp_path / "recipes" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    sweep = {"name": "t", "recipe": "recipes/{variant}.yaml", "runs_dir": str(tmp_path / "runs"), "grid": grid, **top}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def test_expand_lists_the_exact_grid(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, {"variants": {"tiny": None, "alpha": {"recipe": "recipes/tiny.yaml", "set": ["init.alpha=2.0"]}},
                                  "seeds": [0, 1], "train_fractions": [0.5, 1.0], "budget": "steps"}, set=["train.lr=0.02"])
    specs = expand(path)
    grid = [(s.tags["variant"], s.train_fraction, s.seed, s.overrides, s.name) for s in specs]
    assert grid == [
        ("tiny", 0.5, 0, ("train.lr=0.02",), "t-tiny-s0-f0.5"), ("tiny", 0.5, 1, ("train.lr=0.02",), "t-tiny-s1-f0.5"),
        ("tiny", 1.0, 0, ("train.lr=0.02",), "t-tiny-s0"), ("tiny", 1.0, 1, ("train.lr=0.02",), "t-tiny-s1"),
        ("alpha", 0.5, 0, ("train.lr=0.02", "init.alpha=2.0"), "t-alpha-s0-f0.5"),
        ("alpha", 0.5, 1, ("train.lr=0.02", "init.alpha=2.0"), "t-alpha-s1-f0.5"),
        ("alpha", 1.0, 0, ("train.lr=0.02", "init.alpha=2.0"), "t-alpha-s0"),
        ("alpha", 1.0, 1, ("train.lr=0.02", "init.alpha=2.0"), "t-alpha-s1"),
    ]
    assert all(s.recipe == str((tmp_path / "recipes" / "tiny.yaml").resolve()) for s in specs)
    assert len({s.key for s in specs}) == 8 and [s.key for s in expand(path)] == [s.key for s in specs]
    assert all(s.tags == {"sweep": "t", "variant": s.tags["variant"], "budget": "steps", "run_key": s.key} for s in specs)
    assert pickle.loads(pickle.dumps(specs[0])) == specs[0]
    listing = format_grid(specs, {}).splitlines()
    assert len(listing) == 9 and listing[-1] == "8 runs: 8 new, 0 to resume, 0 finished"
    assert listing[4].split()[:2] == ["5", "new"] and "variant=alpha seed=0 train_fraction=0.5" in listing[4]
    assert listing[4].endswith("--set train.lr=0.02 --set init.alpha=2.0")
    # Editing the recipe changes every key (the old records are no longer "this run").
    (tmp_path / "recipes" / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "batch_size": 5}}))
    assert not {s.key for s in expand(path)} & {s.key for s in specs}


def test_task_axis_and_exclude(tmp_path: Path) -> None:
    for task in "ab":
        (tmp_path / "recipes" / task).mkdir(parents=True)
        (tmp_path / "recipes" / task / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    path = write_sweep(tmp_path, {"tasks": ["a", "b"], "variants": ["tiny", "other"], "exclude": ["a/other", "b/other"]},
                       recipe="recipes/{task}/tiny.yaml")
    assert [(s.tags["task"], s.tags["variant"], s.name) for s in expand(path)] == [("a", "tiny", "t-a-tiny-s0"),
                                                                                 ("b", "tiny", "t-b-tiny-s0")]
    path = write_sweep(tmp_path, {"tasks": ["a"], "variants": ["tiny"], "exclude": ["tiny/a"]})
    with pytest.raises(RecipeError, match=r"grid.exclude: 'tiny/a' is not a task/variant point"):
        expand(path)


def test_sweep_file_errors_name_file_and_field(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, {"variants": ["tiny"], "seed": [0]})
    with pytest.raises(RecipeError, match=r"sweep.yaml: grid.seed: unknown key; allowed: tasks, variants, seeds"):
        expand(path)
    path = write_sweep(tmp_path, {"variants": ["missing"]})
    with pytest.raises(RecipeError, match=r"sweep.yaml: grid run t-missing-s0: .*missing.yaml: file not found"):
        expand(path)
    path = write_sweep(tmp_path, {"variants": ["tiny"]}, set=["model.d_model=0"])
    with pytest.raises(RecipeError, match=r"grid run t-tiny-s0: .*model.d_model: Input should be greater"):
        expand(path)


def test_smoke_skips_sweep_files(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, {"variants": ["tiny"]})
    assert recipe_files([tmp_path]) == [tmp_path / "recipes" / "tiny.yaml"] and path.exists()


def test_interrupted_sweep_runs_only_what_is_missing(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, {"variants": {"tiny": None, "alpha": {"set": ["init.alpha=2.0"], "recipe": "recipes/tiny.yaml"}},
                                  "seeds": [0, 1]})
    specs = expand(path)
    # The "interrupted" first sweep: two runs finished, a third stopped after its last checkpoint.
    for s in specs[:3]:
        assert run_spec(s)["status"] == "finished"
    interrupted = find_finished(specs[2])
    (interrupted / runs.RESULTS).unlink()
    index = index_runs(tmp_path / "runs")
    assert [spec_state(s, index)[0] for s in specs] == ["finished", "finished", "resume", "new"]
    assert format_grid(specs, index).splitlines()[-1] == "4 runs: 1 new, 1 to resume, 2 finished"

    results = run_sweep(path)
    assert [(r["action"], r["status"]) for r in results] == [("skip", "skipped"), ("skip", "skipped"),
                                                           ("resume", "finished"), ("new", "finished")]
    assert Path(results[2]["run_dir"]) == interrupted  # resumed in place, not retrained elsewhere
    assert len(run_dirs(tmp_path / "runs")) == 4
    rerun = run_sweep(path)  # rerunning a finished sweep is free
    assert {r["action"] for r in rerun} == {"skip"} and len(run_dirs(tmp_path / "runs")) == 4
    recipe = yaml.safe_load((Path(results[3]["run_dir"]) / runs.RECIPE).read_text())
    assert recipe["tags"] == {"sweep": "t", "variant": "alpha", "run_key": specs[3].key} and recipe["seed"] == 1
    assert recipe["init"]["alpha"] == 2.0


def test_a_failed_run_is_recorded_and_the_others_go_on(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    # data.source=idx with no IDX files fails while the trainer is being built, before any record is written.
    path = write_sweep(tmp_path, {"variants": {"broken": {"recipe": "recipes/tiny.yaml",
                                                          "set": ["data.source=idx", f"data.root={tmp_path / 'none'}"]},
                                               "tiny": None}})
    results = run_sweep(path)
    assert [r["status"] for r in results] == ["failed", "finished"]
    failed = Path(results[0]["run_dir"])
    record = runs.read_json(failed / runs.RESULTS)
    assert record["status"] == "failed" and "DataError" in record["error"]
    assert yaml.safe_load((failed / runs.RECIPE).read_text())["tags"]["variant"] == "broken"
    from ssmbench.report import report

    text, _ = report([tmp_path / "runs"])
    assert "| tiny |" in text and "broken" not in text.split("### Runs not in the tables")[0]
    assert f"| {failed.name} | broken | smnist | failed | DataError" in text


def test_cli_dry_run_prints_the_grid(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ssmbench.cli import app

    path = write_sweep(tmp_path, {"variants": ["tiny"], "seeds": [3, 4]})
    res = CliRunner().invoke(app, ["sweep", str(path), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "variant=tiny seed=3" in res.stdout and res.stdout.strip().endswith("2 runs: 2 new, 0 to resume, 0 finished")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_parallel_jobs(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, {"variants": ["tiny"], "seeds": [0, 1]})
    results = run_sweep(path, jobs=2)
    assert [r["status"] for r in results] == ["finished", "finished"]
    assert {r["action"] for r in run_sweep(path, jobs=2)} == {"skip"}


def test_a_preempted_run_stops_the_sweep(tmp_path: Path, monkeypatch) -> None:
    import ssmbench.sweep as sweep_module

    path = write_sweep(tmp_path, {"variants": ["tiny"], "seeds": [0, 1, 2]})
    calls = []

    def preempted(spec, threads=None):
        calls.append(spec.seed)
        return {"key": spec.key, "name": spec.name, "tags": spec.tags, "status": "preempted", "action": "new",
                "run_dir": "", "test": None, "error": "Preempted: SIGTERM received", "seconds": 0.0}

    monkeypatch.setattr(sweep_module, "run_spec", preempted)
    assert [r["status"] for r in run_sweep(path)] == ["preempted", "stopped", "stopped"] and calls == [0]


def test_data_efficiency_sweeps_state_and_keep_a_budget_rule(tmp_path: Path) -> None:
    grid = {"variants": ["tiny"], "train_fractions": [0.5, 1.0]}
    with pytest.raises(RecipeError, match=r"sweep.yaml: grid.budget: required with several train_fractions; "
                                          r"`budget: epochs` \(same epochs for every fraction, the TDI paper's protocol\)"):
        expand(write_sweep(tmp_path, grid))
    # Same epochs: a step cap would cut the larger fractions short.
    with pytest.raises(RecipeError, match=r"grid run t-tiny-s0-f0.5: train.max_steps is 2, which cuts the larger "
                                          r"fractions short under grid.budget: epochs; set train.max_steps=null"):
        expand(write_sweep(tmp_path, {**grid, "budget": "epochs"}))
    specs = expand(write_sweep(tmp_path, {**grid, "budget": "epochs"}, set=["train.max_steps=null"]))
    assert {s.tags["budget"] for s in specs} == {"epochs"}
    with pytest.raises(RecipeError, match=r"grid run t-tiny-s0-f0.5: train.max_steps is null; grid.budget: steps needs it"):
        expand(write_sweep(tmp_path, {**grid, "budget": "steps"}, set=["train.max_steps=null"]))
    assert len(expand(write_sweep(tmp_path, {"variants": ["tiny"]}))) == 1  # one fraction: no budget needed
    for shipped in ("recipes/quick/tdi-data-efficiency.yaml", "recipes/sweeps/tdi-data-efficiency.yaml"):
        assert {s.tags["budget"] for s in expand(Path(__file__).parents[1] / shipped)} == {"epochs"}
