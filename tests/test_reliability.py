"""Nothing lost: damaged results.json, best.pt and recipe.yaml, a missing checkpoints/ folder, concurrent sweeps
on one runs folder, and `sweep --jobs 2` stopped by SIGTERM, SIGINT or SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from killpoint import assert_same_run, cli_run, one_thread, run_dir, write_recipe  # noqa: F401 (fixture)
from ssmbench import runs
from ssmbench.sweep import _run_claimed, claim, expand, format_grid, index_runs, run_spec, run_sweep
from ssmbench.train import checkpoint

from test_sweep import run_dirs, write_sweep


def train_tiny(folder: Path, *extra: str) -> Path:
    code, text = cli_run("train", str(write_recipe(folder)), "--runs-dir", str(folder / "runs"), "-q", *extra)
    assert code == 0, text
    return run_dir(folder / "runs")


@pytest.mark.usefixtures("one_thread")
def test_damaged_results_json_is_recovered_by_resume_and_sweep(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, {"variants": ["tiny"], "seeds": [0, 1, 2]})
    specs = expand(path)
    for s in specs:
        assert run_spec(s)["status"] == "finished"
    dirs = [Path(p) for p in sorted(index_runs(tmp_path / "runs")[s.key][0] for s in specs)]
    good = {d: runs.read_json(d / runs.RESULTS) for d in dirs}
    for d, damage in zip(dirs, [b'{"status": "fin\xffished"}', b"[1]", b'{"status": "finished"}']):
        (d / runs.RESULTS).write_bytes(damage)
    assert format_grid(specs, index_runs(tmp_path / "runs")).splitlines()[-1] == "3 runs: 0 new, 3 to resume, 0 finished"
    results = run_sweep(path)  # each is resumed from its final last.pt: only the test is evaluated again
    assert [(r["action"], r["status"]) for r in results] == [("resume", "finished")] * 3
    assert len(run_dirs(tmp_path / "runs")) == 3
    for d in dirs:
        again = runs.read_json(d / runs.RESULTS)
        assert again["test"] == good[d]["test"] and again["steps"] == good[d]["steps"]


@pytest.mark.usefixtures("one_thread")
def test_a_corrupt_best_pt_falls_back_to_the_final_weights(tmp_path: Path) -> None:
    from killpoint import TINY

    recipe = yaml.safe_load(yaml.safe_dump(TINY))
    recipe["train"].update(max_steps=8, eval_every=8)  # best.pt is the final model: both tests must agree
    code, text = cli_run("train", str(write_recipe(tmp_path, recipe)), "--runs-dir", str(tmp_path / "runs"), "-q")
    rd = run_dir(tmp_path / "runs")
    reference = runs.read_json(rd / runs.RESULTS)
    best = rd / runs.CHECKPOINTS / "best.pt"
    best.write_bytes(best.read_bytes()[:-100])
    (rd / runs.RESULTS).unlink()
    code, text = cli_run("train", "--resume", str(rd), "-q")
    assert code == 0, text
    results = runs.read_json(rd / runs.RESULTS)
    assert results["status"] == "finished" and results["test"] == reference["test"]
    assert "best.pt: checksum mismatch" in results["best_checkpoint_error"]
    assert "tested the final weights instead" in text.replace("\n", "")


@pytest.mark.usefixtures("one_thread")
def test_a_changed_recipe_is_refused_on_resume(tmp_path: Path, monkeypatch) -> None:
    from test_preemption import signal_during_step

    signal_during_step(monkeypatch, 3, signal.SIGTERM)
    code, _ = cli_run("train", str(write_recipe(tmp_path)), "--runs-dir", str(tmp_path / "runs"), "-q")
    monkeypatch.undo()
    rd = run_dir(tmp_path / "runs")
    original = (rd / runs.RECIPE).read_bytes()
    assert code == 75 and checkpoint.load(rd / runs.CHECKPOINTS / "last.pt")["recipe_sha256"]
    (rd / runs.RECIPE).write_bytes(original.split(b"train:")[0])  # truncated: still a valid recipe, all defaults
    code, text = cli_run("train", "--resume", str(rd), "-q")
    assert code == 2 and f"{rd / runs.RECIPE} changed since" in text.replace("\n", "")
    assert "--accept-recipe-change" in text
    (rd / runs.RECIPE).write_bytes(original.replace(b"lr: 0.01", b"lr: 0.02"))  # edited
    assert cli_run("train", "--resume", str(rd), "-q")[0] == 2
    code, text = cli_run("train", "--resume", str(rd), "-q", "--accept-recipe-change")
    assert code == 0 and "continuing under the edited recipe" in text.replace("\n", "")


@pytest.mark.usefixtures("one_thread")
def test_a_missing_checkpoints_folder_is_recreated(tmp_path: Path) -> None:
    import shutil

    (tmp_path / "ref").mkdir()
    rd = train_tiny(tmp_path / "ref")
    damaged = tmp_path / "runs" / "r"  # a run directory that lost its checkpoints/ folder before any checkpoint
    damaged.mkdir(parents=True)
    shutil.copy(rd / runs.RECIPE, damaged / runs.RECIPE)
    code, text = cli_run("train", "--resume", str(damaged), "-q")
    assert code == 0, text
    assert "recreated the missing" in text.replace("\n", "")
    assert_same_run(rd, damaged)


def test_a_claimed_run_is_left_to_its_owner_and_counted_once(tmp_path: Path) -> None:
    """Another process (here a thread with its own claim) starts the first run while this sweep starts: the sweep
    trains the second, retries the first once it is released, and finds it finished: one directory per run."""
    path = write_sweep(tmp_path, {"variants": ["tiny"], "seeds": [0, 1]})
    first = expand(path)[0]
    claimed, done = threading.Event(), []

    def other_sweep():
        with claim(first) as mine:
            assert mine
            claimed.set()
            time.sleep(1.0)
            done.append(_run_claimed(first, None))

    other = threading.Thread(target=other_sweep)
    other.start()
    claimed.wait()
    assert run_spec(first)["status"] == "busy"
    results = run_sweep(path)
    other.join()
    assert done[0]["status"] == "finished"
    assert [(r["action"], r["status"]) for r in results] == [("skip", "skipped"), ("new", "finished")]
    assert results[0]["run_dir"] == done[0]["run_dir"] and len(run_dirs(tmp_path / "runs")) == 2


# --------------------------------------------------------------------------------------------------
# Real processes: concurrent sweeps, signals to `sweep --jobs 2`

LONG = {"train.max_steps=300", "train.checkpoint_every=5", "train.eval_every=1000"}


def sweep_process(path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ssmbench", "sweep", str(path), *args], cwd=path.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.slow
def test_two_concurrent_sweeps_share_the_work(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, {"variants": ["tiny"], "seeds": [0, 1, 2, 3]})
    a, b = sweep_process(path), sweep_process(path)
    outs = [p.communicate(timeout=600) for p in (a, b)]
    assert (a.returncode, b.returncode) == (0, 0), outs
    assert len(run_dirs(tmp_path / "runs")) == 4  # no run trained twice
    from ssmbench.report.records import read_runs

    assert sorted(r.seed for r in read_runs([tmp_path / "runs"])) == [0, 1, 2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("signum, times", [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGKILL, 1),
                                           (signal.SIGINT, 2)])
def test_a_stopped_parallel_sweep_leaves_no_worker_and_resumes(tmp_path: Path, signum: int, times: int) -> None:
    """One signal: workers checkpoint at their next step, the sweep exits 75 (or, killed, the workers get SIGTERM
    from the kernel); a second SIGINT aborts at once with 130. No worker outlives the sweep; the rerun finishes."""
    path = write_sweep(tmp_path, {"variants": ["tiny"], "seeds": [0, 1, 2]}, set=sorted(LONG))
    proc = sweep_process(path, "--jobs", "2")
    deadline = time.time() + 300
    while time.time() < deadline and len(list((tmp_path / "runs").glob("*/checkpoints/last.pt"))) < 2:
        time.sleep(0.2)
    workers = children(proc.pid)
    for _ in range(times):
        proc.send_signal(signum)
        time.sleep(0.05)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 75, signal.SIGINT: 75 if times == 1 else 130}[signum], err
    deadline = time.time() + 120
    while time.time() < deadline and any(alive(w) for w in workers):
        time.sleep(0.2)
    assert not any(alive(w) for w in workers)
    started = run_dirs(tmp_path / "runs")
    assert len(started) == 2  # the third run never started
    for d in started:  # each worker checkpointed at its next step and recorded the preemption
        results = runs.read_json(d / runs.RESULTS)
        assert results["status"] == "preempted"
        if times == 1:
            assert checkpoint.load(d / runs.CHECKPOINTS / "last.pt")["progress"]["step"] == results["step"]
    again = sweep_process(path, "--jobs", "2")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert len(run_dirs(tmp_path / "runs")) == 3


def test_sigterm_while_the_cli_imports_exits_75(tmp_path: Path) -> None:
    """SIGTERM while `ssmbench` still imports its command-line modules: exit 75 with one line, not 143."""
    code = ("import builtins, os, signal, sys\n"
            "real = builtins.__import__\n"
            "def sigterm_at_typer(name, *args, **kwargs):\n"
            "    if name == 'typer':\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "    return real(name, *args, **kwargs)\n"
            "builtins.__import__ = sigterm_at_typer\n"
            "sys.argv = ['ssmbench', 'components']\n"
            "from ssmbench.__main__ import run\n"
            "run()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 75
    assert proc.stderr == "stopped: SIGTERM received before any work started; run the command again\n"


# --------------------------------------------------------------------------------------------------
# Fuzz: a finished run directory damaged in many ways, then resumed: it finishes (exit 0) or says why (exit 2)

DAMAGE = ["keep", "delete", "truncate", "flip", "garbage", "fifo"]
RUN_FILES = [runs.RESULTS, runs.METRICS, runs.ENV, "checkpoints/last.pt", "checkpoints/prev.pt", "checkpoints/best.pt",
             "checkpoints/init.pt"]


def damage(path: Path, how: str, at: float) -> None:
    if how == "keep" or not path.exists():
        return
    data = path.read_bytes()
    path.unlink()
    if how == "truncate":
        path.write_bytes(data[:int(at * len(data))])
    elif how == "flip":
        i = min(int(at * len(data)), len(data) - 1)
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1:]) if data else path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"\xff\x00[" * int(1 + 50 * at))
    elif how == "fifo":
        os.mkfifo(path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("finished")
    return train_tiny(folder)


def check_damaged_resume(tmp_path_factory, finished_run: Path, plan: dict) -> None:
    import shutil

    import torch

    rd = tmp_path_factory.mktemp("damaged") / "run"
    shutil.copytree(finished_run, rd)
    for name, (how, at) in plan.items():
        damage(rd / name, how, at)
    threads = torch.get_num_threads()
    try:
        code, text = cli_run("train", "--resume", str(rd), "-q")  # any exception other than SystemExit: a defect
    finally:
        torch.set_num_threads(threads)
    assert code in (0, 2), text
    if code == 0:
        assert runs.is_finished(runs.read_json(rd / runs.RESULTS))
    else:
        assert "error: " in text and str(rd) in text.replace("\n", "")


run_damage = st.fixed_dictionaries({f: st.tuples(st.sampled_from(DAMAGE), st.floats(0, 1)) for f in RUN_FILES})


NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]  # each example trains: report the failure as drawn


@settings(max_examples=int(os.environ.get("SSMBENCH_FUZZ_EXAMPLES", "6")), deadline=None, phases=NO_SHRINK,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=run_damage)
def test_fuzzed_damaged_run_resumes_or_says_why(tmp_path_factory, finished_run, plan) -> None:
    check_damaged_resume(tmp_path_factory, finished_run, plan)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, phases=NO_SHRINK, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=run_damage)
def test_fuzzed_damaged_run_resumes_or_says_why_long(tmp_path_factory, finished_run, plan) -> None:
    check_damaged_resume(tmp_path_factory, finished_run, plan)
