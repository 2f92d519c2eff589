"""The CUDA-only parts of the engine held to account on the CPU (issue 22): mocked `torch.cuda` functions and
CUDA streams/graphs, fake clocks and counted collectives stand in for the GPU; the checks that need one are in
tests/test_gpu_train.py."""

from __future__ import annotations

import contextlib
import math
import gc
import weakref
from types import SimpleNamespace

import pytest
import torch

from killpoint import one_thread, tiny  # noqa: F401 (fixture)
from ssmbench.train import engine, graphs

QUIET = {"quiet": True, "log": lambda *_: None}


@pytest.fixture
def fake_cuda(monkeypatch):
    """CUDA streams and graphs on the CPU: a "capture" records the step without running it, a "replay" runs it."""
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: SimpleNamespace(wait_stream=lambda other: None,
                                                                                   device=device))
    monkeypatch.setattr(torch.cuda, "current_stream", torch.cuda.Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(graphs, "capture", lambda body, stream: SimpleNamespace(replay=body))


# --- item 8: precision auto -------------------------------------------------------------------------------------

@pytest.mark.parametrize("capability, expected", [((7, 5), None), ((7, 0), None), ((8, 0), torch.bfloat16),
                                                  ((9, 0), torch.bfloat16)])
def test_precision_auto_uses_bf16_only_where_it_is_native(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # counts emulation (a T4 says True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda", 0)
    assert engine.resolve_precision("auto", cuda) == expected
    assert engine.native_bf16(cuda) is (expected is not None)
    assert engine.resolve_precision("bf16", cuda) == torch.bfloat16  # asked for by name: emulated, but given
    assert not engine.native_bf16(torch.device("cpu")) and engine.resolve_precision("auto", torch.device("cpu")) is None


# --- item 6: a finished trainer is freed ------------------------------------------------------------------------

@pytest.mark.usefixtures("one_thread", "fake_cuda")
def test_a_finished_trainer_is_freed_without_a_gc_pass(tmp_path, monkeypatch):
    """The graph runner (on the CPU through `fake_cuda`) refers back to the trainer's step; once train() returns,
    the trainer and its model are released by reference counting alone."""
    monkeypatch.setattr(engine.Trainer, "_step_graph",
                        lambda self: graphs.StepGraph(self._update, self.recipe.train.batch_size, self.device))
    seen = {}

    def remember(trainer):
        seen.setdefault("trainer", weakref.ref(trainer))
        seen.setdefault("model", weakref.ref(trainer.model))
        seen.setdefault("runner", weakref.ref(trainer.graph))

    gc.collect()
    gc.disable()
    try:
        results = engine.train(tiny(max_steps=6, eval_every=6, checkpoint_every=None), runs_root=tmp_path,
                               on_step=remember, **QUIET)
        alive = [name for name, ref in seen.items() if ref() is not None]
    finally:
        gc.enable()
    assert results["status"] == "finished" and set(seen) == {"trainer", "model", "runner"}
    assert alive == []


# --- item 10: samples/s counts the device time drained at log points --------------------------------------------

@pytest.mark.usefixtures("one_thread")
def test_throughput_window_includes_the_device_time_drained_at_log_points(tmp_path, monkeypatch):
    """A fake GPU: each step queues 1 s of device work and returns at once (host time 0), reading the tally waits
    for the queued work. The training time is then exactly 1 s per step, evaluation (which this fake makes free)
    adding nothing."""
    clock = {"now": 0.0, "queued": 0.0}
    monkeypatch.setattr(engine, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))
    monkeypatch.setattr(engine, "read_each_step", lambda device: False)  # as on CUDA: read at log points only
    update, read = engine.Trainer._update, engine.DeviceTally.read

    def queue(self, *args):
        update(self, *args)
        clock["queued"] += 1.0

    def drain(self):
        clock["now"] += clock["queued"]
        clock["queued"] = 0.0
        return read(self)

    monkeypatch.setattr(engine.Trainer, "_update", queue)
    monkeypatch.setattr(engine.DeviceTally, "read", drain)
    results = engine.train(tiny(max_steps=10, eval_every=5, log_every=3, checkpoint_every=None), runs_root=tmp_path,
                           **QUIET)
    assert results["steps"] == 10 and results["train_seconds"] == pytest.approx(10.0)
    assert results["samples_per_second"] == pytest.approx(results["samples"] / 10.0)


# --- item 4: train.device cuda:1 in one process -----------------------------------------------------------------

class DeviceSet(Exception):
    pass


def test_trainer_makes_the_recipes_gpu_current_before_building_anything(tmp_path, monkeypatch):
    """Triton launches on the current device: `train.device: cuda:1` must make GPU 1 current (torch.cuda.set_device)
    before the model, the optimizer and the graph runner exist (the fake set_device stops the trainer there)."""
    def set_device(device):
        raise DeviceSet(torch.device(device))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(engine, "build_data", lambda cfg: pytest.fail("data built before the device was set"))
    with pytest.raises(DeviceSet) as e:
        engine.Trainer(tiny(device="cuda:1"), tmp_path, log=lambda *_: None, is_writer=False)
    assert e.value.args[0] == torch.device("cuda", 1)


def test_graph_is_captured_on_a_stream_of_the_training_device(monkeypatch):
    """torch.cuda.graph's default capture stream belongs to whichever device was current when it was first made;
    the runner captures on its own side stream, made on the training device."""
    streams, captured = [], []

    def make_stream(device=None):
        stream = SimpleNamespace(device=device, wait_stream=lambda other: None)
        streams.append(stream)
        return stream

    @contextlib.contextmanager
    def fake_graph(graph, stream=None, **kwargs):
        captured.append(stream)
        yield

    monkeypatch.setattr(torch.cuda, "Stream", make_stream)
    monkeypatch.setattr(torch.cuda, "current_stream", make_stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: SimpleNamespace(replay=lambda: None))
    monkeypatch.setattr(torch.cuda, "graph", fake_graph)
    device = torch.device("cuda", 1)
    runner = graphs.StepGraph(lambda x, y, share: None, 2, device)
    x, y = torch.zeros(2, 3), torch.zeros(2)
    assert [runner.run(x, y, (2, 2)) for _ in range(5)] == ["warmup"] * 3 + ["capture", "replay"]
    assert len(captured) == 1 and captured[0] is runner.side and runner.side.device == device


# --- item 5: a skipped step leaves BatchNorm's statistics as they were ------------------------------------------

@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("read_each_step", [True, False])
def test_a_skipped_step_restores_batchnorm_statistics(tmp_path, monkeypatch, read_each_step):
    """A NaN batch under on_nonfinite: skip drops the update and restores the running statistics (on the device:
    also when the tally is read only at log points, as on CUDA); validation stays finite."""
    monkeypatch.setattr(engine, "read_each_step", lambda device: read_each_step)
    trainer = engine.Trainer(tiny(on_nonfinite="skip"), tmp_path, log=lambda *_: None, is_writer=False)
    norms = [m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms
    batches = list(engine.loader(trainer.data.train, engine.EpochBatches(8 * 4, 8, 0, 0), 0, trainer.device))
    for x, y in batches[:2]:
        trainer.train_step(x, y)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    x, y = batches[2]
    trainer.train_step(torch.full_like(x, float("nan")) if x.is_floating_point() else x, y)
    for m, saved in zip(norms, before):
        for k, v in m.state_dict().items():
            assert torch.equal(v, saved[k]), k
    trainer.train_step(*batches[3])
    trainer.collect()
    assert trainer.progress.skipped_steps == 1
    assert all(torch.isfinite(m.running_mean).all() and torch.isfinite(m.running_var).all() for m in norms)
    val = engine.evaluate(trainer.model, trainer.eval_loader(trainer.data.val), trainer.task, trainer.device, None, 1)
    assert math.isfinite(val["loss"])


# --- item 9: DDP without a synchronization per step -------------------------------------------------------------

@pytest.mark.usefixtures("one_thread")
def test_ddp_asks_for_stop_signals_every_few_steps_not_every_step(tmp_path, monkeypatch):
    """Under DDP (world 2, the collective counted by a stand-in) the stop check is an all-reduce and a host read:
    asked every STOP_CHECK_EVERY steps, and a signal caught at step 3 still stops the run at the next check."""
    checks = []

    def all_reduce_sum(values):
        if len(values) == 1:
            checks.append(values[0])
        return [float(v) for v in values]

    monkeypatch.setattr(engine.distributed, "all_reduce_sum", all_reduce_sum)
    trainer = engine.Trainer(tiny(max_steps=25, eval_every=100, checkpoint_every=None), tmp_path,
                             log=lambda *_: None, is_writer=False)
    trainer.world = 2
    stop = SimpleNamespace(received=None)

    def signal_at_3(tr):
        if tr.progress.step == 3:
            stop.received = "SIGTERM"

    with pytest.raises(engine.Preempted):
        trainer.fit(on_step=signal_at_3, stop=stop)
    assert trainer.progress.step == engine.STOP_CHECK_EVERY == 10
    assert checks == [True]


class FakeDDP:
    def __init__(self, module, device_ids=None, **kwargs):
        self.module, self.kwargs = module, kwargs


@pytest.mark.parametrize("norm, device, broadcast", [("batch", "cpu", True), ("batch", "cuda", False),
                                                     ("layer", "cpu", False)])
def test_ddp_broadcasts_buffers_only_for_per_rank_batchnorm(monkeypatch, norm, device, broadcast):
    """Rank 0's buffers are re-broadcast at every forward only where ranks' buffers differ: per-rank BatchNorm
    statistics on the CPU; SyncBatchNorm (CUDA) gives every rank the same statistics."""
    monkeypatch.setattr(engine.distributed, "is_active", lambda: True)
    monkeypatch.setattr(engine.distributed, "DistributedDataParallel", FakeDDP)
    norm_layer = torch.nn.BatchNorm1d(3) if norm == "batch" else torch.nn.LayerNorm(3)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), norm_layer)
    wrapped = engine.distributed.wrap(model, torch.device(device, 0) if device == "cuda" else torch.device(device))
    assert wrapped.kwargs.get("broadcast_buffers", True) is broadcast


