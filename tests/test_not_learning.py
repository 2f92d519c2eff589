"""The not-learning check (train/engine.py): a classifier's training loss still at the chance level ln C past a
stated share of the run is reported in the log and results.json, and `train.not_learning: stop` ends the run."""

from __future__ import annotations

import math
from pathlib import Path

from ssmbench import runs
from ssmbench.recipe import validate_recipe
from ssmbench.train import engine


def recipe(lr: float, **train):
    return validate_recipe({
        "name": "nl", "data": {"name": "smnist", "permute": False},
        "model": {"d_model": 8, "n_layers": 1, "ssm": {"d_state": 4}},
        "train": {"max_steps": 40, "batch_size": 16, "eval_batch_size": 50, "max_eval_batches": 1,
                  "max_test_batches": 1, "threads": 1, "eval_every": 10, "lr": lr, "loggers": [], **train}})


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in runs.read_jsonl(Path(run_dir) / runs.METRICS) if r["split"] == "train"}


def test_a_frozen_classifier_is_reported_at_the_first_evaluation_past_the_share(tmp_path: Path) -> None:
    lines: list[str] = []
    r = engine.train(recipe(1e-9, not_learning_after=0.5), runs_root=tmp_path, quiet=True, log=lines.append)
    chance = math.log(10)
    losses = train_losses(r["run_dir"])
    assert abs(losses[20] - chance) < 0.05  # the loss the check read is the logged training loss, at ln 10
    nl = r["not_learning"]
    assert nl["step"] == 20 and nl["share"] == 0.5 and nl["train_loss"] == losses[20]  # not step 10 (< 50 %)
    assert abs(nl["chance_loss"] - chance) < 1e-12 and nl["stopped"] is False and nl["at_end"] is True
    assert r["status"] == "finished" and r["steps"] == 40 and r["stopped_early"] is None and r["n_classes"] == 10
    assert sum("not learning" in line for line in lines) == 1 and "ln 10 = 2.3026" in lines[0]
    assert runs.read_json(Path(r["run_dir"]) / runs.RESULTS)["not_learning"] == nl


def test_stop_ends_the_run_at_the_check_and_still_tests_it(tmp_path: Path) -> None:
    r = engine.train(recipe(1e-9, not_learning="stop", not_learning_after=0.5), runs_root=tmp_path, quiet=True,
                     log=lambda *_: None)
    assert r["status"] == "finished" and r["steps"] == 20 and r["not_learning"]["stopped"] is True
    assert r["stopped_early"].startswith("not learning") and "accuracy" in r["test"]
    assert max(train_losses(r["run_dir"])) == 20  # no step after the stop


def test_a_learning_classifier_is_not_flagged(tmp_path: Path) -> None:
    lines: list[str] = []
    r = engine.train(recipe(0.05, not_learning_after=0.5, max_steps=60), runs_root=tmp_path, quiet=True,
                     log=lines.append)
    losses = train_losses(r["run_dir"])
    assert all(losses[s] < 0.99 * math.log(10) for s in (30, 40, 50, 60))  # learned: below the chance level
    assert r["not_learning"] is None and not lines and r["steps"] == 60


def test_an_eval_hook_ends_the_run_with_its_reason(tmp_path: Path) -> None:
    seen: list[int] = []

    def hook(step: int, val: dict) -> str | None:
        seen.append(step)
        assert set(val) >= {"loss", "accuracy"}
        return "pruned" if step == 20 else None

    r = engine.train(recipe(0.01), runs_root=tmp_path, quiet=True, log=lambda *_: None, on_eval=hook)
    assert seen == [10, 20] and r["steps"] == 20 and r["stopped_early"] == "pruned" and r["status"] == "finished"


def test_regression_has_no_chance_level(tmp_path: Path) -> None:
    raw = {"name": "reg", "data": {"name": "synthetic-memory", "length": 16, "n_train": 64, "n_test": 16},
           "model": {"d_model": 4, "n_layers": 1, "ssm": {"d_state": 4}},
           "train": {"max_steps": 4, "batch_size": 16, "eval_every": 2, "lr": 1e-9, "threads": 1, "loggers": []}}
    r = engine.train(validate_recipe(raw), runs_root=tmp_path, quiet=True, log=lambda *_: None)
    assert r["not_learning"] is None and r["n_classes"] is None
