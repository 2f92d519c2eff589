"""Preemption: SIGTERM/SIGINT make the run write a checkpoint at the next step boundary, record status
"preempted" and exit 75 with a message that says how to resume; the resumed run is bit-identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from killpoint import assert_same_run, cli_run, one_thread, run, run_dir, write_recipe  # noqa: F401 (fixture)
from ssmbench import runs
from ssmbench.train import checkpoint, engine

PREEMPTED = engine.Preempted.exit_code


def signal_during_step(monkeypatch, step: int, signum: int, times: int = 1) -> None:
    """Deliver `signum` to this process (`times` times) in the middle of training step `step`."""
    real = engine.Trainer.train_step

    def train_step(self, *args, **kwargs):
        if self.progress.step + 1 == step:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(engine.Trainer, "train_step", train_step)


@pytest.mark.usefixtures("one_thread")
def test_sigterm_checkpoints_exits_75_and_resumes_bit_identically(tmp_path, monkeypatch):
    recipe = str(write_recipe(tmp_path))
    assert cli_run("train", recipe, "--runs-dir", str(tmp_path / "ref"), "-q")[0] == 0
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    signal_during_step(monkeypatch, 5, signal.SIGTERM)
    code, text = cli_run("train", recipe, "--runs-dir", str(tmp_path / "runs"), "-q")
    rd = run_dir(tmp_path / "runs")
    assert code == PREEMPTED == 75
    assert "SIGTERM received: stopped at step 5 of 12" in text and f"--resume {rd}" in text.replace("\n", "")
    results = runs.read_json(rd / runs.RESULTS)
    assert results["status"] == "preempted" and results["step"] == 5 and results["resume"].endswith(str(rd))
    assert checkpoint.load(rd / "checkpoints" / "last.pt")["progress"]["step"] == 5  # not a checkpoint_every step
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers  # restored

    monkeypatch.undo()
    assert cli_run("train", "--resume", str(rd), "-q")[0] == 0
    assert runs.read_json(rd / runs.RESULTS)["status"] == "finished"
    assert_same_run(run_dir(tmp_path / "ref"), rd)


@pytest.mark.usefixtures("one_thread")
def test_sigint_preempts_and_a_second_signal_aborts(tmp_path, monkeypatch):
    recipe = str(write_recipe(tmp_path))
    signal_during_step(monkeypatch, 3, signal.SIGINT)
    code, text = cli_run("train", recipe, "--runs-dir", str(tmp_path / "a"), "-q")
    assert code == PREEMPTED and "SIGINT received: stopped at step 3" in text

    signal_during_step(monkeypatch, 3, signal.SIGTERM, times=2)
    code, text = cli_run("train", recipe, "--runs-dir", str(tmp_path / "b"), "-q")
    assert code == 130  # aborted at once, not at the step boundary
    rd = run_dir(tmp_path / "b")
    assert runs.read_json(rd / runs.RESULTS)["status"] == "preempted"
    monkeypatch.undo()
    assert cli_run("train", "--resume", str(rd), "-q")[0] == 0  # last.pt of step 2 is still good


@pytest.mark.slow
def test_external_sigterm_on_a_real_process(tmp_path):
    """`kill -TERM` from outside on a long run: exit 75 once a checkpoint is down, then resume finishes."""
    import yaml

    from killpoint import TINY

    recipe = yaml.safe_load(yaml.safe_dump(TINY))
    recipe["train"].update(max_steps=400, eval_every=200)
    path = write_recipe(tmp_path, recipe)
    proc = subprocess.Popen([sys.executable, "-m", "ssmbench", "train", str(path), "--runs-dir", str(tmp_path / "runs"),
                             "-q"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "runs").glob("*/checkpoints/last.pt")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == PREEMPTED, err
    rd = run_dir(tmp_path / "runs")
    step = runs.read_json(rd / runs.RESULTS)["step"]
    assert 0 < step < 400 and checkpoint.load(rd / "checkpoints" / "last.pt")["progress"]["step"] == step
    assert "ssmbench train --resume" in err
    done = run("none", "train", "--resume", str(rd), "-q", cwd=tmp_path)
    assert done.returncode == 0 and runs.read_json(rd / runs.RESULTS)["steps"] == 400


@pytest.mark.slow
def test_term_in_a_subprocess_resumes_bit_identically(tmp_path):
    recipe = str(write_recipe(tmp_path))
    assert run("none", "train", recipe, "--runs-dir", str(tmp_path / "ref"), "-q", cwd=tmp_path).returncode == 0
    proc = run("term:7", "train", recipe, "--runs-dir", str(tmp_path / "runs"), "-q", cwd=tmp_path)
    assert proc.returncode == PREEMPTED, proc.stderr
    rd = run_dir(tmp_path / "runs")
    assert run("none", "train", "--resume", str(rd), "-q", cwd=tmp_path).returncode == 0
    assert_same_run(run_dir(tmp_path / "ref"), rd)