def test_stu_filter_taps_are_not_a_buffer():
    """DDP broadcasts every buffer; the STU's float64 taps (R x L) are a constant cache, rebuilt on a device change."""
    from ssmbench.models.stu import STU

    layer = STU(4, k=4, k_u=2)
    layer(torch.randn(2, 24, 4))
    assert layer.taps is not None and layer.taps.dtype == torch.float64
    assert not any(b.dtype == torch.float64 for b in layer.buffers()) and "taps" not in dict(layer.named_buffers())


# --- item 11: sweep --jobs N spreads its workers over the GPUs --------------------------------------------------

@pytest.mark.parametrize("count, devices, expected", [(4, ["auto", "cpu"], 4), (2, ["cuda"], 2), (1, ["auto"], 0),
                                                      (4, ["cpu", "cuda:1"], 0)])
def test_sweep_workers_take_turns_on_the_visible_gpus(monkeypatch, count, devices, expected):
    import multiprocessing

    from ssmbench import sweep

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(sweep, "spec_recipe", lambda spec: SimpleNamespace(train=SimpleNamespace(device=spec)))
    gpus = sweep.worker_gpus(devices)
    assert gpus == expected
    turns = multiprocessing.get_context("spawn").Value("i", 0)
    taken = [sweep.take_gpu(turns, gpus) for _ in range(2 * count + 1)]
    assert taken == ([i % count for i in range(2 * count + 1)] if expected else [None] * (2 * count + 1))


def test_a_sweep_worker_makes_its_gpu_current_before_each_run(monkeypatch):
    from ssmbench import sweep

    current = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setattr(sweep, "run_spec", lambda spec, threads: {"status": "finished", "gpu": current[-1]})
    monkeypatch.setitem(sweep._WORKER, "gpu", 1)
    monkeypatch.setitem(sweep._WORKER, "parent", __import__("os").getppid())
    assert sweep.worker_run_spec("spec", 1) == {"status": "finished", "gpu": 1}
