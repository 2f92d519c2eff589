"""CUDA-graph capture of the training step (`train.cuda_graphs`).

A launch-bound training step (small kernels, the CPU queueing them slower than the GPU runs them) gets its whole
body -- forward, loss, backward, gradient clipping, the device tally and the fused AdamW update -- recorded once
into a torch.cuda.CUDAGraph and replayed with one launch per step:

    steps 1..WARMUP_STEPS (full-size batches)   eager, on a side stream (lazy initialization, optimizer state,
                                                cuBLAS workspaces and Triton autotuning happen outside the capture)
    the next full-size batch                    copied into static input buffers, captured, then replayed
    every later batch of the captured shape     copied into the static buffers (non_blocking), replayed
    any other batch (the short last one)        eager

What the captured step needs, and where it gets it:
- Static memory. A replay reads and writes the addresses seen at capture: the inputs are copied into the static
  buffers (`StaticBatch`); gradients stay in place (zero_grad(set_to_none=False), so every eager step between
  replays writes the same .grad tensors); the tally is updated and zeroed in place (train/tally.py); parameters,
  optimizer moments and BatchNorm statistics are updated in place by their own ops.
- The learning rate. `make_capturable` turns every param group's lr into a float32 CUDA tensor (the fused AdamW
  reads it from device memory) and marks the groups capturable; the scheduler fills it in place
  (torch.optim.lr_scheduler updates a tensor lr with fill_), so each replay uses the current lr.
- No host synchronization: the step reads nothing on the host (train/tally.py); a non-finite step's update is
  dropped inside the graph by the fused AdamW's `found_inf`.
- Dropout: the CUDA default generator is graph-safe; each replay draws fresh masks.
- Autocast runs with its weight-cast cache off (the cache would hold tensors freed inside the capture).

Not supported, refused with an error naming the field: fp16 (the GradScaler decides on the host), train.compile,
and DDP (its buckets and collectives need their own warm-up). On the CPU the field is ignored (env.json records
cuda_graphs: false), as train.tf32 is: the recipe runs unchanged everywhere.

Memory: the graph keeps a private pool the size of one full step's working memory for the whole run, so an eager
step (the short last batch) or an evaluation allocates beside it rather than in the same cached blocks.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Callable

import torch

from ssmbench.errors import SSMBenchError

WARMUP_STEPS = 3  # eager full-size steps before the capture (the PyTorch docs' whole-network example uses 3)


def batch_key(x: torch.Tensor, y: torch.Tensor, share: tuple[int, int]) -> tuple:
    """What a replay bakes in about a batch: shapes, dtypes and the loss weighting `share`."""
    return tuple(x.shape), x.dtype, tuple(y.shape), y.dtype, share


class GraphPlan:
    """Which path each training step takes (pure bookkeeping, no CUDA): "warmup" (eager, side stream, before the
    capture), "capture" (the first full-size batch after `warmup` full-size ones), "replay" (a batch whose
    `batch_key` equals the captured one) or "eager" (any other batch after the capture)."""

    def __init__(self, batch_size: int, warmup: int = WARMUP_STEPS):
        self.batch_size, self.warmup = batch_size, warmup
        self.warmed = 0  # full-size eager steps so far
        self.key: tuple | None = None  # batch_key of the captured step

    def decide(self, key: tuple, size: int) -> str:
        if self.key is not None:
            return "replay" if key == self.key else "eager"
        if size != self.batch_size:
            return "warmup"
        if self.warmed < self.warmup:
            self.warmed += 1
            return "warmup"
        self.key = key
        return "capture"


class StaticBatch:
    """The input buffers a captured step reads: allocated once like the first batch, refilled in place."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = torch.empty_like(x), torch.empty_like(y)
        self.load(x, y)

    def load(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device, on: bool) -> None:
    """Set every param group up for a captured step (`on`: lr a float32 tensor on `device`, capturable) or for
    eager steps only (lr a float, not capturable). Called after the optimizer state is loaded, since a checkpoint
    brings back the groups as they were saved (a tensor lr from a run with graphs, a float from one without)."""
    for group in optimizer.param_groups:
        lr = float(group["lr"])
        group["capturable"] = on
        if not on:
            group["lr"] = lr
        elif not (isinstance(group["lr"], torch.Tensor) and group["lr"].device == device
                  and group["lr"].dtype == torch.float32):
            group["lr"] = torch.tensor(lr, dtype=torch.float32, device=device)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The first group's lr as a float (reads the device tensor under cuda_graphs: only at log points)."""
    return float(optimizer.param_groups[0]["lr"])


class StepGraph:
    """Runs training steps through `GraphPlan`: warm-up on a side stream, capture, replay, eager fallback.
    `step(x, y, share)` is the body of one step (device work only); `run` returns the path taken."""

    def __init__(self, step: Callable[[torch.Tensor, torch.Tensor, tuple[int, int]], None], batch_size: int,
                 device: torch.device):
        # A bound method (the trainer's `_update`) is held weakly: the trainer holds this runner, and a strong
        # reference back would make a cycle that keeps the model, the optimizer state, the graph's pool and the
        # static buffers allocated after the run, until a garbage-collection pass.
        self._step = weakref.WeakMethod(step) if inspect.ismethod(step) else (lambda: step)
        self.device = device
        self.plan = GraphPlan(batch_size)
        self.side = torch.cuda.Stream(device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: StaticBatch | None = None

    def step(self, x: torch.Tensor, y: torch.Tensor, share: tuple[int, int]) -> None:
        self._step()(x, y, share)

    def run(self, x: torch.Tensor, y: torch.Tensor, share: tuple[int, int]) -> str:
        action = self.plan.decide(batch_key(x, y, share), len(x))
        if action == "replay":
            self.static.load(x, y)
            self.graph.replay()
        elif action == "capture":
            self._capture(x, y, share)
            self.graph.replay()  # capturing records the kernels without running them
        elif action == "warmup":
            main = torch.cuda.current_stream(self.device)
            self.side.wait_stream(main)
            with torch.cuda.stream(self.side):
                self.step(x, y, share)
            main.wait_stream(self.side)
        else:
            self.step(x, y, share)
        return action

    def _capture(self, x: torch.Tensor, y: torch.Tensor, share: tuple[int, int]) -> None:
        static = self.static = StaticBatch(x, y)
        step = self._step  # not `self`: the recorded body must not refer back to this runner
        try:
            self.graph = capture(lambda: step()(static.x, static.y, share), self.side)
        except RuntimeError as e:
            first_line = (str(e).splitlines() or [type(e).__name__])[0]
            raise SSMBenchError(f"train.cuda_graphs: capturing the training step failed ({first_line}); set "
                                f"train.cuda_graphs: false") from e


def capture(body: Callable[[], None], stream: torch.cuda.Stream) -> torch.cuda.CUDAGraph:
    """A CUDA graph of the kernels `body` launches (recorded, not run), captured on `stream` (a side stream of the
    training device: torch.cuda.graph's default capture stream is made once per process, on whichever device is
    current then). thread_local: only this thread's CUDA calls must be capture-safe (the DataLoader's pin-memory
    thread may allocate pinned memory meanwhile)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
        body()
    return graph
