"""End to end on the embedded MNIST subset: the loss goes down, the run record is complete, resume == uninterrupted."""

import json

import pytest
import torch

from ssmbench import runs
from ssmbench.recipe import load_recipe
from ssmbench.train import checkpoint
from ssmbench.train.engine import EpochBatches, train

TINY = ["model.d_model=16", "model.n_layers=2", "model.ssm.d_state=8", "model.dropout=0.1", "train.batch_size=32",
        "data.val_fraction=0.02", "train.max_eval_batches=2", "train.warmup_steps=2", "train.lr=0.01"]


def tiny(repo_root, *extra):
    return load_recipe(repo_root / "recipes" / "quickstart.yaml", TINY + list(extra))


def quiet(*_):
    pass


def strip_time(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_training_lowers_loss_and_writes_record(repo_root, tmp_path):
    r = tiny(repo_root, "train.max_steps=80", "train.eval_every=40", "train.lr=0.02")
    res = train(r, runs_root=tmp_path, quiet=True, log=quiet)
    run = tmp_path / next(p.name for p in tmp_path.iterdir())
    for f in ("recipe.yaml", "env.json", "metrics.jsonl", "results.json"):
        assert (run / f).is_file(), f
    for f in ("init.pt", "best.pt", "last.pt"):
        assert (run / "checkpoints" / f).is_file(), f
    rows = runs.read_jsonl(run / "metrics.jsonl")
    train_losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert train_losses[-1] < train_losses[0] - 0.2, train_losses
    assert res["status"] == "finished" and res["steps"] == 80 and res["test"]["accuracy"] > 0.2
    assert json.loads((run / "results.json").read_text()) == res
    env = json.loads((run / "env.json").read_text())
    assert env["data"]["source"] == "embedded-subset" and env["torch"] == torch.__version__
    assert load_recipe(run / "recipe.yaml") == r


def test_resume_after_interrupt_equals_uninterrupted(repo_root, tmp_path):
    r = tiny(repo_root, "train.max_steps=12", "train.eval_every=4")
    a = train(r, runs_root=tmp_path / "a", quiet=True, log=quiet)

    class Interrupt(Exception):
        pass

    def stop_at_6(trainer):
        if trainer.progress.step == 6:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(r, runs_root=tmp_path / "b", quiet=True, log=quiet, on_step=stop_at_6)
    run_b = next((tmp_path / "b").iterdir())
    (run_b / "results.json").unlink()  # written as "failed" by the interrupted process
    b = train(resume=run_b, quiet=True, log=quiet)

    assert strip_time(runs.read_jsonl(run_b / "metrics.jsonl")) == strip_time(runs.read_jsonl(a["run_dir"] + "/metrics.jsonl"))
    wa = checkpoint.load(f"{a['run_dir']}/checkpoints/last.pt")["model"]
    wb = checkpoint.load(run_b / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["test"] == b["test"]


def test_epoch_batches_cover_each_item_once_and_resume_mid_epoch():
    full = list(EpochBatches(10, 3, seed=1, epoch=2))
    assert sorted(i for b in full for i in b) == list(range(10))
    assert list(EpochBatches(10, 3, seed=1, epoch=2, start=2)) == full[2:]
    assert full != list(EpochBatches(10, 3, seed=1, epoch=3))


def test_results_record_how_much_of_each_split_was_evaluated(repo_root, tmp_path):
    """Validation capped by train.max_eval_batches; the test split whole unless train.max_test_batches opts out."""
    r = tiny(repo_root, "train.max_steps=2", "train.eval_batch_size=200", "data.val_fraction=0.05")
    res = train(r, runs_root=tmp_path / "whole", quiet=True, log=quiet)
    run = next((tmp_path / "whole").iterdir())
    sizes = json.loads((run / "env.json").read_text())["data"]["sizes"]
    assert sizes["test"] == 2000 and sizes["val"] > 400
    assert res["test"]["n"] == 2000
    assert res["evaluation"] == {"test": {"n": 2000, "size": 2000, "whole_split": True, "max_batches": None},
                                 "val": {"n": 400, "size": sizes["val"], "whole_split": False, "max_batches": 2}}
    assert [row["n"] for row in runs.read_jsonl(run / "metrics.jsonl") if row["split"] != "train"] == [400, 2000]
    res = train(load_recipe(run / "recipe.yaml", ["train.max_test_batches=3"]), runs_root=tmp_path / "part",
                quiet=True, log=quiet)
    assert res["evaluation"]["test"] == {"n": 600, "size": 2000, "whole_split": False, "max_batches": 3}
