"""Data-parallel training (train/distributed.py): global-batch sharding, the loss weights that make DDP's gradient
average equal the single-process gradient, and 2-process gloo runs on the CPU against 1 process.

Tolerance of DDP vs 1 process: the same global batch and seed give the same losses, accuracies and weights up to
float32 reduction order (each rank averages its shard, then gloo sums the ranks' gradients), measured at ~1e-6;
the tests allow 1e-5. BatchNorm is per-rank on the CPU (torch's SyncBatchNorm needs a GPU), so the comparison uses
LayerNorm.
"""

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssmbench import runs
from ssmbench.recipe import load_recipe
from ssmbench.train import checkpoint, distributed
from ssmbench.train.engine import EpochBatches, train

# 31 training samples in global batches of 15: shards of 8 + 7, and a last batch of 1 (rank 1 gets a filler).
TINY = ["model.d_model=8", "model.n_layers=2", "model.ssm.d_state=8", "model.norm=layer", "model.dropout=0.0",
        "train.batch_size=15", "data.val_fraction=0.02", "data.train_fraction=0.0031632653", "train.epochs=2",
        "train.max_eval_batches=2", "train.max_test_batches=2", "train.warmup_steps=0", "train.device=cpu",
        "train.precision=fp32", "train.checkpoint_every=1"]
TOL = 1e-5
REPO = Path(__file__).resolve().parents[1]


def tiny():
    return load_recipe(REPO / "recipes" / "quickstart.yaml", TINY)


def quiet(*_):
    pass


# ---- sharding and loss weights (no processes) ------------------------------------------------------------


def test_shard_bounds_partition_contiguously_and_evenly():
    for n in range(0, 40):
        for world in range(1, 6):
            bounds = [distributed.shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_epoch_batches_shards_are_the_single_process_batches():
    n, batch, world = 31, 15, 2
    single = list(EpochBatches(n, batch, seed=3, epoch=1))
    ranks = [EpochBatches(n, batch, seed=3, epoch=1, rank=r, world=world) for r in range(world)]
    per_rank = [list(s) for s in ranks]
    assert all(len(p) == len(single) for p in per_rank)  # every rank takes part in every step
    for b, full in enumerate(single):
        shares = [s.share(b) for s in ranks]
        assert all(total == len(full) for _, total in shares)
        counted = [per_rank[r][b][:mine] for r, (mine, _) in enumerate(shares)]
        assert sum(counted, []) == full
    assert per_rank[1][-1] == per_rank[0][-1] and ranks[1].share(2) == (0, 1)  # the filler of the last batch
    # evaluation: no filler, an empty shard is skipped
    assert [len(list(EpochBatches(n, batch, 0, 0, shuffle=False, rank=r, world=world, filler=False))) for r in range(2)] == [3, 2]


@pytest.mark.parametrize("n,world", [(15, 2), (7, 3), (3, 4)])
def test_rank_loss_weights_make_the_averaged_gradient_the_global_mean(n, world):
    """(1/W) sum_r w_r grad mean_r(loss), w_r = W n_r / n (DDP's average) == grad mean(loss) over the batch."""
    torch.manual_seed(0)
    x, y = torch.randn(n, 5, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)

    def grad(loss):
        return torch.autograd.grad(loss, w)[0]

    full = grad(((x @ w - y) ** 2).mean())
    averaged = torch.zeros_like(full)
    for r in range(world):
        idx = distributed.shard(list(range(n)), r, world, filler=True)
        start, stop = distributed.shard_bounds(n, r, world)
        weight = world * (stop - start) / n
        averaged += grad(((x[idx] @ w - y[idx]) ** 2).mean() * weight) / world
    torch.testing.assert_close(averaged, full, rtol=1e-12, atol=1e-14)


def test_batchnorm_policy_outside_a_process_group():
    bn = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    assert distributed.batchnorm_policy(bn, torch.device("cpu")) == "single-process"
    assert distributed.prepare(bn, torch.device("cpu")) is bn  # nothing converted without DDP
    assert distributed.batchnorm_policy(torch.nn.LayerNorm(3), torch.device("cpu")) == "none"


# ---- 2 processes (gloo) vs 1 process ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_dirs(root):
    return sorted(p for p in root.iterdir() if p.is_dir())


def ssmbench(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ssmbench", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    train(tiny(), runs_root=root, quiet=True, log=quiet)
    return run_dirs(root)[0]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    sets = [a for s in TINY for a in ("--set", s)]
    out = ssmbench("train", str(REPO / "recipes" / "quickstart.yaml"), *sets, "--runs-dir", str(root), "-q",
                   "--nproc", "2", cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return root, out


def assert_same_run(a, b, tol):
    rows_a, rows_b = runs.read_jsonl(a / runs.METRICS), runs.read_jsonl(b / runs.METRICS)
    assert [(r["step"], r["split"]) for r in rows_a] == [(r["step"], r["split"]) for r in rows_b]
    for ra, rb in zip(rows_a, rows_b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=tol), (ra, rb)
        assert ra.get("accuracy") == rb.get("accuracy"), (ra, rb)
    wa, wb = checkpoint.load(a / "checkpoints" / "last.pt")["model"], checkpoint.load(b / "checkpoints" / "last.pt")["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=tol, atol=tol, msg=k)
    res_a, res_b = runs.read_json(a / runs.RESULTS), runs.read_json(b / runs.RESULTS)
    assert res_a["status"] == res_b["status"] == "finished" and res_a["steps"] == res_b["steps"] == 6
    assert res_a["samples"] == res_b["samples"] == 62
    assert res_a["test"]["loss"] == pytest.approx(res_b["test"]["loss"], rel=tol)


def test_ddp_two_processes_equal_one_process(ddp, single):
    root, out = ddp
    [run] = run_dirs(root)  # rank 1 wrote nothing of its own
    assert_same_run(run, single, TOL)
    env = json.loads((run / runs.ENV).read_text())
    assert env["distributed"] == {"world_size": 2, "backend": "gloo", "global_batch": 15, "per_rank_batch": [8, 7],
                                  "batchnorm": "none"}
    assert out.stderr.count("test accuracy") == 1  # one summary line: only rank 0 prints


def kill_at_step_4(trainer):
    if trainer.progress.step == 4:  # last.pt holds step 3 (checkpoint_every=1); step 4 is lost
        os.kill(os.getpid(), signal.SIGKILL)


def ddp_worker(rank, world, port, recipe, root):
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    train(recipe, runs_root=root, quiet=True, log=quiet, on_step=kill_at_step_4)


@pytest.mark.slow
def test_ddp_killed_then_resumed_equals_uninterrupted(tmp_path, ddp):
    ctx, port = multiprocessing.get_context("spawn"), free_port()
    procs = [ctx.Process(target=ddp_worker, args=(r, 2, port, tiny(), tmp_path)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [-signal.SIGKILL] * 2
    [run] = run_dirs(tmp_path)
    assert checkpoint.load(run / "checkpoints" / "last.pt")["progress"]["step"] == 3
    assert not (run / runs.RESULTS).exists()
    out = ssmbench("train", "--resume", str(run), "-q", "--nproc", "2", cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert run_dirs(tmp_path) == [run]
    assert_same_run(run, run_dirs(ddp[0])[0], 1e-6)  # same world size: same reduction order
