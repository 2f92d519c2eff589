"""The command line as a user meets it: version, resolved config, missing arguments, wrong kind of file, data
commands, generator and sweep/smoke summaries, init-tdi output names, progress vs summary, wide tables."""

import json
from pathlib import Path

import pytest
import yaml

from killpoint import TINY, cli_run, one_thread, run_dir  # noqa: F401 (fixture)
from ssmbench import __version__, runs
from ssmbench.recipe import load_recipe


def write(tmp_path: Path, obj: dict, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


def sweep_file(tmp_path: Path) -> Path:
    write(tmp_path, TINY)
    return write(tmp_path, {"name": "t", "recipe": "tiny.yaml", "runs_dir": str(tmp_path / "runs"),
                            "grid": {"variants": ["tiny"]}}, "sweep.yaml")


def test_version():
    code, out = cli_run("--version")
    assert code == 0 and out.startswith(f"ssmbench {__version__} (torch "), out


def test_print_config_is_the_resolved_recipe_and_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, TINY)
    code, out = cli_run("train", str(path), "--set", "train.lr=0.5", "--print-config")
    assert code == 0, out
    printed = write(tmp_path, yaml.safe_load(out), "printed.yaml")
    assert load_recipe(printed) == load_recipe(path, ["train.lr=0.5"])
    assert "weight_decay: 0.05" in out and not (tmp_path / "runs").exists()


def test_missing_arguments_say_what_is_missing(tmp_path):
    code, out = cli_run("train")
    assert code == 2 and "no recipe given" in out and "--resume RUN_DIR" in out, out
    path = write(tmp_path, TINY)
    code, out = cli_run("train", str(path), "--resume", str(tmp_path))
    assert code == 2 and "not both" in out, out
    code, out = cli_run("init-tdi")
    assert code == 2 and "no data given" in out and "--dataset NAME" in out and "--recipe FILE" in out, out


def test_a_sweep_file_given_to_train_and_a_recipe_given_to_sweep(tmp_path):
    sweep = sweep_file(tmp_path)
    code, out = cli_run("train", str(sweep))
    assert code == 2 and f"this is a sweep file (it has a `grid`), not a recipe: use `ssmbench sweep {sweep}`" in out
    assert "unknown key" not in out
    code, out = cli_run("init-tdi", "--recipe", str(sweep))
    assert code == 2 and "this is a sweep file" in out, out
    code, out = cli_run("sweep", str(tmp_path / "tiny.yaml"))
    assert code == 2 and f"not a sweep file: use `ssmbench train {tmp_path / 'tiny.yaml'}`" in out, out
    assert "unknown key" not in out


def test_data_show_lists_types_defaults_and_descriptions():
    code, out = cli_run("data", "show", "smnist")
    assert code == 0, out
    rows = {ln.split()[0]: ln.split(None, 3)[1:] for ln in out.splitlines() if ln.startswith("  ")}
    assert rows["permute"][:2] == ["bool", "required"] and "pMNIST" in rows["permute"][2]
    assert rows["source"][0] == "'auto'" and "'idx'" in out and rows["val_fraction"][:2] == ["float", "0.1"]
    code, out = cli_run("data", "show", "nope")
    assert code == 2 and "'nope' is not a registered dataset; known:" in out, out


def test_empty_download_folder_is_not_present(tmp_path):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    smnist = lambda out: next(ln for ln in out.splitlines() if ln.startswith("smnist "))  # noqa: E731
    code, out = cli_run("data", "list", "--root", str(tmp_path))
    assert code == 0 and smnist(out).split()[1] == "missing", out
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\0" * 16)
    code, out = cli_run("data", "list", "--root", str(tmp_path))
    assert smnist(out).split()[1:3] == ["present", "official"], out


def test_data_prepare_takes_adapter_options(tmp_path, monkeypatch):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    code, out = cli_run("data", "prepare", "smnist", "--root", str(tmp_path))
    assert code == 2 and "data.permute: required field is missing" in out and "data show smnist" in out, out
    code, out = cli_run("data", "prepare", "smnist", "--root", str(tmp_path), "--set", "data.permute=false",
                        "--set", "val_fraction=0.5")
    assert code == 0, out
    assert "smnist: 5,000 train, 5,000 val, 2,000 test sequences of length 784 (embedded-subset data)" in out, out
    assert "{" not in out


def test_generators_end_with_a_readable_summary(tmp_path):
    code, out = cli_run("data", "generate", "listops", "--n", "12", "--eval-n", "2", "--out", str(tmp_path / "lo"))
    assert code == 0 and f"ListOps: wrote 12 train, 2 val, 2 test expressions to {tmp_path / 'lo'}" in out, out
    code, out = cli_run("data", "generate", "pathfinder", "--n", "3", "--out", str(tmp_path / "pf"))
    assert code == 0 and "Pathfinder-32: wrote 3 images (" in out and "{" not in out, out
    assert len(list((tmp_path / "pf").rglob("*.png"))) == 3


