"""The NaN/Inf guard: a non-finite loss or gradient stops the run with a message naming the step, the
parameter(s) and the last good checkpoint (NonFiniteError, exit 3), or with `train.on_nonfinite: skip` drops
that update and counts it."""

from __future__ import annotations

import pytest
import torch

from killpoint import cli_run, one_thread, run_dir, tiny, write_recipe  # noqa: F401 (fixture)
from ssmbench import runs
from ssmbench.errors import NonFiniteError
from ssmbench.train import checkpoint, engine

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = {"quiet": True, "log": lambda *_: None}


def nan_loss_at(monkeypatch, steps: set[int]) -> None:
    """Make the training loss NaN at the given (1-based) steps; evaluation losses are left alone."""
    real = engine.loss_and_correct
    calls = [0]

    def patched(task, out, y):
        loss, correct = real(task, out, y)
        if torch.is_grad_enabled():
            calls[0] += 1
            if calls[0] in steps:
                loss = loss * float("nan")
        return loss, correct

    monkeypatch.setattr(engine, "loss_and_correct", patched)


def test_nan_parameter_stops_with_step_parameter_and_checkpoint(tmp_path):
    """A parameter set to NaN after step 3: step 4 stops, naming it and last.pt of step 2."""
    target = {}

    def poison(trainer):
        if trainer.progress.step == 3:
            name, param = list(trainer.model.named_parameters())[-1]
            target["name"] = name
            with torch.no_grad():
                param.view(-1)[0] = float("nan")

    with pytest.raises(NonFiniteError) as e:
        engine.train(tiny(), runs_root=tmp_path, on_step=poison, **QUIET)
    rd = run_dir(tmp_path)
    msg = str(e.value)
    assert "at step 4: loss is nan" in msg
    assert f"{target['name']} (value)" in msg
    assert f"last good checkpoint: {rd / 'checkpoints' / 'last.pt'} (step 2)" in msg
    results = runs.read_json(rd / runs.RESULTS)
    assert results["status"] == "failed" and results["step"] == 3 and "NonFiniteError" in results["error"]
    assert checkpoint.load(rd / "checkpoints" / "last.pt")["progress"]["step"] == 2


def test_nonfinite_gradient_names_the_parameter_not_every_clipped_one(tmp_path):
    """An infinite gradient in one parameter at step 3 (grad_clip on, which would smear it over all of them)."""
    target = {}

    def poison_grad(trainer):
        if trainer.progress.step == 2:
            name, param = list(trainer.model.named_parameters())[-2]
            target["name"] = name
            param.register_hook(lambda g: torch.full_like(g, float("inf")))

    with pytest.raises(NonFiniteError) as e:
        engine.train(tiny(grad_clip=1.0), runs_root=tmp_path, on_step=poison_grad, **QUIET)
    msg = str(e.value)
    assert "at step 3: gradient norm is inf" in msg
    assert f"non-finite parameters: {target['name']} (gradient);" in msg  # only that one


def test_nonfinite_loss_through_the_cli_exits_3(tmp_path, monkeypatch):
    nan_loss_at(monkeypatch, {5})
    code, text = cli_run("train", str(write_recipe(tmp_path)), "--runs-dir", str(tmp_path / "runs"), "-q")
    assert code == 3
    error = text[text.index("error: "):]  # after any warning line (e.g. not learning, in so short a run)
    assert error.startswith("error: non-finite training at step 5: loss is nan") and "(step 4)" in error.replace("\n", "")
    assert "Traceback" not in text


def test_skip_drops_the_update_and_counts_it(tmp_path, monkeypatch):
    nan_loss_at(monkeypatch, {3, 5})
    snapshots = {}

    def snapshot(trainer):
        snapshots[trainer.progress.step] = {n: q.detach().clone() for n, q in trainer.model.named_parameters()}

    results = engine.train(tiny(on_nonfinite="skip"), runs_root=tmp_path, on_step=snapshot, **QUIET)
    assert results["status"] == "finished" and results["steps"] == 12 and results["skipped_steps"] == 2

    def same(a, b):
        return all(torch.equal(snapshots[a][n], snapshots[b][n]) for n in snapshots[a])

    assert same(2, 3) and same(4, 5)  # the skipped steps changed no parameter
    assert not same(3, 4) and not same(5, 6)  # the others did
    state = checkpoint.load(run_dir(tmp_path) / "checkpoints" / "last.pt")
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {10}  # AdamW saw 12 - 2 updates
    rows = runs.read_jsonl(run_dir(tmp_path) / runs.METRICS)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)  # NaN losses are not averaged in


def test_skip_still_stops_when_parameters_are_nonfinite(tmp_path):
    def poison(trainer):
        if trainer.progress.step == 3:
            with torch.no_grad():
                next(trainer.model.parameters()).view(-1)[0] = float("inf")

    with pytest.raises(NonFiniteError, match=r"at step 4: .*\(value\)"):
        engine.train(tiny(on_nonfinite="skip"), runs_root=tmp_path, on_step=poison, **QUIET)


# ---- the CUDA policy on the CPU: the device tally is read only at log points (eval every 4, checkpoint every 2;
# progress rows, log points too, only every 1000 steps)


@pytest.fixture
def read_at_log_points(monkeypatch):
    monkeypatch.setattr(engine, "read_each_step", lambda device: False)


def metric_rows(root):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in runs.read_jsonl(run_dir(root) / runs.METRICS)]


def test_reading_at_log_points_logs_the_same_metrics(tmp_path, monkeypatch):
    every_step = engine.train(tiny(), runs_root=tmp_path / "a", **QUIET)
    monkeypatch.setattr(engine, "read_each_step", lambda device: False)
    at_log_points = engine.train(tiny(), runs_root=tmp_path / "b", **QUIET)
    assert metric_rows(tmp_path / "a") == metric_rows(tmp_path / "b")
    assert every_step["test"] == at_log_points["test"]


def test_deferred_stop_names_the_bad_step_and_saves_nothing_after_it(tmp_path, monkeypatch, read_at_log_points):
    nan_loss_at(monkeypatch, {5})
    with pytest.raises(NonFiniteError) as e:
        engine.train(tiny(log_every=1000), runs_root=tmp_path, **QUIET)
    rd = run_dir(tmp_path)
    assert "at step 5: loss is nan" in str(e.value) and "(step 4)" in str(e.value)
    assert checkpoint.load(rd / "checkpoints" / "last.pt")["progress"]["step"] == 4
    assert runs.read_json(rd / runs.RESULTS)["step"] == 6  # detected at the checkpoint of step 6


def test_deferred_skip_drops_exactly_the_bad_updates(tmp_path, monkeypatch, read_at_log_points):
    nan_loss_at(monkeypatch, {3, 5})
    snapshots = {}

    def snapshot(trainer):
        snapshots[trainer.progress.step] = {n: q.detach().clone() for n, q in trainer.model.named_parameters()}

    results = engine.train(tiny(on_nonfinite="skip"), runs_root=tmp_path, on_step=snapshot, **QUIET)
    assert results["status"] == "finished" and results["skipped_steps"] == 2
    assert all(torch.equal(snapshots[2][n], snapshots[3][n]) for n in snapshots[2])
    assert not all(torch.equal(snapshots[3][n], snapshots[4][n]) for n in snapshots[3])
    state = checkpoint.load(run_dir(tmp_path) / "checkpoints" / "last.pt")
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {10}
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in runs.read_jsonl(run_dir(tmp_path) / runs.METRICS))
