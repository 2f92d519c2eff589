"""GPU only (skipped without CUDA): a training step queues its work without a host-device synchronization, and
`train.cuda_graphs` replays the same step as the eager engine (same parameters, the short last batch eager, a
non-finite batch still dropped); the prefetching loader hands out the loader's batches in order."""

from __future__ import annotations

import copy

import pytest
import torch

from killpoint import TINY, tiny
from ssmbench.recipe import validate_recipe
from ssmbench.train import engine
from ssmbench.train.prefetch import prefetch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
QUIET = {"log": lambda *_: None, "is_writer": False}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_train_step_does_not_synchronize(tmp_path, precision, cuda_graphs):
    trainer = engine.Trainer(tiny(device="cuda", precision=precision, grad_clip=1.0, cuda_graphs=cuda_graphs),
                             tmp_path, **QUIET)
    sampler = engine.EpochBatches(len(trainer.data.train), 8, 0, 0)
    batches = iter(engine.loader(trainer.data.train, sampler, 0, trainer.device))
    before = 5 if cuda_graphs else 1  # warm-up: lazy CUDA initialization, optimizer state (and 3 warm-up steps + capture)
    for _ in range(before):
        trainer.train_step(*next(batches))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            trainer.train_step(*next(batches))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer.collect()
    p = trainer.progress
    assert p.step == before + 3 and p.train_seen == 8 * (before + 3) and p.skipped_steps == 0


def graph_trainer(folder, cuda_graphs: bool, **train) -> engine.Trainer:
    """The tiny recipe on CUDA without dropout (eager and replayed steps then compute the same function)."""
    raw = copy.deepcopy(TINY)
    del raw["train"]["threads"]
    raw["model"]["dropout"] = 0.0
    raw["train"].update(device="cuda", grad_clip=1.0, cuda_graphs=cuda_graphs, **train)
    return engine.Trainer(validate_recipe(raw), folder, **QUIET)


def epoch_batches(trainer: engine.Trainer, n: int = 8 * 6 + 3) -> list:
    """An epoch of the first n training samples in batches of 8: six full ones and a short last one of 3."""
    return list(engine.loader(trainer.data.train, engine.EpochBatches(n, 8, 0, 0), 0, trainer.device))


def recording_paths(trainer: engine.Trainer) -> list[str]:
    paths, run = [], trainer.graph.run
    trainer.graph.run = lambda *a: paths.append(run(*a))
    return paths


@pytest.mark.parametrize("precision, tol", [("fp32", 1e-5), ("bf16", 1e-3)])
def test_graph_steps_give_the_eager_parameters(tmp_path, precision, tol):
    trainers = {}
    for on in (False, True):
        trainer = trainers[on] = graph_trainer(tmp_path / str(on), on, precision=precision)
        paths = recording_paths(trainer) if on else None
        for x, y in epoch_batches(trainer):
            trainer.train_step(x, y)
        trainer.collect()
    assert paths == ["warmup"] * 3 + ["capture", "replay", "replay", "eager"]
    eager, graph = (dict(trainers[on].model.named_parameters()) for on in (False, True))
    for name in eager:
        assert torch.allclose(graph[name], eager[name], rtol=tol, atol=tol), name
    a, b = trainers[False].progress, trainers[True].progress
    assert a.step == b.step == 7 and a.train_seen == b.train_seen == 51 and abs(a.train_correct - b.train_correct) <= 1
    assert b.train_loss_sum == pytest.approx(a.train_loss_sum, rel=tol)
    assert engine.graphs.current_lr(trainers[True].optimizer) == pytest.approx(
        engine.graphs.current_lr(trainers[False].optimizer), rel=1e-6)


def test_a_nonfinite_replayed_batch_is_dropped(tmp_path):
    trainer = graph_trainer(tmp_path, True, on_nonfinite="skip")
    paths, warnings = recording_paths(trainer), []
    trainer.log = warnings.append
    batches = epoch_batches(trainer)
    for x, y in batches[:5]:
        trainer.train_step(x, y)
    before = {n: q.detach().clone() for n, q in trainer.model.named_parameters()}
    statistics = {n: b.clone() for n, b in trainer.model.named_buffers()}  # BatchNorm's running statistics
    x, y = batches[5]
    trainer.train_step(torch.full_like(x, float("nan")), y)  # step 6: loss and gradients NaN
    assert all(torch.equal(q, before[n]) for n, q in trainer.model.named_parameters())
    assert all(torch.equal(b, statistics[n]) for n, b in trainer.model.named_buffers())
    trainer.train_step(*batches[0])
    assert not all(torch.equal(q, before[n]) for n, q in trainer.model.named_parameters())
    trainer.collect()
    assert paths[3:] == ["capture", "replay", "replay", "replay"]
    assert trainer.progress.skipped_steps == 1 and trainer.progress.train_seen == 8 * 6
    assert any("step 6: loss is nan" in w for w in warnings)


def test_prefetch_hands_out_the_loaders_batches_in_order(tmp_path):
    trainer = graph_trainer(tmp_path, False)
    plain = epoch_batches(trainer)
    sampler = engine.EpochBatches(8 * 6 + 3, 8, 0, 0)
    got = list(prefetch(engine.loader(trainer.data.train, sampler, 0, trainer.device), trainer.device))
    assert len(got) == len(plain) == 7
    for (x, y), (gx, gy) in zip(plain, got):
        assert gx.is_cuda and gy.is_cuda and torch.equal(gx.cpu(), x) and torch.equal(gy.cpu(), y)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_training_on_the_second_gpu(tmp_path, cuda_graphs):
    """`train.device: cuda:1` in one process: GPU 1 becomes current (Triton launches and the capture stream go
    there), the steps run and leave finite parameters on GPU 1."""
    torch.cuda.set_device(0)
    trainer = graph_trainer(tmp_path, cuda_graphs, device="cuda:1")
    assert torch.cuda.current_device() == 1
    for x, y in epoch_batches(trainer):
        trainer.train_step(x, y)
    trainer.collect()
    assert trainer.progress.step == 7 and trainer.progress.skipped_steps == 0
    assert all(q.device == torch.device("cuda", 1) and torch.isfinite(q).all() for q in trainer.model.parameters())
