"""`sweep` and `report` share one definition of a finished, valid run (ssmbench/finished.py): for every damaged or
impossible run record, the sweep does not count the run as done (it trains it again, or resumes it to rewrite
results.json) exactly when the report leaves it out of the tables; impossible test values (accuracy outside
[0, 1], NaN, a negative loss) and a folder without recipe.yaml are never tabulated (issue 28, cases 3, 5, 6)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ssmbench import runs
from ssmbench.report.records import read_runs
from ssmbench.sweep import RunSpec, spec_state

from test_hostile_runs import DAMAGED, SPECIAL, special
from test_report import write_run


def bomb(levels: int = 9, width: int = 10) -> str:
    """A "billion laughs" YAML value: `width ** levels` leaves in a few hundred bytes (anchors and aliases)."""
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines)


RECIPE_BOMB = f"name: x\nseed: 1\ntags: {{variant: s4d, run_key: k}}\ndata: {{name: smnist}}\nmodel:\n  " + \
    bomb().replace("\n", "\n  ") + "\n"

# name -> (file, content) written over a good finished run, beyond test_hostile_runs.DAMAGED
IMPOSSIBLE = {
    "accuracy-5": (runs.RESULTS, b'{"status": "finished", "test": {"loss": 1.0, "accuracy": 5.0, "n": 10}}'),
    "accuracy-minus-1": (runs.RESULTS, b'{"status": "finished", "test": {"loss": 1.0, "accuracy": -1, "n": 10}}'),
    "accuracy-nan": (runs.RESULTS, b'{"status": "finished", "test": {"loss": 1.0, "accuracy": NaN, "n": 10}}'),
    "loss-inf": (runs.RESULTS, b'{"status": "finished", "test": {"loss": Infinity, "n": 10}}'),
    "loss-negative": (runs.RESULTS, b'{"status": "finished", "test": {"loss": -1.0, "n": 10}}'),
    "name-a-number": (runs.RESULTS, b'{"status": "finished", "name": 5, "test": {"loss": 1.0}}'),
    "no-dataset": (runs.RECIPE, b"name: x\nseed: 1\ntags: {variant: s4d, run_key: k}\n"),
    "yaml-bomb": (runs.RECIPE, RECIPE_BOMB.encode()),
    "env-bad-json": (runs.ENV, b'{"data": '),
}
MORE_SPECIAL = ["metrics-fifo", "metrics-folder", "env-fifo", "env-folder", "no-recipe"]


def damage(d: Path, kind: str) -> None:
    if kind in SPECIAL:
        special(d, kind)
    elif kind in ("metrics-fifo", "env-fifo"):
        path = d / (runs.METRICS if kind == "metrics-fifo" else runs.ENV)
        path.unlink(missing_ok=True)
        os.mkfifo(path)
    elif kind in ("metrics-folder", "env-folder"):
        path = d / (runs.METRICS if kind == "metrics-folder" else runs.ENV)
        path.unlink(missing_ok=True)
        path.mkdir()
    elif kind == "no-recipe":
        (d / runs.RECIPE).unlink()
    else:
        file, content = {**DAMAGED, **IMPOSSIBLE}[kind]
        (d / file).write_bytes(content)


CASES = [*DAMAGED, *IMPOSSIBLE, *SPECIAL, *MORE_SPECIAL]


def spec_of(root: Path) -> RunSpec:
    return RunSpec(recipe="unused.yaml", overrides=(), tags={"variant": "s4d", "run_key": "k"}, name="x", seed=1,
                   train_fraction=1.0, runs_dir=str(root), key="k")


def verdicts(root: Path) -> tuple[str, bool, list[str]]:
    """(the sweep's state of the grid point, whether the report tabulates a finished run, the report's warnings)."""
    warnings: list[str] = []
    finished = [r for r in read_runs([root], warn=warnings.append) if r.finished]
    return spec_state(spec_of(root))[0], bool(finished), warnings


def test_a_sound_run_is_finished_for_both(tmp_path: Path) -> None:
    write_run(tmp_path, "x", "s4d", "smnist", 1, acc=0.5, tags={"run_key": "k"})
    assert verdicts(tmp_path) == ("finished", True, [])


@pytest.mark.parametrize("kind", CASES)
def test_sweep_and_report_agree_and_a_damaged_run_is_trained_again(tmp_path: Path, kind: str) -> None:
    d = write_run(tmp_path, "x", "s4d", "smnist", 1, acc=0.5, tags={"run_key": "k"})
    damage(d, kind)
    state, tabulated, warnings = verdicts(tmp_path)
    assert not tabulated
    # not a permanent hole: the next sweep resumes the run (only results.json at fault: it is evaluated again and
    # rewritten) or trains the grid point again in a new directory
    assert state in ("resume", "new"), state
    skipped = [w for w in warnings if w.endswith("run skipped")]
    assert len(skipped) == 1 and "\n" not in skipped[0] and str(d) in skipped[0]


def test_a_recipe_yaml_bomb_is_refused_at_once(tmp_path: Path) -> None:
    """A recipe.yaml of a few hundred bytes that expands to 10^9 values: refused by the YAML bound (before, the
    report read it as a finished run and then hung encoding it)."""
    write_run(tmp_path, "x", "s4d", "smnist", 1, acc=0.5, tags={"run_key": "k"})
    (tmp_path / "x" / runs.RECIPE).write_text(RECIPE_BOMB)
    _, tabulated, warnings = verdicts(tmp_path)
    assert not tabulated
    assert any("expands to over 100,000 values" in w for w in warnings), warnings


def test_a_folder_without_recipe_is_not_counted_under_a_question_mark(tmp_path: Path) -> None:
    from ssmbench.report import report

    write_run(tmp_path, "a", "s4d", "smnist", 0, acc=0.5)
    (write_run(tmp_path, "b", "s4d", "other", 0, acc=0.7) / runs.RECIPE).unlink()
    records = read_runs([tmp_path], warn=lambda _: None)
    assert [r.task for r in records] == ["smnist"]
    text, _ = report([tmp_path])
    assert "?" not in text.split("\n\n")[0]