def test_generator_progress_counts_every_item(tmp_path):
    from ssmbench.data.generators import listops, pathfinder

    seen = []
    listops.write_release(tmp_path / "lo", 6, 1, seed=0, progress=lambda d, t: seen.append((d, t)),
                          min_length=5, max_length=60)
    assert seen == [(i, 8) for i in range(1, 9)]
    seen.clear()
    pathfinder.write_release(tmp_path / "pf", 32, 14, n=3, seed=0, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_init_tdi_out_name_writes_name_pt(tmp_path):
    code, out = cli_run("init-tdi", "--dataset", "synthetic-memory", "--set", "data.length=16", "--set", "data.n_train=24",
                        "--set", "data.n_test=4", "--steps", "2", "--d-state", "4", "--d-model", "2",
                        "--out", str(tmp_path / "mine"))
    assert code == 0, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.json", "mine.png", "mine.pt"]


def test_smoke_ends_with_a_summary(tmp_path, one_thread):
    folder = tmp_path / "recipes"
    folder.mkdir()
    write(folder, {**TINY, "name": "a"}, "a.yaml")
    write(folder, {"name": "s", "recipe": "a.yaml", "grid": {"variants": ["a"]}}, "sweep.yaml")
    write(folder, {**TINY, "name": "b", "model": {"kind": "nope"}}, "b.yaml")
    code, out = cli_run("smoke", str(folder), "--steps", "1", "--runs-dir", str(tmp_path / "runs"))
    assert code == 2, out
    assert "smoke: 1 recipe(s) done, 1 failed, 1 sweep file(s) skipped (run them with `ssmbench sweep`)" in out, out


def test_sweep_ends_with_a_summary(tmp_path, one_thread):
    path = sweep_file(tmp_path)
    code, out = cli_run("sweep", str(path))
    assert code == 0 and "sweep: 1 run(s): 1 trained, 0 skipped (already finished), 0 failed" in out, out
    run = run_dir(tmp_path / "runs")  # sweep runs are quiet (no progress lines) but write TensorBoard events
    assert list(run.glob("events.out.tfevents.*")) and "tiny step" not in out
    assert json.loads((run / runs.RESULTS).read_text())["status"] == "finished"
    code, out = cli_run("sweep", str(path))
    assert code == 0 and "sweep: 1 run(s): 0 trained, 1 skipped (already finished), 0 failed" in out, out


def test_sweep_failure_reasons_and_resume_hint_repeat_the_flags(tmp_path, monkeypatch):
    import ssmbench.sweep as sweep_module
    from ssmbench.registry import IMPORT_ENV

    monkeypatch.delenv(IMPORT_ENV, raising=False)
    path = sweep_file(tmp_path)
    outcome = {"status": "failed", "error": "DataError: no data"}

    def fake_run(spec, threads=None):
        return {"key": spec.key, "name": spec.name, "tags": spec.tags, "action": "new", "run_dir": "", "test": None,
                "seconds": 0.0, **outcome}

    monkeypatch.setattr(sweep_module, "run_spec", fake_run)
    code, out = cli_run("sweep", str(path))
    assert code == 2 and "1 failed" in out and "  t-tiny-s0: DataError: no data" in out, out
    outcome.update(status="preempted", error="Preempted: SIGTERM")
    code, out = cli_run("sweep", str(path), "--runs-dir", str(tmp_path / "elsewhere"), "--set", "train.lr=0.02",
                        "--set", "tags.note=a b")
    assert code == 75, out
    assert (f"run `ssmbench sweep {path} --runs-dir {tmp_path / 'elsewhere'} --set train.lr=0.02 --set 'tags.note=a b'` "
            f"to resume") in out, out


def test_progress_bar_best_val_equals_the_summary(tmp_path, monkeypatch, one_thread):
    """Evaluation only at the last step: the bar must still show its result, as the summary does."""
    import ssmbench.progress as progress

    from ssmbench.cli import summary_line
    from ssmbench.train.engine import train

    shown = []
    exit_ = progress.TrainingProgress.__exit__

    def capture(self, *exc):
        exit_(self, *exc)
        shown.append(self.bar.tasks[0].fields["stats"])

    monkeypatch.setattr(progress.TrainingProgress, "__exit__", capture)
    recipe = load_recipe(write(tmp_path, TINY), ["train.eval_every=null"])
    results = train(recipe, runs_root=tmp_path / "runs", log=lambda *_: None)
    best = f"{results['best_val']['accuracy']:.4f}"
    assert f"best val accuracy {best}" in shown[0] and f"best val {best}" in summary_line(results)


def test_tables_are_not_cut_at_80_columns(capsys):
    from ssmbench import cli
    from ssmbench.bench import print_table

    row = {"group": "s4d L=16384", "block": "s4d", "path": "direct", "L": 16384, "median_s": 12.3456, "min_s": 12.0,
           "peak_bytes": 2**33, "max_abs_diff": {"output_rel": 1e-6, "grad_rel": 2e-6}}
    env = {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "torch_threads": 16, "torch": "2.11.0+cu130"}
    print_table({"environment": env, "results": [row]}, cli.console)
    err = capsys.readouterr().err
    assert "NVIDIA H100 80GB HBM3), 16 threads, torch 2.11.0+cu130" in err  # the title in one line
    assert "dgrad rel" in err and "12346" in err and "…" not in err, err


def test_bench_warms_up_every_case_before_timing(monkeypatch):
    import ssmbench.bench as bench

    calls = []
    real = bench.step
    monkeypatch.setattr(bench, "step", lambda m, x, g, *rest: (calls.append(x.shape[1]), real(m, x, g, *rest))[1])
    cases = [bench.Case("s4d", p, L=16, batch=1, d_model=2, d_state=4) for p in ("fast", "direct")]
    bench.time_cases(cases, reps=2)
    assert len(calls) == 2 * (bench.WARMUP + 2)

