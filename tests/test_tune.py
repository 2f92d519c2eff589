"""`ssmbench tune`: spaces checked before any run, equal budgets, trials as ordinary run directories chosen on
validation, pruning, resume after a kill, two processes on one study, and the journal and PostgreSQL storages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from killpoint import cli_run
from ssmbench import runs
from ssmbench.report import build_tables
from ssmbench.report.records import read_runs

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "name": "tiny", "data": {"name": "smnist", "permute": False},
    "model": {"d_model": 4, "n_layers": 1, "ssm": {"d_state": 4}},
    "train": {"max_steps": 6, "batch_size": 4, "eval_batch_size": 8, "max_eval_batches": 1, "max_test_batches": 1,
              "threads": 1, "eval_every": 2, "loggers": []},
}
LR = {"float": [0.001, 0.05], "log": True}


def write_tune(tmp_path: Path, recipe: dict = TINY, **top) -> Path:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    tune = {"name": "tt", "recipe": "tiny.yaml", "runs_dir": str(tmp_path / "runs"), "trials": 3, "seeds": [0, 1],
            "variants": {"s4d": {"space": {"train.lr": LR}},
                         "alpha": {"changes": ["init.alpha"],
                                   "space": {"init.alpha": {"float": [0.5, 8.0], "log": True}, "train.lr": LR}}},
            **top}
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(tune, sort_keys=False))
    return path


def runs_by_role(root: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in read_runs([root]):
        out.setdefault(r.tags.get("tune_role", ""), []).append(r)
    return out


def study(tmp_path: Path, name: str, storage: str | None = None):
    url = storage or f"sqlite:///{tmp_path / 'runs' / 'tt.optuna.db'}"
    from ssmbench.tune import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(url))


@pytest.mark.parametrize("space, message", [
    ({"train.lrr": LR}, "variants.s4d.space.train.lrr: not a field of the resolved recipe; fields of train:"),
    ({"train.lr": {"float": [0.05, 0.001]}}, "variants.s4d.space.train.lr: empty range [0.05, 0.001]"),
    ({"train.epochs": {"float": [1, 4]}}, "variants.s4d.space.train.epochs: U[1, 4] includes 2.1458980339, which the "
                                          "field does not take (Input should be a valid integer"),
    ({"model.norm": {"choices": ["batch", "group"]}}, "{batch, group} includes 'group', which the field does not take"),
    ({"train.lr": {"float": [0.0, 0.1], "log": True}}, "log: needs a float or int range with low > 0"),
    ({"seed": {"int": [0, 3]}}, "variants.s4d.space.seed: set per run by tune"),
    ({"train.weight_decay": {"float": [0.0, 0.1]}}, "variants.alpha.space.train.weight_decay: the baseline s4d does "
                                                    "not tune it"),
])
def test_a_bad_space_is_one_line_and_exit_2_before_any_run(tmp_path: Path, space: dict, message: str) -> None:
    variants = {"s4d": {"space": {"train.lr": LR, **space}}, "alpha": {"space": {"train.lr": LR}}}
    if "weight_decay" in message:  # the unfair case: alpha tunes a shared field the baseline does not
        variants = {"s4d": {"space": {"train.lr": LR}}, "alpha": {"space": space}}
    path = write_tune(tmp_path, variants=variants)
    code, out = cli_run("tune", str(path))
    assert code == 2 and message in out, out
    assert len(out.strip().splitlines()) == 1 and "Traceback" not in out
    assert not (tmp_path / "runs").exists()  # nothing ran, no study was created


def test_dry_run_prints_spaces_budgets_and_fields(tmp_path: Path) -> None:
    code, out = cli_run("tune", str(write_tune(tmp_path)), "--dry-run")
    assert code == 0, out
    assert "3 trials per variant (the baseline s4d included)" in out and "final runs: seeds 0, 1" in out
    assert "study tt.s4d: variant s4d (baseline); budget 3 trials (not started)" in out
    assert "study tt.alpha: variant alpha; budget 3 trials (not started)" in out
    assert "tunes 2 field(s): init.alpha, train.lr" in out and "init.alpha ~ logU[0.5, 8]" in out
    assert not (tmp_path / "runs").exists()


def test_tune_spends_equal_budgets_on_validation_then_trains_the_best_with_every_seed(tmp_path: Path) -> None:
    path = write_tune(tmp_path)
    code, out = cli_run("tune", str(path))
    assert code == 0, out
    by_role = runs_by_role(tmp_path / "runs")
    trials, finals = by_role["trial"], by_role["final"]
    assert Counter(r.tags["variant"] for r in trials) == {"s4d": 3, "alpha": 3}  # the same budget, baseline included
    assert all(r.finished and r.seed == 0 for r in trials)  # ordinary, finished run directories
    for variant in ("s4d", "alpha"):
        s = study(tmp_path, f"tt.{variant}")
        assert len(s.trials) == 3 and all(t.state.name == "COMPLETE" for t in s.trials)
        for t in s.trials:  # each trial's value is its run's best validation accuracy, read from results.json
            run = next(r for r in trials if r.tags["variant"] == variant and r.tags["tune_trial"] == str(t.number))
            assert t.value == run.results["best_val"]["accuracy"]
            assert set(t.intermediate_values) == {2, 4, 6}  # every evaluation went to the pruner
            assert [t.intermediate_values[s_] for s_ in (2, 4, 6)] == run.curve("val", "accuracy")[1]
            assert run.recipe["train"]["lr"] == pytest.approx(t.params["train.lr"], rel=1e-12)
        best = s.best_trial
        mine = [r for r in finals if r.tags["variant"] == variant]
        assert sorted(r.seed for r in mine) == [0, 1] and all(r.finished for r in mine)
        assert all(r.recipe["train"]["lr"] == pytest.approx(best.params["train.lr"], rel=1e-12) for r in mine)
        assert all(r.tags["tune_budget"] == "3" and r.tags["tune_trials"] == "3" for r in mine)
    alpha = next(r for r in finals if r.tags["variant"] == "alpha")
    assert alpha.recipe["init"]["alpha"] == pytest.approx(study(tmp_path, "tt.alpha").best_params["init.alpha"])
    assert "init.alpha ~ logU[0.5, 8]; train.lr ~ logU[0.001, 0.05]" == alpha.tags["tune_space"]
    # The report: final runs in the tables (n = 2 seeds per cell), trials only in the Tuning table.
    tables = build_tables(read_runs([tmp_path / "runs"]))
    assert [c.value["n"] for c in (row[1] for row in tables[0].rows)] == [2, 2]
    tuning = next(t for t in tables if t.title == "Tuning")
    assert {row[0].text: row[4].text for row in tuning.rows} == {"s4d": "3 / 0 / 0 of 3", "alpha": "3 / 0 / 0 of 3"}
    assert any(n.startswith("tuned on validation by `ssmbench tune`") for n in tables[0].notes)
    # Done: a second tune trains nothing and asks no trial.
    n_dirs = len(list((tmp_path / "runs").glob("tt-*")))
    code, out = cli_run("tune", str(path))
    assert code == 0 and "4 already finished" in out and len(list((tmp_path / "runs").glob("tt-*"))) == n_dirs
    assert len(study(tmp_path, "tt.s4d").trials) == 3
    code, out = cli_run("tune", str(path), "--dry-run")
    assert "budget 3 trials (3 complete)" in out


def test_the_pruner_stops_a_trial_and_the_study_records_it(tmp_path: Path, monkeypatch) -> None:
    from ssmbench import tune

    # A pruner that stops every trial whose validation accuracy is below 2 (all of them) after step 2.
    monkeypatch.setattr(tune, "make_pruner", lambda name, startup: optuna.pruners.ThresholdPruner(lower=2.0))
    path = write_tune(tmp_path, trials=1, variants={"s4d": {"space": {"train.lr": LR}}})
    # A study with no completed trial cannot choose: the final runs are refused with the reason.
    with pytest.raises(Exception, match="no completed trial among its 1 \\(pruned 1, failed 0\\)"):
        tune.run_tune(path)
    (trial,) = runs_by_role(tmp_path / "runs")["trial"]
    assert trial.finished and trial.results["steps"] == 2  # stopped at the first report, then tested as usual
    assert trial.results["stopped_early"] == "pruned by the median pruner at step 2"
    assert [t.state.name for t in study(tmp_path, "tt.s4d").trials] == ["PRUNED"]


def test_a_journal_file_storage_holds_the_studies(tmp_path: Path) -> None:
    journal = tmp_path / "shared" / "tt.journal"
    path = write_tune(tmp_path, trials=2, seeds=[0], variants={"s4d": {"space": {"train.lr": LR}}})
    code, out = cli_run("tune", str(path), "--storage", str(journal))
    assert code == 0, out
    assert journal.is_file() and not (tmp_path / "runs" / "tt.optuna.db").exists()
    assert len(study(tmp_path, "tt.s4d", str(journal)).trials) == 2
    assert len(runs_by_role(tmp_path / "runs")["final"]) == 1


SLOW_TRIALS = {**TINY, "train": {**TINY["train"], "max_steps": 20, "eval_every": 10, "checkpoint_every": 2}}


def tune_process(path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "ssmbench", "tune", str(path), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def trial_dirs(root: Path) -> Counter:
    """(variant, trial number) -> run directories made for it."""
    return Counter((r.tags["variant"], r.tags["tune_trial"]) for r in read_runs([root], warn=lambda *_: None)
                   if r.tags.get("tune_role") == "trial")


def test_a_killed_tune_resumes_its_running_trial_and_keeps_the_budget(tmp_path: Path) -> None:
    path = write_tune(tmp_path, SLOW_TRIALS, trials=2, seeds=[0], variants={"s4d": {"space": {"train.lr": LR}}})
    proc = tune_process(path)
    last = tmp_path / "runs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(last.glob("tt-s4d-trial0-*/checkpoints/last.pt")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    s = study(tmp_path, "tt.s4d")
    assert [t.state.name for t in s.trials] == ["RUNNING"]  # killed inside trial 0
    out = subprocess.run([sys.executable, "-m", "ssmbench", "tune", str(path)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert [t.state.name for t in study(tmp_path, "tt.s4d").trials] == ["COMPLETE", "COMPLETE"]
    assert trial_dirs(tmp_path / "runs") == {("s4d", "0"): 1, ("s4d", "1"): 1}  # trial 0 resumed in its directory


def test_two_tune_processes_on_one_study_never_run_a_trial_twice(tmp_path: Path) -> None:
    path = write_tune(tmp_path, trials=3, seeds=[0, 1])
    procs = [tune_process(path), tune_process(path)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for variant in ("s4d", "alpha"):
        assert len(study(tmp_path, f"tt.{variant}").trials) == 3  # the budget, not 2 x 3
    assert set(trial_dirs(tmp_path / "runs").values()) == {1} and len(trial_dirs(tmp_path / "runs")) == 6
    finals = Counter((r.tags["variant"], r.seed) for r in runs_by_role(tmp_path / "runs")["final"])
    assert finals == {("s4d", 0): 1, ("s4d", 1): 1, ("alpha", 0): 1, ("alpha", 1): 1}
    trained_here = [sum(line.startswith("trial ") for line in o.splitlines()) for o in outs]
    assert sum(trained_here) == 6  # each trial trained by exactly one of the two


POSTGRES_URL = os.environ.get("SSMBENCH_TEST_POSTGRES", "postgresql://ssmbench:ssmbench@127.0.0.1:5432/ssmbench")


def postgres_reachable() -> str | None:
    """None if the test server answers, else why not."""
    try:
        import sqlalchemy
    except ImportError:
        return "sqlalchemy is not installed"
    try:
        import psycopg  # noqa: F401  (SQLAlchemy 2.1: postgresql:// uses psycopg 3)
    except ImportError:
        return "psycopg is not installed: pip install 'ssmbench[postgres]'"
    try:
        with sqlalchemy.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3}).connect():
            return None
    except Exception as e:
        return f"no PostgreSQL server at {POSTGRES_URL.split('@')[-1]} ({type(e).__name__}); .ci/run installs and starts one"


def test_a_postgresql_storage_serves_the_study(tmp_path: Path) -> None:
    why = postgres_reachable()
    if why:
        pytest.skip(why)
    import sqlalchemy

    name = f"tt{os.getpid()}x{time.time_ns() % 10**9}"  # a fresh study name: the server outlives the test
    path = write_tune(tmp_path, trials=2, seeds=[0], variants={"s4d": {"space": {"train.lr": LR}}})
    path.write_text(path.read_text().replace("name: tt", f"name: {name}", 1))
    code, out = cli_run("tune", str(path), "--storage", POSTGRES_URL, "--jobs", "2")
    assert code == 0, out
    s = optuna.load_study(study_name=f"{name}.s4d", storage=POSTGRES_URL)
    assert [t.state.name for t in s.trials] == ["COMPLETE", "COMPLETE"]
    with sqlalchemy.create_engine(POSTGRES_URL).connect() as c:  # the trials are rows on the server
        n = c.execute(sqlalchemy.text("select count(*) from trials t join studies s on t.study_id = s.study_id "
                                      "where s.study_name = :n"), {"n": f"{name}.s4d"}).scalar()
    assert n == 2 and len(runs_by_role(tmp_path / "runs")["final"]) == 1


def test_qmc_draws_one_scrambled_sobol_sequence_across_restarts(tmp_path: Path) -> None:
    """sampler: qmc gives each study one scrambled Sobol sequence (Optuna's QMCSampler): trial 0 is drawn at random
    (Optuna's rule), trials 1, 2, ... are the sequence's points 0, 1, ... in order, also when each trial is asked by
    a fresh process; checked against scipy's Sobol engine with the study's seed, mapped to the log range."""
    import math

    from scipy.stats import qmc

    from ssmbench import tune

    space = {"init.alpha": {"float": [0.1, 30.0], "log": True}, "train.lr": LR}
    path = write_tune(tmp_path, variants={"s4d": {"changes": ["init.alpha"], "space": space}}, sampler="qmc", trials=5)
    spec = tune.load_tune(path)
    (s,) = tune.studies(path, spec)
    url = tune.storage_url(Path(s.base.runs_dir), spec, None)
    for number in range(5):
        ostudy = tune.load_study(url, s.name, "maximize")
        assert tune.next_trial(spec, url, s, ostudy, {(s.name, n) for n in range(number)}).number == number
    drawn = [[tr.params[k] for k in sorted(space)] for tr in tune.load_study(url, s.name, "maximize").trials]
    points = qmc.Sobol(2, scramble=True, seed=tune.sampler_seed_of(spec, s.name, 0)).random(4)
    bounds = [(0.1, 30.0), tuple(LR["float"])]
    want = [[math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) for u, (lo, hi) in zip(row, bounds)]
            for row in points]
    assert sum(drawn[1:], []) == pytest.approx(sum(want, []), rel=1e-9)
    # a (0, m, 2)-net: the 4 points fall one in each quarter of each axis (log scale)
    for k, (lo, hi) in enumerate(bounds):
        quarters = sorted(int(4 * (math.log(v[k]) - math.log(lo)) / (math.log(hi) - math.log(lo))) for v in drawn[1:])
        assert quarters == [0, 1, 2, 3]


def test_smoke_skips_tune_files(tmp_path: Path, repo_root: Path) -> None:
    from ssmbench.smoke import recipe_files, split_files

    path = write_tune(tmp_path)
    assert recipe_files([tmp_path]) == [tmp_path / "tiny.yaml"] and path.exists()
    recipes, plans = split_files([repo_root / "recipes" / "tune"])
    assert sorted(p.name for p in plans) == ["frequency-alpha.yaml", "smnist-alpha.yaml"]
    assert sorted(p.name for p in recipes) == ["frequency-s4d.yaml", "smnist-s4d.yaml"]


def test_a_restarted_tune_draws_new_values(tmp_path: Path) -> None:
    from ssmbench import tune

    path = write_tune(tmp_path, variants={"s4d": {"space": {"train.lr": LR}}})
    spec = tune.load_tune(path)
    (s,) = tune.studies(path, spec)
    url = tune.storage_url(Path(s.base.runs_dir), spec, None)
    drawn = []
    for number in range(3):  # each a fresh process's view: a new study object, the earlier trials handled
        ostudy = tune.load_study(url, s.name, "maximize")
        trial = tune.next_trial(spec, url, s, ostudy, {(s.name, n) for n in range(number)})
        assert trial.number == number
        drawn.append(ostudy.trials[number].params["train.lr"])
    assert len(set(drawn)) == 3  # a sampler seeded alike in every process would repeat trial 0's value
    again = tune.make_sampler("tpe", tune.sampler_seed_of(spec, s.name, 1))  # and the values are reproducible
    assert again.sample_independent(ostudy, ostudy.trials[1], "train.lr",
                                    optuna.distributions.FloatDistribution(0.001, 0.05, log=True)) == drawn[1]


def test_a_stored_study_of_another_space_or_recipe_is_refused_before_any_trial(tmp_path: Path) -> None:
    path = write_tune(tmp_path, trials=1, seeds=[0], variants={"s4d": {"space": {"train.lr": LR}}})
    assert cli_run("tune", str(path))[0] == 0
    before = {p.name for p in (tmp_path / "runs").iterdir()}
    assert cli_run("tune", str(path))[0] == 0  # the same file again: the study is resumed (nothing to do)
    path.write_text(path.read_text().replace("0.05", "0.2"))  # a wider lr range: trials of the old one would mix in
    code, out = cli_run("tune", str(path))
    assert code == 2 and "study tt.s4d" in out and "another search space (stored" in out and "logU[0.001, 0.05]" in out
    write_tune(tmp_path, recipe={**TINY, "model": {**TINY["model"], "d_model": 8}}, trials=1, seeds=[0],
               variants={"s4d": {"space": {"train.lr": LR}}})  # the same space over another base recipe
    code, out = cli_run("tune", str(path))
    assert code == 2 and "another base recipe" in out and len(out.strip().splitlines()) == 1
    assert {p.name for p in (tmp_path / "runs").iterdir()} == before  # no run was started
