"""`train.cuda_graphs` and the prefetching loader, on the CPU: which steps replay, the static buffers, the tensor
learning rate the captured step reads, the in-place device tally, the refusals, and the CPU pass-through. The
capture itself runs on CUDA only (tests/test_gpu_train.py)."""

from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

import pytest
import torch

from killpoint import one_thread, tiny  # noqa: F401 (fixture)
from ssmbench import runs
from ssmbench.errors import RecipeError, SSMBenchError
from ssmbench.recipe import validate_recipe
from ssmbench.train import engine, graphs
from ssmbench.train.optim import cosine_with_warmup
from ssmbench.train.prefetch import prefetch
from ssmbench.train.tally import DeviceTally


def key(n: int, L: int = 16) -> tuple:
    return graphs.batch_key(torch.zeros(n, L, 1), torch.zeros(n, dtype=torch.long), (n, n))


def test_plan_warms_up_captures_the_full_batch_and_replays_only_its_shape():
    plan = graphs.GraphPlan(batch_size=8, warmup=3)
    sizes = [3, 8, 8, 8, 8, 8, 3, 8]  # a short batch first (resume at an epoch's end), then two epochs' worth
    got = [plan.decide(key(n), n) for n in sizes]
    assert got == ["warmup", "warmup", "warmup", "warmup", "capture", "replay", "eager", "replay"]
    assert plan.decide(key(8, L=32), 8) == "eager"  # same batch size, another length
    assert plan.decide(graphs.batch_key(torch.zeros(8, 16, 1), torch.zeros(8, dtype=torch.long), (4, 8)), 8) == "eager"


def test_static_batch_is_refilled_in_place():
    x, y = torch.randn(4, 6, 2), torch.arange(4)
    static = graphs.StaticBatch(x, y)
    pointers = static.x.data_ptr(), static.y.data_ptr()
    assert torch.equal(static.x, x) and torch.equal(static.y, y) and static.x.data_ptr() != x.data_ptr()
    x2, y2 = torch.randn(4, 6, 2), torch.arange(4) + 1
    static.load(x2, y2)
    assert (static.x.data_ptr(), static.y.data_ptr()) == pointers
    assert torch.equal(static.x, x2) and torch.equal(static.y, y2)


