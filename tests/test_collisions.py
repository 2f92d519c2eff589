"""No collisions: runs started in the same second get their own directories, and one run directory is never
trained in by two processes at once."""

from __future__ import annotations

import threading

import pytest

from killpoint import cli_run, one_thread, tiny, write_recipe  # noqa: F401 (fixture)
from ssmbench import runs
from ssmbench.errors import SSMBenchError
from ssmbench.train import engine


@pytest.fixture
def frozen_clock(monkeypatch):
    """Every run directory gets the same timestamp, as for runs started in the same second."""
    monkeypatch.setattr(runs.time, "strftime", lambda fmt, *a: "20250101-000000")


def test_same_second_same_name_gives_distinct_dirs(tmp_path, frozen_clock):
    dirs = [runs.create_run_dir(tmp_path, "r") for _ in range(20)]
    assert len(set(dirs)) == 20 and all(d.name.startswith("r-20250101-000000-") for d in dirs)


def test_a_random_suffix_collision_is_retried(tmp_path, frozen_clock, monkeypatch):
    suffixes = iter(["aaaa0000", "aaaa0000", "aaaa0000", "bbbb1111"])
    monkeypatch.setattr(runs.secrets, "token_hex", lambda n: next(suffixes))
    first, second = runs.create_run_dir(tmp_path, "r"), runs.create_run_dir(tmp_path, "r")
    assert first.name.endswith("aaaa0000") and second.name.endswith("bbbb1111")


def test_concurrent_creators_never_share_a_dir(tmp_path, frozen_clock, monkeypatch):
    """Threads racing with a tiny suffix space (4 values for 4 runs): exclusive mkdir still separates them."""
    import secrets as real_secrets

    monkeypatch.setattr(runs.secrets, "token_hex", lambda n: str(real_secrets.randbelow(4)))
    made: list = []
    barrier = threading.Barrier(4)

    def create():
        barrier.wait()
        made.append(runs.create_run_dir(tmp_path, "r"))

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 4 and all((d / runs.CHECKPOINTS).is_dir() for d in made)


@pytest.mark.usefixtures("one_thread")
def test_two_trainings_in_the_same_second_keep_separate_records(tmp_path, frozen_clock):
    recipe = tiny(max_steps=2, eval_every=2)
    a = engine.train(recipe, runs_root=tmp_path, quiet=True, log=lambda *_: None)
    b = engine.train(recipe, runs_root=tmp_path, quiet=True, log=lambda *_: None)
    assert a["run_dir"] != b["run_dir"]
    for results in (a, b):
        assert runs.read_json(f"{results['run_dir']}/{runs.RESULTS}") == results
        assert len(runs.read_jsonl(f"{results['run_dir']}/{runs.METRICS}")) == 3  # train, val, test


def test_a_run_in_use_cannot_be_resumed_twice(tmp_path):
    rd = runs.create_run_dir(tmp_path, "r")
    write_recipe(rd).rename(rd / runs.RECIPE)
    with runs.locked(rd):  # another process training in it
        code, text = cli_run("train", "--resume", str(rd))
        assert code == 2 and "another ssmbench process is training in this run directory" in text
        with pytest.raises(SSMBenchError):
            with runs.locked(rd):
                pass
    with runs.locked(rd):  # released
        pass
