"""Signals while a run is set up and in sweep workers (issue 28, cases 2 and 8): SIGTERM during the TDI fit stops
the run at once (exit 75, results.json "preempted", no checkpoint), and a sweep worker whose sweep is gone exits
when a second signal aborts its run instead of waiting for work forever."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from killpoint import cli_run, run_dir, write_recipe
from test_rng_streams import recipe_of

from ssmbench import runs


def test_sigterm_during_the_tdi_fit_stops_at_once(tmp_path: Path, monkeypatch) -> None:
    """Before: the signal only set a flag read at the first training step, so the fit (minutes under a real
    recipe) ran to its end first and a Slurm grace period ran out."""
    from ssmbench.init import tdi

    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    real_match, fit_steps = tdi.match, []

    def match_then_sigterm(*args, **kwargs):
        def on_step(step, loss):
            fit_steps.append(step)
            if step == 2:
                os.kill(os.getpid(), signal.SIGTERM)
        return real_match(*args, **{**kwargs, "on_step": on_step})

    monkeypatch.setattr(tdi, "match", match_then_sigterm)
    recipe = write_recipe(tmp_path, recipe_of("tdi", tmp_path))
    threads = torch.get_num_threads()
    try:
        code, text = cli_run("train", str(recipe), "--runs-dir", str(tmp_path / "runs"), "-q")
    finally:
        torch.set_num_threads(threads)
    assert code == 75, text
    assert "SIGTERM received while the run was being set up" in text and "Traceback" not in text
    assert max(fit_steps) <= 3 and not (tmp_path / "tdi" / "a.pt").exists()  # the fit stopped; nothing saved
    rd = run_dir(tmp_path / "runs")
    assert runs.read_json(rd / runs.RESULTS)["status"] == "preempted"  # the next sweep resumes it
    assert not (rd / "checkpoints" / "last.pt").exists()


def test_a_worker_whose_sweep_died_exits_when_its_run_is_aborted(monkeypatch) -> None:
    """The second parent-death SIGTERM becomes KeyboardInterrupt in the run; the worker must exit, not return to
    ProcessPoolExecutor's queue (ppid 1, blocked in call_queue.get() forever)."""
    from ssmbench import sweep

    class Exited(BaseException):
        pass

    def aborted(spec, threads):
        raise KeyboardInterrupt

    def exit_(code):
        raise Exited(code)

    monkeypatch.setattr(sweep, "run_spec", aborted)
    monkeypatch.setattr(sweep.os, "_exit", exit_)
    monkeypatch.setitem(sweep._WORKER, "parent", os.getppid() + 1)  # the sweep that started this worker is gone
    monkeypatch.setitem(sweep._WORKER, "signal", None)
    try:
        sweep.worker_run_spec(object(), 1)
    except KeyboardInterrupt:
        pytest.fail("the worker passed the abort on to its pool although the sweep is gone (it would wait forever)")
    except Exited as e:
        assert e.args == (75,)
    else:
        pytest.fail("the worker returned")
    monkeypatch.setitem(sweep._WORKER, "parent", os.getppid())  # the sweep lives: the abort reaches it
    with pytest.raises(KeyboardInterrupt):
        sweep.worker_run_spec(object(), 1)
