"""Crash-safe resume: real `ssmbench train` processes killed with SIGKILL at chosen points, then resumed with
`ssmbench train --resume RUN_DIR`, end bit-identical to an uninterrupted run (metrics without wall-clock
fields, results.json, and the tensors of best.pt / last.pt / prev.pt). Kill points: tests/killpoint.py."""

from __future__ import annotations

import signal

import pytest
import torch

from killpoint import assert_same_run, cli_run, run, run_dir, write_recipe

KILLED = -signal.SIGKILL


def in_process(*args: str) -> tuple[int | str, str]:
    """`ssmbench ARGS` in the test process, restoring the torch thread count the recipe changes."""
    threads = torch.get_num_threads()
    try:
        return cli_run(*args)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run of the tiny recipe (in this process, on one torch thread like the subprocesses, so
    the comparison also holds across processes)."""
    folder = tmp_path_factory.mktemp("reference")
    code, text = in_process("train", str(write_recipe(folder)), "--runs-dir", str(folder / "runs"), "-q")
    assert code == 0, text
    return run_dir(folder / "runs")


def train_with_kills(folder, points: list[str]):
    """Start the tiny recipe killed at points[0], resume it killed at points[1], ..., then resume to the end
    (that last, uninterrupted part in this process)."""
    recipe = write_recipe(folder)
    proc = run(points[0], "train", str(recipe), "--runs-dir", str(folder / "runs"), "-q", cwd=folder)
    assert proc.returncode == KILLED, f"{points[0]} did not kill the run: {proc.stderr}"
    rd = run_dir(folder / "runs")
    for point in points[1:]:
        proc = run(point, "train", "--resume", str(rd), "-q", cwd=folder)
        assert proc.returncode == KILLED, f"{point} did not kill the resumed run: {proc.stderr}"
    code, text = in_process("train", "--resume", str(rd), "-q")
    assert code == 0, text
    return rd, text


def test_four_kills_in_a_row_resume_bit_identical(reference, tmp_path):
    """Kill during data preparation (only recipe.yaml is written), then the resumed process mid-step (step 5),
    the next one between last.pt -> prev.pt and the new last.pt (step 6), then the next one mid-evaluation
    (step 8, after its train metrics line): the finished run equals the reference."""
    rd, log = train_with_kills(tmp_path, ["data:1", "step:5", "rotated:1", "eval:1"])
    assert_same_run(reference, rd)
    assert not list((rd / "checkpoints").glob(".*.tmp"))  # the temp file of the killed write was removed


SLOW_POINTS = [
    "data:1",               # data prepared, nothing but recipe.yaml written
    "init:1",               # inside the initializer (the TDI fit of a tdi recipe): no env.json, no init.pt
    "step:1",               # before any checkpoint after init.pt: the resume starts over
    "step:7",               # between two checkpoints
    "torn:init.pt:1",       # while writing the run record: no checkpoint at all
    "torn:last.pt:2",       # step 4: metric lines and best.pt written, last.pt torn
    "torn:best.pt:1",       # step 4: best.pt torn
    "rotated:3",            # step 6: prev.pt rotated, new last.pt not yet in place
    "eval:2",               # mid-validation at step 8
    "eval:4",               # mid-test, after training finished
    "append:3",             # a torn metrics line (train line of step 8)
    "append:7",             # a torn test metrics line
    "torn:results.json:1",  # the test line written, results.json torn
]


@pytest.mark.slow
@pytest.mark.parametrize("point", SLOW_POINTS)
def test_kill_point_resume_bit_identical(reference, tmp_path, point):
    rd, _ = train_with_kills(tmp_path, [point])
    assert_same_run(reference, rd)


@pytest.mark.slow
def test_kill_during_resume_of_a_resume(reference, tmp_path):
    """Five kills, each in the process resuming the previous one."""
    rd, _ = train_with_kills(tmp_path, ["step:3", "torn:last.pt:1", "append:1", "step:2", "torn:best.pt:1"])
    assert_same_run(reference, rd)