def adamw_run(capturable: bool, steps: int = 6) -> tuple[torch.Tensor, torch.optim.Optimizer]:
    """Fused AdamW + the engine's warmup/cosine schedule on a quadratic, lr a float or (capturable) a tensor."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    opt = torch.optim.AdamW([w], lr=0.1, fused=True)
    schedule = cosine_with_warmup(opt, 2, steps + 2)
    graphs.make_capturable(opt, torch.device("cpu"), capturable)
    lr = opt.param_groups[0]["lr"]
    for _ in range(steps):
        (w ** 2).sum().backward()
        opt.step()
        opt.zero_grad()
        schedule.step()
    if capturable:  # the scheduler wrote the tensor the optimizer reads, in place
        assert opt.param_groups[0]["lr"] is lr and lr.dtype == torch.float32
    return w.detach(), opt


def test_tensor_lr_follows_the_schedule_like_a_float_lr():
    eager, _ = adamw_run(False)
    captured, opt = adamw_run(True)
    assert opt.param_groups[0]["capturable"]
    assert torch.allclose(captured, eager, rtol=1e-6, atol=1e-7)
    assert not torch.equal(captured, adamw_run(False, steps=5)[0])  # the schedule's steps matter


def test_make_capturable_round_trips_a_checkpointed_optimizer():
    _, opt = adamw_run(True)
    state = opt.state_dict()
    assert isinstance(state["param_groups"][0]["lr"], torch.Tensor)
    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(5))], lr=0.1, fused=True)
    fresh.load_state_dict(state)  # a graph run's checkpoint resumed without graphs
    graphs.make_capturable(fresh, torch.device("cpu"), False)
    group = fresh.param_groups[0]
    assert group["lr"] == pytest.approx(float(state["param_groups"][0]["lr"])) and isinstance(group["lr"], float)
    assert group["capturable"] is False and graphs.current_lr(fresh) == group["lr"]


def test_tally_updates_in_place_and_numbers_steps_from_its_start():
    tally = DeviceTally(torch.device("cpu"), step=10)
    pointers = [t.data_ptr() for t in (tally.step, tally.sums, tally.bad_steps, tally.first)]
    one, nan = torch.tensor(1.0), torch.tensor(float("nan"))
    assert tally.add(one, torch.tensor(3), 4, 4, torch.tensor(0.5)).item() == 0.0
    assert tally.add(nan, torch.tensor(2), 4, 4, torch.tensor(0.5)).item() == 1.0
    first = tally.read()
    assert (first.loss_sum, first.correct, first.seen, first.bad_steps) == (4.0, 3.0, 4.0, 1)
    assert first.first_bad_step == 12 and first.first_bad == "loss is nan"
    tally.add(one, None, 4, 4, torch.tensor(float("inf")))
    second = tally.read()
    assert second.first_bad_step == 13 and second.first_bad == "gradient norm is inf" and second.seen == 0.0
    assert [t.data_ptr() for t in (tally.step, tally.sums, tally.bad_steps, tally.first)] == pointers


def test_prefetch_passes_cpu_batches_through():
    batches = [(torch.randn(2, 3), torch.arange(2)) for _ in range(3)]
    out = list(prefetch(iter(batches), torch.device("cpu")))
    assert len(out) == 3 and all(a[0] is b[0] and a[1] is b[1] for a, b in zip(out, batches))


@pytest.mark.usefixtures("one_thread")
def test_cuda_graphs_are_ignored_on_the_cpu_and_recorded(tmp_path):
    results = engine.train(tiny(cuda_graphs=True, max_steps=2, eval_every=2), runs_root=tmp_path, quiet=True,
                           log=lambda *_: None)
    env = json.loads((next(tmp_path.iterdir()) / runs.ENV).read_text())
    assert results["status"] == "finished" and env["cuda_graphs"] is False


def test_cuda_graphs_refused_under_ddp():
    stub = SimpleNamespace(recipe=tiny(cuda_graphs=True), device=torch.device("cuda"), world=2)
    with pytest.raises(SSMBenchError, match=r"train.cuda_graphs: not supported under DDP \(2 processes\)"):
        engine.Trainer._step_graph(stub)


@pytest.mark.parametrize("train, message", [
    ({"precision": "fp16"}, "train.cuda_graphs: not supported with train.precision: fp16"),
    ({"compile": True}, "train.cuda_graphs: not supported with train.compile: true"),
])
def test_cuda_graphs_refused_with_fp16_and_compile(train, message):
    with pytest.raises(RecipeError, match=message):
        validate_recipe({"name": "x", "data": {"name": "smnist"}, "train": {"cuda_graphs": True, **train}})


@pytest.fixture
def fake_cuda(monkeypatch):
    """Stand-ins for CUDA streams and graphs on the CPU: a "capture" records the step without running it and a
    "replay" runs it again (on whatever the static buffers then hold)."""
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: SimpleNamespace(wait_stream=lambda other: None))
    monkeypatch.setattr(torch.cuda, "current_stream", torch.cuda.Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(graphs, "capture", lambda body, stream: SimpleNamespace(replay=body))


@pytest.mark.usefixtures("one_thread", "fake_cuda")
def test_graph_runner_replays_the_loaded_batch(tmp_path):
    """The engine's graph path on the CPU (`fake_cuda`): same parameters and metrics as the eager engine (dropout
    on: the replayed forward draws the same masks), a short last batch eager."""
    trainers, paths = [], []
    for on in (False, True):
        trainer = engine.Trainer(tiny(), tmp_path / str(on), log=lambda *_: None, is_writer=False)
        if on:
            trainer.graph = graphs.StepGraph(trainer._update, 8, trainer.device)
            graphs.make_capturable(trainer.optimizer, trainer.device, True)
            run = trainer.graph.run
            trainer.graph.run = lambda *a: paths.append(run(*a))
        batches = engine.loader(trainer.data.train, engine.EpochBatches(8 * 6 + 3, 8, 0, 0), 0, trainer.device)
        for x, y in batches:
            trainer.train_step(x, y)
        trainers.append(trainer)
    assert paths == ["warmup"] * 3 + ["capture", "replay", "replay", "eager"]
    eager, graph = (dict(t.model.named_parameters()) for t in trainers)
    assert all(torch.allclose(graph[n], eager[n], rtol=1e-5, atol=1e-6) for n in eager)
    a, b = (t.progress for t in trainers)
    assert (a.step, a.train_seen, a.train_correct) == (b.step, b.train_seen, b.train_correct)
    assert b.train_loss_sum == pytest.approx(a.train_loss_sum, rel=1e-6)


@pytest.mark.usefixtures("fake_cuda")
def test_a_failed_capture_names_the_field(monkeypatch):
    def refuse(body, stream):
        raise RuntimeError("operation not permitted when stream is capturing\nCUDA kernel errors ...")

    monkeypatch.setattr(graphs, "capture", refuse)
    runner = graphs.StepGraph(lambda x, y, share: None, 2, torch.device("cpu"))
    x, y = torch.zeros(2, 3), torch.zeros(2)
    assert [runner.run(x, y, (2, 2)) for _ in range(3)] == ["warmup"] * 3
    with pytest.raises(SSMBenchError, match=r"^train.cuda_graphs: capturing the training step failed \(operation not "
                       r"permitted when stream is capturing\); set train.cuda_graphs: false$"):
        runner.run(x, y, (2, 2))
