"""The smaller inputs of issue 28, case 10: a checkpoint that passes its checksum but does not fit the run falls
back to prev.pt, a truncated metrics.jsonl is reported as lost (not "produced again"), a `.lock` FIFO or a file
named `checkpoints` get accurate messages, terminal escapes in records never reach the terminal, NaN weights do
not crash `report --plots`, a sweep's recipe template is not a format string, and `bench --reference` on a file
that is not Python is an error."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from killpoint import cli_run, run_dir, write_recipe
from ssmbench import runs
from ssmbench.errors import RecipeError, SSMBenchError
from ssmbench.train import checkpoint

from test_report import fake_s4d_state, write_run


def resume(rd: Path) -> tuple[int | str, str]:
    threads = torch.get_num_threads()
    try:
        return cli_run("train", "--resume", str(rd))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The tiny recipe trained to its end (last.pt at step 12, prev.pt at step 10)."""
    folder = tmp_path_factory.mktemp("trained")
    threads = torch.get_num_threads()
    try:
        code, text = cli_run("train", str(write_recipe(folder)), "--runs-dir", str(folder / "runs"), "-q")
    finally:
        torch.set_num_threads(threads)
    assert code == 0, text
    return run_dir(folder / "runs")


@pytest.fixture
def interrupted(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run without results.json, as if killed after its last checkpoint."""
    rd = tmp_path / trained.name
    shutil.copytree(trained, rd)
    (rd / runs.RESULTS).unlink()
    return rd


def rewrite_last(rd: Path, change) -> None:
    state = checkpoint.load(rd / "checkpoints" / "last.pt")
    change(state)
    checkpoint.save(rd / "checkpoints" / "last.pt", state)  # a valid checksum over the wrong content


@pytest.mark.parametrize("damage", ["missing-key", "other-shape", "progress-step-zero", "progress-a-string"])
def test_a_checksummed_but_wrong_last_pt_falls_back_to_prev_pt(interrupted: Path, damage: str) -> None:
    def change(state):
        if damage == "missing-key":
            del state["optimizer"]
        elif damage == "other-shape":
            key = next(k for k in state["model"] if k.endswith("A_im"))
            state["model"][key] = torch.zeros(3, 3)
        elif damage == "progress-step-zero":  # before: ZeroDivisionError in the progress row (eta / step)
            state["progress"].update(step=0, train_seen=8, seconds=1.0)
        else:
            state["progress"]["step"] = "12"

    rewrite_last(interrupted, change)
    code, text = resume(interrupted)
    assert code == 0 and "Traceback" not in text, text
    assert "last.pt: passes its checksum but does not fit this run" in text
    assert "resuming" in text and "from prev.pt at step 10" in text
    assert runs.read_json(interrupted / runs.RESULTS)["status"] == "finished"


def test_a_truncated_metrics_file_is_reported_as_lost(interrupted: Path) -> None:
    metrics = interrupted / runs.METRICS
    lines = metrics.read_bytes().splitlines(keepends=True)
    metrics.write_bytes(b"".join(lines[:2]) + lines[2][:10])  # two lines and a torn third
    code, text = resume(interrupted)
    assert code == 0, text
    assert "cannot be produced again (lost)" in text and "they are produced again" not in text
    rows = runs.read_jsonl(metrics)
    assert len(rows) == len(metrics.read_text().splitlines())  # no torn or duplicate line left


def test_a_lock_fifo_and_a_checkpoints_file_are_named_as_such(interrupted: Path) -> None:
    (interrupted / runs.LOCK).unlink(missing_ok=True)
    os.mkfifo(interrupted / runs.LOCK)
    code, text = resume(interrupted)
    assert code == 2 and f"{interrupted / runs.LOCK}: not the lock file ssmbench writes" in text
    (interrupted / runs.LOCK).unlink()
    shutil.rmtree(interrupted / "checkpoints")
    (interrupted / "checkpoints").write_text("x")
    code, text = resume(interrupted)
    assert code == 2 and f"{interrupted / 'checkpoints'}: a file, not the checkpoints folder" in text, text


def test_a_last_pt_folder_is_named_before_any_work(interrupted: Path) -> None:
    """Before: resumed from prev.pt, trained, then failed writing last.pt with "Free disk space"."""
    (interrupted / "checkpoints" / "last.pt").unlink()
    (interrupted / "checkpoints" / "last.pt").mkdir()
    code, text = resume(interrupted)
    assert code == 2 and "step 11" not in text, text
    assert f"{interrupted / 'checkpoints' / 'last.pt'}: not a checkpoint file (a folder" in text


def test_terminal_escapes_in_records_never_reach_the_output(tmp_path: Path, capsys) -> None:
    from ssmbench.report import report

    write_run(tmp_path, "a\x1b]0;pwned\x07", "s4d\x1b[2J", "smnist", 0, acc=0.5)
    write_run(tmp_path, "b", "s4d", "smnist", 1, status="failed")
    (tmp_path / "b" / runs.RESULTS).write_text('{"status": "failed", "error": "boom\\u001b[31m\\u009b"}')
    text, _ = report([tmp_path])
    assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text
    assert "s4d\\x1b[2J" in text  # shown, harmlessly


def test_nan_weights_do_not_crash_report_plots(tmp_path: Path) -> None:
    from ssmbench.report.plots import write_plots
    from ssmbench.report.records import read_runs

    d = write_run(tmp_path, "r", "s4d", "smnist", 0, acc=0.5)
    rng = np.random.default_rng(0)
    init, end = fake_s4d_state(rng), fake_s4d_state(rng)
    end["blocks.0.layer.A_im"][0, 0] = float("nan")
    checkpoint.save(d / "checkpoints" / "init.pt", {"model": init})
    checkpoint.save(d / "checkpoints" / "best.pt", {"model": end})
    warnings: list[str] = []
    records = read_runs([tmp_path])
    from ssmbench.report import records as records_module

    assert records_module.parameters_at_init_and_end(records[0], warn=warnings.append) is None
    assert "non-finite SSM parameters (best.pt Im(A))" in warnings[0]
    write_plots(records, tmp_path / "plots")


def test_a_sweep_recipe_template_is_not_a_format_string(tmp_path: Path) -> None:
    from ssmbench.sweep import expand

    write_recipe(tmp_path)
    (tmp_path / "s.yaml").write_text("name: s\nrecipe: '{variant.__class__}tiny.yaml'\ngrid: {variants: [a]}\n")
    with pytest.raises(RecipeError, match=r"unknown name \{variant.__class__\} in braces"):
        expand(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text("name: s\nrecipe: '{variant}.yaml'\ngrid: {variants: [tiny]}\n")
    assert [Path(s.recipe).name for s in expand(tmp_path / "s.yaml")] == ["tiny.yaml"]


def test_bench_reference_that_is_not_python_is_an_error() -> None:
    from ssmbench.bench import load_reference

    with pytest.raises(SSMBenchError, match=r"--reference /etc/passwd: not an importable Python module \(SyntaxError"):
        load_reference("/etc/passwd")
