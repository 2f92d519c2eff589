"""Every random number drawn outside the training stream comes from its own seeded generator (issue 28, case 1):
a TDI run, a zero-real run (dt0 estimated from the data) and a plain run with dropout are bit-identical whether
their caches (the TDI artifact, the prepared data) are computed or loaded, and after a SIGKILL at any point before
the first checkpoint (then the resume starts the run over, now with its caches present)."""

from __future__ import annotations

import copy
import signal
from pathlib import Path

import pytest
import torch

from killpoint import TINY, assert_same_run, cli_run, run, run_dir, write_recipe

KILLED = -signal.SIGKILL


def recipe_of(kind: str, folder: Path) -> dict:
    """The tiny recipe (dropout 0.1) with TDI or zero real part; the TDI artifact inside the test folder."""
    r = copy.deepcopy(TINY)
    if kind == "tdi":
        r["init"] = {"name": "tdi", "samples": 50, "tdi": {"steps": 20}, "artifact": str(folder / "tdi" / "a.pt")}
    elif kind == "zero-real":
        r["init"] = {"zero_real_fraction": 0.5, "dt0": "auto", "samples": 50}
    return r


def train_here(recipe: Path, runs_dir: Path, *more: str) -> Path:
    threads = torch.get_num_threads()
    try:
        code, text = cli_run("train", str(recipe), "--runs-dir", str(runs_dir), "-q", *more)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, text
    return run_dir(runs_dir)


@pytest.fixture
def allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))  # the TDI artifact's folder is an allowed root
    return tmp_path


def test_a_tdi_run_with_dropout_is_the_same_with_its_artifact_computed_or_loaded(allowed: Path) -> None:
    """Before: the TDI fit's DataLoader drew its base seed from the global RNG only on a cache miss, so every
    dropout mask after it moved (test loss 2.37935... computed vs 2.37930... loaded)."""
    recipe = write_recipe(allowed, recipe_of("tdi", allowed))
    computed = train_here(recipe, allowed / "a")
    assert (allowed / "tdi" / "a.pt").is_file()
    loaded = train_here(recipe, allowed / "b")
    assert_same_run(computed, loaded)


def test_setup_work_leaves_the_training_stream_where_it_was(allowed: Path) -> None:
    """The engine's guard (`rng_untouched`): draws from the global RNG inside data preparation or an initializer
    do not reach the training stream."""
    from ssmbench.train.engine import rng_untouched

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with rng_untouched():
        torch.rand(5)
    assert torch.equal(torch.rand(3), expected)


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Uninterrupted runs of the three recipes, each from a fresh folder (caches computed)."""
    out = {}
    for kind in ("tdi", "zero-real", "dropout"):
        folder = tmp_path_factory.mktemp(kind)
        mp = pytest.MonkeyPatch()
        mp.setenv("SSMBENCH_DATA_ROOT", str(folder))
        try:
            out[kind] = train_here(write_recipe(folder, recipe_of(kind, folder)), folder / "runs")
        finally:
            mp.undo()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind,point", [("tdi", "init:1"), ("tdi", "step:1"), ("zero-real", "init:1"),
                                        ("zero-real", "data:1"), ("dropout", "data:1"), ("dropout", "step:1")])
def test_kill_before_the_first_checkpoint_resumes_bit_identical(references, tmp_path, monkeypatch, kind, point):
    """SIGKILL after the data is prepared (`data:1`), after the initializer's fit (`init:1`: the TDI artifact is
    written, init.pt not yet) or inside the first step (`step:1`, before the first last.pt); the resume starts
    over with the caches present and must end as the uninterrupted run did."""
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    recipe = write_recipe(tmp_path, recipe_of(kind, tmp_path))
    proc = run(point, "train", str(recipe), "--runs-dir", str(tmp_path / "runs"), "-q", cwd=tmp_path)
    assert proc.returncode == KILLED, f"{point} did not kill the run: {proc.stderr}"
    rd = run_dir(tmp_path / "runs")
    assert not (rd / "checkpoints" / "last.pt").exists()
    proc = run("none", "train", "--resume", str(rd), "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_same_run(references[kind], rd)
