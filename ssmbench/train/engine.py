"""The training engine: one loop from a validated recipe to a complete run record.

    data -> model -> init -> AdamW (param groups) + cosine/warmup -> [train steps, eval on val, checkpoint]*
         -> test with the best checkpoint -> results.json

Resume (`--resume RUN_DIR`) restores model, optimizer, scheduler, grad scaler, RNG states and the position in
the epoch's data order (which is a pure function of seed and epoch), so a resumed run equals an uninterrupted
one on the CPU. Under torchrun the same loop runs data-parallel (DDP): the recipe's batch is the global batch,
split across ranks, metrics are reduced over ranks and only rank 0 writes files (see train/distributed.py).

Reliability. Every file is written atomically and checkpoints carry a checksum with the previous one kept
(checkpoint.py), so a run killed at any instant, even by SIGKILL, resumes from last.pt or prev.pt (from
scratch if none was written); the metric lines written after that checkpoint are dropped (by count,
`Progress.metrics_rows`, which also removes a torn last line) and produced again. SIGTERM/SIGINT stop at the
next step boundary with a checkpoint, results.json status "preempted" and exit status 75 (`Preempted`); during
the run's setup (data preparation, an initializer's fit such as TDI), before any checkpoint, they stop at once
with the same status and exit status (`Stopped`; a resume starts the run over). The
resolved recipe.yaml is the first file of a new run, so a kill during data preparation or an initializer's fit
leaves a resumable directory. Checkpoints carry the sha256 of recipe.yaml: a resume whose recipe.yaml changed
since (edited, truncated) is refused unless `accept_recipe_change`. A best.pt that no longer loads does not stop
the run: the test uses the final weights and results.json says so (`best_checkpoint_error`). A
non-finite loss or gradient stops the run (NonFiniteError, exit 3) or, with `train.on_nonfinite: skip`, drops
that update. A run directory is locked while a process trains in it (`runs.locked`).

No host-device synchronization inside a training step (train/tally.py): loss sums, correct counts and the
non-finite flag accumulate as device tensors, a non-finite update is dropped on the device (the fused AdamW's
`found_inf`), and the tally is read at the log points (progress rows every `train.log_every` steps, evaluation,
checkpoint), where a non-finite step is
reported by its number. On the CPU, where reading is free, it is read after every step, so a run stops at the
bad step itself; on CUDA it stops at the next log point, having written no checkpoint after the bad step.

Metrics go to metrics.jsonl and to the loggers of `train.loggers` (TensorBoard, W&B; `train/loggers.py`), and,
when the output is not a terminal, to plain progress lines instead of the progress bar.

An input error found while a new run is set up (data, `budget.check`, init) removes its run directory, so a
run that never started leaves no record.

Not learning (docs/tuning.md). A classifier over C classes that has learned nothing predicts the uniform
distribution, whose cross-entropy is the chance level ln C. At every evaluation past the share
`train.not_learning_after` of the run, a mean training loss since the previous evaluation of at least
(1 - NOT_LEARNING_TOLERANCE) ln C means the run is not learning: a warning line, and results.json `not_learning`
{step, share, train_loss, chance_loss, stopped} of the first such evaluation; `train.not_learning: stop` ends the
run there (tested with its best checkpoint, results.json `stopped_early`). An `on_eval(step, val_metrics)` hook may
end a run the same way by returning a reason (the pruner of `ssmbench tune`).
"""

from __future__ import annotations

import gc
import hashlib
import math
import os
import random
import shlex
import shutil
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from ssmbench import nvidia, runs
from ssmbench.data import DataBundle, build_data
from ssmbench.errors import CheckpointError, NonFiniteError, RecipeError, SSMBenchError, Stopped
from ssmbench.init import apply_init
from ssmbench.models import backend as ssm_backend
from ssmbench.models.backbone import SequenceModel
from ssmbench.progress import phase_lines, plural
from ssmbench.recipe import Recipe, load_recipe
from ssmbench.registry import IMPORT_ENV
from ssmbench.train import budget, checkpoint, distributed, graphs
from ssmbench.train.loggers import TextLines, build_loggers, check_wandb_login, close_all
from ssmbench.train.optim import build_optimizer, cosine_with_warmup
from ssmbench.train.prefetch import prefetch
from ssmbench.train.tally import DeviceTally, Tally

# A training loss within this share below ln C (or above it) counts as the chance level (see the module docstring).
NOT_LEARNING_TOLERANCE = 0.01


# --------------------------------------------------------------------------------------------------
# Device, precision, seeding


def resolve_device(name: str) -> torch.device:
    """`train.device`; `auto` is CUDA when torch can use it, and the CPU only where nvidia-smi lists no GPU: a GPU
    torch cannot use (a CPU build, a driver too old for the build) stops the run with the cause and the fix."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        problem = nvidia.cuda_problem()
        if problem:
            raise SSMBenchError(f"train.device: auto: {problem}; or train on the CPU with train.device: cpu")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SSMBenchError(f"train.device: '{name}' requested but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 natively: a CUDA GPU of compute capability >= 8.0 (Ampere and later).
    `torch.cuda.is_bf16_supported()` also says True where bf16 is only emulated (a T4, sm_75), slower than fp32."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def use_device(device: torch.device) -> None:
    """Make `device` the current CUDA device (process-wide) when it names one (`cuda:1`). Triton launches its kernels
    on the current device, whatever the tensors' device, and streams made without a device (torch.cuda.graph's
    capture stream) belong to it; under DDP `distributed.setup` has already set it to LOCAL_RANK's GPU."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = fp32). auto: bf16 where it is native (`native_bf16`), else fp32. fp16 needs CUDA."""
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else None
    if precision == "fp16" and device.type != "cuda":
        raise SSMBenchError("train.precision: 'fp16' needs a CUDA device; on the CPU use 'fp32' or 'bf16'")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def set_tf32(enabled: bool, device: torch.device) -> bool:
    """The TF32 policy (`train.tf32`): float32 matmuls and convolutions on CUDA tensor cores with a 10-bit
    mantissa (~1e-3 relative error) or in full float32. Set explicitly either way (it is process-global);
    returns whether TF32 is in effect (never on the CPU), which env.json records."""
    on = enabled and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
    return on


def read_each_step(device: torch.device) -> bool:
    """Whether the engine reads its device tally after every step (free on the CPU) or only at log points."""
    return device.type == "cpu"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


@contextmanager
def rng_untouched() -> Iterator[None]:
    """Leave the global RNG states (the training stream: the model's own init, dropout masks) as they were before
    the block. Setup work (data preparation, an initializer's fit such as TDI or the zero-real dt0 estimate) draws
    from its own seeded generators; this guarantees that whether it ran or hit a cache never moves the training
    stream, so a run is bit-identical with and without its caches and after a kill before its first checkpoint."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate((3, tuple(state["python"][0]), state["python"][1]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------------
# Data order


class EpochBatches(Sampler[list[int]]):
    """Batches of a seeded permutation of the dataset for one epoch, starting at batch `start`.

    The order is a pure function of (seed, epoch), so resuming mid-epoch needs only the batch index.
    Under DDP every rank walks the same global batches and yields its shard of each (`distributed.shard`;
    `filler` keeps one sample for a rank whose shard of a short last batch is empty, for training steps).
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True, start: int = 0,
                 rank: int = 0, world: int = 1, filler: bool = True):
        self.n, self.batch_size, self.start, self.rank, self.world, self.filler = n, batch_size, start, rank, world, filler
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        self.order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)

    def __len__(self) -> int:
        return max(0, math.ceil(self.n / self.batch_size) - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(self.start, math.ceil(self.n / self.batch_size)):
            batch = self.order[b * self.batch_size:(b + 1) * self.batch_size].tolist()
            part = distributed.shard(batch, self.rank, self.world, self.filler)
            if part:
                yield part

    def share(self, b: int) -> tuple[int, int]:
        """(samples of this rank that count, samples in the global batch) for batch `b` of the epoch."""
        size = min(self.batch_size, self.n - b * self.batch_size)
        start, stop = distributed.shard_bounds(size, self.rank, self.world)
        return stop - start, size


def loader(dataset: Dataset, sampler: Sampler, num_workers: int, device: torch.device) -> DataLoader:
    # A private generator: creating the iterator must not draw from the global RNG (that would shift dropout
    # masks between a resumed and an uninterrupted run).
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=device.type == "cuda",
                      generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------------------------------
# Loss, evaluation


def loss_and_correct(task: str, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    out = out.float()
    if task == "classification":
        return F.cross_entropy(out, y), (out.argmax(-1) == y).sum()
    return F.mse_loss(out, y.to(out.dtype).reshape(out.shape)), None


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: DataLoader, task: str, device: torch.device,
             amp: torch.dtype | None, max_batches: int | None = None) -> dict[str, float]:
    """Mean loss (and accuracy) over a split, weighted by batch size."""
    model.eval()
    total, sums = 0, torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, correct: read once at the end
    for i, (x, y) in enumerate(prefetch(data, device)):
        if max_batches is not None and i >= max_batches:
            break
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = model(x)
        loss, c = loss_and_correct(task, out, y)
        sums[0] += loss.double() * len(x)
        if c is not None:
            sums[1] += c
        total += len(x)
    model.train()
    loss_sum, correct, total = distributed.all_reduce_sum([*sums.tolist(), total])  # each rank saw a shard
    correct, total = round(correct), round(total)
    metrics = {"loss": loss_sum / max(total, 1), "n": total}
    if task == "classification":
        metrics["accuracy"] = correct / max(total, 1)
    return metrics


def evaluated(metrics: dict | None, split: Dataset, max_batches: int | None) -> dict[str, Any]:
    """How much of a split an evaluation saw: {n: samples evaluated, size: samples in the split, whole_split: n ==
    size, max_batches: the recipe's cap}; n is None when the split was never evaluated (e.g. no validation split)."""
    n = (metrics or {}).get("n")
    return {"n": n, "size": len(split), "whole_split": n == len(split) if n is not None else None,
            "max_batches": max_batches}


def better(task: str, new: dict, best: dict | None) -> bool:
    if best is None:
        return True
    if task == "classification":
        return new["accuracy"] > best["accuracy"]
    return new["loss"] < best["loss"]


def persistent_buffers(model: torch.nn.Module) -> list[torch.Tensor]:
    """The buffers of `model` in its state dict: what a forward may update besides the parameters (BatchNorm's
    running mean, variance and batch count). Non-persistent buffers are caches (the STU's filter taps)."""
    return [b for m in model.modules() for name, b in m._buffers.items()
            if b is not None and name not in m._non_persistent_buffers_set]


def nonfinite_parameters(model: torch.nn.Module, gradients: bool = True) -> list[str]:
    """Parameters with non-finite values, then (if `gradients`) those with only a non-finite gradient."""
    params = list(model.named_parameters())
    bad = [f"{name} (value)" for name, p in params if not torch.isfinite(p).all()]
    if gradients:
        bad += [f"{name} (gradient)" for name, p in params
                if p.grad is not None and torch.isfinite(p).all() and not torch.isfinite(p.grad).all()]
    return bad


# --------------------------------------------------------------------------------------------------
# The run


@dataclass
class Progress:
    """Where training is; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    samples: int = 0
    seconds: float = 0.0
    best_val: dict | None = None
    best_step: int | None = None
    train_loss_sum: float = 0.0
    train_correct: int = 0
    train_seen: int = 0
    metrics_rows: int = 0  # lines in metrics.jsonl; resume keeps exactly these
    skipped_steps: int = 0  # updates dropped under train.on_nonfinite: skip
    extra: dict = field(default_factory=dict)


def checked_progress(raw: Any, total_steps: int, steps_per_epoch: int) -> Progress:
    """A checkpoint's `progress` as a Progress, or ValueError naming the first impossible field: counts are
    integers >= 0, times and sums finite floats >= 0 (the loss sum of a regression run too), step <= total_steps,
    batch_in_epoch < steps_per_epoch, and nothing seen or timed at step 0."""
    progress = Progress(**raw)  # TypeError for unknown or missing fields
    for name, value in asdict(progress).items():
        if name in ("best_val", "best_step", "extra"):
            continue
        whole = name not in ("seconds", "train_loss_sum")
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or \
                not math.isfinite(value) or value < 0:
            raise ValueError(f"progress.{name} = {value!r} is not a {'whole' if whole else 'finite'} number >= 0")
    if progress.step > total_steps or progress.batch_in_epoch >= max(steps_per_epoch, 1):
        raise ValueError(f"progress at step {progress.step}, batch {progress.batch_in_epoch} of its epoch, is beyond "
                         f"this run ({total_steps} steps, {steps_per_epoch} per epoch)")
    if progress.step == 0 and (progress.train_seen or progress.seconds or progress.samples):
        raise ValueError("progress at step 0 records samples or time already")
    return progress


STOP_CHECK_EVERY = 10  # steps between the ranks' collective checks for a stop signal under DDP


class Preempted(SSMBenchError):
    """SIGTERM/SIGINT stopped training at a step boundary after writing last.pt; the run can be resumed."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): temporary failure, try again


class StopSignals:
    """Turn SIGTERM and SIGINT into a request to stop at the next step boundary (checkpoint, then Preempted).

    A second signal aborts at once (KeyboardInterrupt; the last checkpoint stays valid). While `setting_up` (a
    run's data preparation and initializer, e.g. the TDI fit, before any checkpoint exists) there is no step
    boundary to wait for: the first signal raises `Stopped` at once (exit 75, results.json "preempted"; a resume
    starts the run over). Handlers can only be installed in the main thread; elsewhere the signals keep their
    default behaviour. `forward` is called on every signal first (a parallel sweep passes each one on to its
    worker processes).
    """

    def __init__(self, forward: Callable[[], None] | None = None):
        self.received: str | None = None
        self.previous: dict = {}
        self.forward = forward
        self.setting_up = False

    def _handle(self, signum, frame) -> None:
        if self.forward is not None:
            self.forward()
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        if self.setting_up:
            self.setting_up = False
            raise Stopped(f"{self.received} received while the run was being set up (data preparation or the "
                          f"initializer's fit), before its first checkpoint; run the same command again, or "
                          f"`ssmbench train --resume RUN_DIR`, which starts it over")

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def build_model(recipe: Recipe, bundle: DataBundle) -> torch.nn.Module:
    return SequenceModel(recipe.model, recipe.init.name, bundle.io)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Trainer:
    def __init__(self, recipe: Recipe, run_dir: Path, resume: bool = False, quiet: bool = False,
                 log: Callable[[str], None] = print, is_writer: bool = True, lines: bool = False,
                 accept_recipe_change: bool = False, on_eval: Callable[[int, dict], str | None] | None = None):
        self.recipe, self.run_dir, self.quiet, self.log, self.is_writer = recipe, Path(run_dir), quiet, log, is_writer
        self.accept_recipe_change, self.on_eval = accept_recipe_change, on_eval
        self.recipe_sha256 = sha256_hex(recipe.to_yaml().encode("utf-8"))  # of recipe.yaml (the file on resume)
        t = recipe.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = distributed.local_device(resolve_device(t.device))
        use_device(self.device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        if t.batch_size < self.world or (t.eval_batch_size or t.batch_size) < self.world:
            raise SSMBenchError(f"train.batch_size / train.eval_batch_size: the global batch is split across "
                                f"{self.world} processes, so it must be at least {self.world}")
        self.amp = resolve_precision(t.precision, self.device)
        self.tf32 = set_tf32(t.tf32, self.device)
        self.ssm_backend = ssm_backend.for_model(recipe.model, self.device)  # the fused kernel's self-check, if any
        seed_everything(recipe.seed)
        say = phase_lines(recipe.name, log, is_writer and not quiet)
        say(f"reading the data ({recipe.data.name}; a data set's first use also prepares and caches it)")
        tick = time.perf_counter()
        with rng_untouched():
            self.data = build_data(recipe.data)
        sizes = ", ".join(f"{n:,} {split}" for split, n in self.data.sizes().items())
        say(f"data ready in {time.perf_counter() - tick:.1f} s: {sizes} sequences of length {self.data.seq_len} "
            f"({self.data.source})")
        self.task = self.data.task
        self.n_classes = self.data.io.n_outputs if self.task == "classification" else None
        m = recipe.model
        fitted = " from the training data" if recipe.init.name == "tdi" or recipe.init.dt0 == "auto" else ""
        say(f"building the model ({m.kind}, {plural(m.n_layers, 'layer')} of width {m.d_model}) and initializing "
            f"it{fitted} ({recipe.init.name})")
        budget.check(recipe, self.data, self.device, self.amp, self.world)
        self.model = distributed.prepare(build_model(recipe, self.data), self.device).to(self.device)
        with rng_untouched():
            self.init_facts = apply_init(self.model, recipe.init, {"data": self.data, "recipe": recipe, "log": log})
        if t.compile:  # nn.Module.compile works in place: same parameters, same state-dict keys
            for block in self.model.blocks:
                block.compile()
        self.optimizer = build_optimizer(self.model, t.lr, t.weight_decay, t.no_weight_decay)
        self.steps_per_epoch = math.ceil(len(self.data.train) / t.batch_size)
        total = self.steps_per_epoch * t.epochs
        self.total_steps = min(total, t.max_steps) if t.max_steps else total
        self.scheduler = cosine_with_warmup(self.optimizer, t.warmup_steps, self.total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.progress = Progress()
        self.ckpt_dir = self.run_dir / runs.CHECKPOINTS
        self.saved_step: int | None = None  # step of the newest last.pt (named by the non-finite guard)
        self.graph = self._step_graph()  # train.cuda_graphs on CUDA; None: every step eager
        if resume:
            self._restore()
        elif is_writer:
            self._start_record()
        graphs.make_capturable(self.optimizer, self.device, self.graph is not None)  # after the state is loaded
        self.tally = DeviceTally(self.device, self.progress.step)  # this rank's step metrics since the last read
        self.ddp = distributed.wrap(self.model, self.device)  # steps run through DDP; state dicts use self.model
        self.log_every = t.log_every or max(1, self.total_steps // 20)
        self.loggers = ([TextLines(recipe.name, self.total_steps, log)] if lines and is_writer else [])
        if is_writer:
            self.loggers += build_loggers(t.loggers, self.run_dir, recipe.to_dict(), self.progress.step)
        if lines:
            say(f"training {plural(self.total_steps - self.progress.step, 'step')} on {self.device} (a line every "
                f"{plural(self.log_every, 'step')} and after every evaluation)")
        self.first_step_line = say if lines else None  # "first step done": the first progress line may be far off

    def _step_graph(self) -> graphs.StepGraph | None:
        """The CUDA-graph runner of `train.cuda_graphs` (train/graphs.py), on CUDA; on the CPU the field is
        ignored (env.json records cuda_graphs: false). Refused under DDP."""
        if not self.recipe.train.cuda_graphs or self.device.type != "cuda":
            return None
        if self.world > 1:
            raise SSMBenchError(f"train.cuda_graphs: not supported under DDP ({self.world} processes); set "
                                f"train.cuda_graphs: false, or train on one GPU")
        return graphs.StepGraph(self._update, self.recipe.train.batch_size, self.device)

    # ---- run record -------------------------------------------------------------------------------

    def _start_record(self) -> None:
        runs.atomic_write_text(self.run_dir / runs.RECIPE, self.recipe.to_yaml())
        env = runs.environment(str(self.device))
        env.update({"precision": str(self.amp).replace("torch.", "") if self.amp else "fp32", "tf32": self.tf32,
                    "cuda_graphs": self.graph is not None, "ssm_backend": self.ssm_backend,
                    "data": {"source": self.data.source, "provenance": self.data.provenance,
                             "sizes": self.data.sizes(), "seq_len": self.data.seq_len, **self.data.facts},
                    "init": self.init_facts, "n_params": sum(p.numel() for p in self.model.parameters()),
                    "distributed": distributed.facts(self.model, self.device, self.recipe.train.batch_size)})
        runs.atomic_write_json(self.run_dir / runs.ENV, env)
        checkpoint.save(self.ckpt_dir / "init.pt", {"model": self.model.state_dict()})

    def _state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_state(), "progress": asdict(self.progress), "recipe_sha256": self.recipe_sha256}

    def save_last(self) -> None:
        self.collect()  # a non-finite step since the last read stops the run before its state is saved
        if self.is_writer:
            checkpoint.save(self.ckpt_dir / checkpoint.LAST, self._state(), keep_previous=True)
        self.saved_step = self.progress.step

    def _restore(self) -> None:
        """Continue from the newest good checkpoint (last.pt, else prev.pt); with none written yet, start over.
        A checkpoint written under another recipe.yaml (its sha256 differs) is refused unless accept_recipe_change."""
        self.recipe_sha256 = sha256_hex(runs.read_record_bytes(self.run_dir / runs.RECIPE, "recipe"))
        if self.is_writer:
            if self.ckpt_dir.exists() and not self.ckpt_dir.is_dir():
                raise SSMBenchError(f"{self.ckpt_dir}: a file, not the checkpoints folder this run writes; move it "
                                    f"away, then resume (the run continues from scratch if it held no checkpoint)")
            for f in (self.ckpt_dir / name for name in (checkpoint.LAST, checkpoint.PREV, "best.pt", "init.pt")):
                if (f.exists() or f.is_symlink()) and (f.is_symlink() or not f.is_file()):
                    raise SSMBenchError(f"{f}: not a checkpoint file (a folder, FIFO, device or link) where this run "
                                        f"writes one; move it away, then resume")
            if not self.ckpt_dir.is_dir():
                self.ckpt_dir.mkdir()
                self.log(f"recreated the missing {self.ckpt_dir}")
            for f in runs.remove_temp_files(self.ckpt_dir) + runs.remove_temp_files(self.run_dir):
                self.log(f"removed {f}, a partial file left by the interrupted process")
        found = checkpoint.load_latest(self.ckpt_dir, warn=self.log, use=self._continue_from)
        if found is None:
            self.log(f"{self.run_dir}: no checkpoint was written before the interruption; starting the run over")
            if self.is_writer:
                self._start_record()
        else:
            self.log(f"resuming {self.run_dir} from {found[1].name} at step {self.progress.step} (epoch {self.progress.epoch})")
        if self.is_writer:  # lines written after the checkpoint (and a torn last line) are produced again
            rows, torn = runs.scan_jsonl(self.run_dir / runs.METRICS)
            if len(rows) >= self.progress.metrics_rows and (torn or len(rows) > self.progress.metrics_rows):
                self.log(f"{self.run_dir / runs.METRICS}: dropped {max(0, len(rows) - self.progress.metrics_rows)} line(s) "
                         f"written after the checkpoint and {torn} torn line(s); they are produced again")
            if len(rows) < self.progress.metrics_rows:  # truncated or edited: lines from before the checkpoint
                self.log(f"warning: {self.run_dir / runs.METRICS}: holds {len(rows)} metric line(s) but the checkpoint "
                         f"follows {self.progress.metrics_rows}; the {self.progress.metrics_rows - len(rows)} missing "
                         f"line(s) were written before the checkpoint and cannot be produced again (lost)"
                         + (f"; {torn} torn line(s) dropped" if torn else ""))
                self.progress.metrics_rows = len(rows)
            runs.rewrite_jsonl(self.run_dir / runs.METRICS, rows[:self.progress.metrics_rows])

    def _continue_from(self, state: dict[str, Any], path: Path) -> None:
        """Load a checkpoint's state into the run (`checkpoint.load_latest`'s `use`): a state that does not fit
        (missing keys, shapes of another model, impossible progress) raises, and the previous checkpoint is tried."""
        self._check_recipe(state.get("recipe_sha256"), path)
        progress = checked_progress(state["progress"], self.total_steps, self.steps_per_epoch)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.progress = progress
        self.saved_step = progress.step

    def _check_recipe(self, saved: str | None, path: Path) -> None:
        if saved is None or saved == self.recipe_sha256:  # None: a checkpoint from before hashes were stored
            return
        what = (f"{self.run_dir / runs.RECIPE} changed since {path} was written (sha256 {self.recipe_sha256[:12]}... "
                f"!= {saved[:12]}... recorded in the checkpoint)")
        if not self.accept_recipe_change:
            raise SSMBenchError(f"{what}; restore the original recipe.yaml, or resume with --accept-recipe-change to "
                                f"continue under the edited recipe")
        self.log(f"warning: {what}; continuing under the edited recipe (--accept-recipe-change)")

    def log_metrics(self, split: str, metrics: dict) -> None:
        row = {"step": self.progress.step, "epoch": self.progress.epoch, "split": split,
               **metrics, "seconds": round(self.progress.seconds, 3),
               "lr": graphs.current_lr(self.optimizer)}
        if self.is_writer:
            runs.append_jsonl(self.run_dir / runs.METRICS, row)
        self.progress.metrics_rows += 1
        for logger in self.loggers:
            logger.log(split, row, self.progress.step)

    def log_progress(self) -> None:
        """The `progress` row for the loggers: running train loss (and accuracy) since the last evaluation, lr,
        throughput and the time to the last step at that throughput. A log point: every rank reads its device
        tally (collectively, under DDP) whether or not it has loggers."""
        self.collect()
        p = self.progress
        if not p.train_seen or not p.seconds:
            return
        row = {"epoch": p.epoch, "loss": p.train_loss_sum / p.train_seen, "lr": graphs.current_lr(self.optimizer),
               "samples_per_second": p.samples / p.seconds, "seconds": p.seconds,
               "eta_seconds": (self.total_steps - p.step) * p.seconds / p.step}
        if self.task == "classification":
            row["accuracy"] = p.train_correct / p.train_seen
        for logger in self.loggers:
            logger.log("progress", row, p.step)

    # ---- training ---------------------------------------------------------------------------------

    def eval_loader(self, dataset: Dataset) -> DataLoader:
        t = self.recipe.train
        sampler = EpochBatches(len(dataset), t.eval_batch_size or t.batch_size, 0, 0, shuffle=False,
                               rank=self.rank, world=self.world, filler=False)
        return loader(dataset, sampler, self.recipe.data.num_workers, self.device)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, share: tuple[int, int] | None = None) -> None:
        """One optimizer step on this rank's shard. `share` = (samples of the shard that count, samples in the
        global batch), default (len(x), len(x)). The mean loss is scaled by world * share[0] / share[1], so
        DDP's gradient average is the mean over the global batch (distributed.py); logged sums are reduced.
        Nothing is read on the host: a non-finite loss or gradient norm drops the update on the device (the
        GradScaler does it under fp16) and is reported when the tally is read (`collect`). Under
        `train.cuda_graphs` the device work (`_update`) is replayed from a CUDA graph (train/graphs.py)."""
        p = self.progress
        share = share or (len(x), len(x))
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.graph is None:
            self._update(x, y, share)
        else:
            self.graph.run(x, y, share)
        if read_each_step(self.device):
            self.collect()
        self.scheduler.step()
        p.step += 1
        p.batch_in_epoch += 1
        p.samples += share[1]

    def _update(self, x: torch.Tensor, y: torch.Tensor, share: tuple[int, int]) -> None:
        """Forward, loss, backward, clipping, tally and optimizer update of one step: device work only, the part
        `train.cuda_graphs` captures (gradients then stay in place, and autocast caches no weight casts)."""
        t = self.recipe.train
        mine, total = share
        state = persistent_buffers(self.model)  # a dropped update restores them (BatchNorm's running statistics)
        before = [b.clone() for b in state]
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None,
                            cache_enabled=self.graph is None):
            out = self.ddp(x)
        loss, correct = loss_and_correct(self.task, out, y)
        self.optimizer.zero_grad(set_to_none=self.graph is None)
        self.scaler.scale(loss * (self.world * mine / total)).backward()
        self.scaler.unscale_(self.optimizer)
        params = [q for q in self.model.parameters() if q.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm([q.grad for q in params])
        if t.grad_clip:  # a non-finite norm clips nothing, so the guard names only the bad gradient
            torch.nn.utils.clip_grads_with_norm_(params, t.grad_clip, torch.where(grad_norm.isfinite(), grad_norm, 0.0))
        fp16 = self.amp == torch.float16  # the scaler skips overflowing steps itself
        bad = self.tally.add(loss, correct if mine else None, mine, total, None if fp16 else grad_norm)
        if not fp16:
            self.optimizer.found_inf = bad  # read by the fused AdamW: 1 leaves parameters and state unchanged
        dropped = bad.bool()
        for b, old in zip(state, before):  # on the device, no host read: a NaN batch must not poison the statistics
            b.copy_(torch.where(dropped, old, b))
        self.scaler.step(self.optimizer)
        self.optimizer.__dict__.pop("found_inf", None)
        self.scaler.update()

    def collect(self) -> None:
        """Read the device tally into `progress` (one synchronization); a non-finite step since the last read
        raises NonFiniteError or, with `train.on_nonfinite: skip`, is counted and logged."""
        tally = self.tally.read()
        loss_sum, correct, bad_steps = distributed.all_reduce_sum([tally.loss_sum, tally.correct, tally.bad_steps])
        p = self.progress
        p.train_loss_sum += loss_sum
        p.train_correct += round(correct)
        p.train_seen += round(tally.seen)
        if bad_steps:
            self._nonfinite(tally)  # raises unless train.on_nonfinite is skip
            p.skipped_steps += tally.bad_steps

    def _nonfinite(self, tally: Tally) -> None:
        """Non-finite losses or gradients since the last read. `train.on_nonfinite: skip` accepts the dropped
        updates (the steps and the lr schedule still advanced) unless the parameters themselves are non-finite,
        which no later step can repair; otherwise NonFiniteError names the first bad step, the parameters and
        the last good checkpoint."""
        step, what = tally.first_bad_step, tally.first_bad or "on another rank"
        more = f" (and {tally.bad_steps - 1} later step(s))" if tally.bad_steps > 1 else ""
        bad = nonfinite_parameters(self.model, gradients=not what.startswith("loss"))
        values_finite = not any(b.endswith("(value)") for b in bad)
        if self.recipe.train.on_nonfinite == "skip" and values_finite:
            self.log(f"warning: step {step}: {what}{more}; update skipped (train.on_nonfinite: skip)")
            return
        last = self.ckpt_dir / checkpoint.LAST
        where = (f"last good checkpoint: {last} (step {self.saved_step})" if self.saved_step is not None
                 else "no checkpoint was written yet")
        raise NonFiniteError(f"non-finite training at step {step}: {what}{more}; "
                             f"non-finite parameters: {', '.join(bad[:8]) or 'none (the loss itself overflowed)'}; "
                             f"{where}. Start again with a lower train.lr, a train.grad_clip, "
                             f"or train.on_nonfinite: skip.")

    def run_eval(self) -> None:
        self.collect()
        p = self.progress
        if p.train_seen:
            train_metrics = {"loss": p.train_loss_sum / p.train_seen}
            if self.task == "classification":
                train_metrics["accuracy"] = p.train_correct / p.train_seen
            self.log_metrics("train", train_metrics)
            self.check_learning(train_metrics["loss"])
            p.train_loss_sum, p.train_correct, p.train_seen = 0.0, 0, 0
        if len(self.data.val) == 0:
            return
        val = evaluate(self.model, self.eval_loader(self.data.val), self.task, self.device, self.amp,
                       self.recipe.train.max_eval_batches)
        self.log_metrics("val", val)
        if better(self.task, val, p.best_val):
            p.best_val, p.best_step = val, p.step
            if self.is_writer:
                checkpoint.save(self.ckpt_dir / "best.pt", {"model": self.model.state_dict(), "step": p.step})
        reason = self.on_eval(p.step, val) if self.on_eval is not None else None
        if reason and not p.extra.get("stopped_early"):
            p.extra["stopped_early"] = reason

    def check_learning(self, train_loss: float) -> None:
        """The not-learning check of one evaluation (see the module docstring): past `train.not_learning_after` of
        the run, a training loss at the chance level ln C is reported once and, under `train.not_learning: stop`,
        ends the run."""
        t, p = self.recipe.train, self.progress
        if self.n_classes is None or self.n_classes < 2 or p.step < t.not_learning_after * self.total_steps:
            return
        chance = math.log(self.n_classes)
        at_chance = train_loss >= (1 - NOT_LEARNING_TOLERANCE) * chance
        if "not_learning" in p.extra:
            p.extra["not_learning"]["at_end"] = at_chance
            return
        if not at_chance:
            return
        stop = t.not_learning == "stop"
        p.extra["not_learning"] = {"step": p.step, "share": round(p.step / self.total_steps, 4),
                                   "train_loss": train_loss, "chance_loss": chance, "stopped": stop, "at_end": True}
        self.log(f"warning: not learning: at step {p.step} ({p.step / self.total_steps:.0%} of the run) the training "
                 f"loss {train_loss:.4f} is at the chance level ln {self.n_classes} = {chance:.4f}"
                 + ("; stopping (train.not_learning: stop)" if stop else
                    "; training goes on (train.not_learning: stop ends such a run)"))
        if stop:
            p.extra["stopped_early"] = f"not learning: training loss at the chance level ln {self.n_classes} at step {p.step}"

    def fit(self, on_step: Callable[["Trainer"], None] | None = None, stop: StopSignals | None = None) -> None:
        """Train to `total_steps`. A signal caught by `stop` ends training at the next step boundary, after
        writing last.pt, with Preempted."""
        t, p = self.recipe.train, self.progress
        self.model.train()
        started = time.perf_counter()
        while p.step < self.total_steps and not p.extra.get("stopped_early"):
            sampler = EpochBatches(len(self.data.train), t.batch_size, self.recipe.seed, p.epoch, start=p.batch_in_epoch,
                                   rank=self.rank, world=self.world)
            tick = time.perf_counter()
            batches = loader(self.data.train, sampler, self.recipe.data.num_workers, self.device)
            for x, y in prefetch(batches, self.device):
                self.train_step(x, y, sampler.share(p.batch_in_epoch))
                done = p.step >= self.total_steps
                end_of_epoch = p.batch_in_epoch >= self.steps_per_epoch
                if end_of_epoch:
                    p.epoch, p.batch_in_epoch = p.epoch + 1, 0
                log_now = p.step % self.log_every == 0
                evaluate_now = end_of_epoch if t.eval_every is None else p.step % t.eval_every == 0
                save_now = evaluate_now or done or bool(t.checkpoint_every and p.step % t.checkpoint_every == 0)
                if log_now or evaluate_now or save_now or (self.world > 1 and self.stop_check_due(stop)):
                    self.collect()  # waits for the queued steps (CUDA): their device time is training time
                now = time.perf_counter()
                p.seconds += now - tick
                tick = now
                if self.first_step_line is not None:
                    self.first_step_line(f"step {p.step} done ({time.perf_counter() - started:.1f} s)")
                    self.first_step_line = None
                if log_now:
                    self.log_progress()
                if on_step:
                    on_step(self)
                if evaluate_now or done:
                    self.run_eval()
                    if p.extra.get("stopped_early"):
                        self.log(f"{self.recipe.name}: stopped at step {p.step} of {self.total_steps}: "
                                 f"{p.extra['stopped_early']}")
                        done = True
                if save_now or done:
                    self.save_last()
                if not done and self.stop_requested(stop):
                    if self.saved_step != p.step:
                        self.save_last()
                    raise Preempted(f"{stop.received} received: stopped at step {p.step} of {self.total_steps} after "
                                    f"writing {self.ckpt_dir / checkpoint.LAST}; continue with "
                                    f"`ssmbench train --resume {self.run_dir}`")
                tick = time.perf_counter()
                if done or end_of_epoch:
                    break

    def stop_check_due(self, stop: StopSignals | None) -> bool:
        """Whether this step asks the ranks about a stop signal: every step in one process (a flag), every
        STOP_CHECK_EVERY steps under DDP, where asking is a collective and a host read (a synchronization)."""
        return stop is not None and (self.world == 1 or self.progress.step % STOP_CHECK_EVERY == 0)

    def stop_requested(self, stop: StopSignals | None) -> bool:
        """Whether any rank caught a stop signal (all ranks must stop at the same step), asked when due."""
        if not self.stop_check_due(stop):
            return False
        if self.world == 1:
            return stop.received is not None
        return distributed.all_reduce_sum([stop.received is not None])[0] > 0

    def test(self) -> dict[str, Any]:
        """Evaluate the best checkpoint (by validation) on the test split; return and write results.json."""
        best, best_error = self.ckpt_dir / "best.pt", None
        distributed.barrier()  # rank 0 has finished writing best.pt
        if best.exists():
            try:
                self.model.load_state_dict(checkpoint.load(best)["model"])
            except CheckpointError as e:  # damaged after it was written: test the final weights, and say so
                best_error = f"{e}; tested the final weights instead"
                self.log(f"warning: {best_error}")
        test = evaluate(self.model, self.eval_loader(self.data.test), self.task, self.device, self.amp,
                        self.recipe.train.max_test_batches)
        self.log_metrics("test", test)
        p = self.progress
        results = {
            "status": "finished", "name": self.recipe.name, "run_dir": str(self.run_dir), "task": self.task,
            "test": test, "best_val": p.best_val, "best_step": p.best_step, "steps": p.step, "epochs": p.epoch,
            "samples": p.samples, "skipped_steps": p.skipped_steps, "train_seconds": round(p.seconds, 3),
            "samples_per_second": round(p.samples / p.seconds, 2) if p.seconds else None,
            "data_source": self.data.source, "n_params": sum(q.numel() for q in self.model.parameters()),
            "evaluation": {"test": evaluated(test, self.data.test, self.recipe.train.max_test_batches),
                           "val": evaluated(p.best_val, self.data.val, self.recipe.train.max_eval_batches)},
            "n_classes": self.n_classes, "not_learning": p.extra.get("not_learning"),
            "stopped_early": p.extra.get("stopped_early"),
            **({"best_checkpoint_error": best_error} if best_error else {}),
        }
        if self.is_writer:
            runs.atomic_write_json(self.run_dir / runs.RESULTS, results)
        distributed.barrier()  # no rank leaves (and tears down the process group) before results.json exists
        return results


def record_failure(run_dir: Path, recipe: Recipe, error: BaseException, trainer: Trainer | None = None) -> None:
    """results.json of a run that did not finish: status "preempted" (a signal; resumable) or "failed", the
    error, the step reached and the last checkpoint. Best effort: a full disk must not hide the original error."""
    record = {"status": "preempted" if isinstance(error, (Preempted, Stopped, KeyboardInterrupt)) else "failed",
              "name": recipe.name, "run_dir": str(run_dir), "error": f"{type(error).__name__}: {error}"}
    if trainer is not None:
        last = trainer.ckpt_dir / checkpoint.LAST
        record.update(step=trainer.progress.step, skipped_steps=trainer.progress.skipped_steps,
                      last_checkpoint=str(last) if last.exists() else None,
                      resume=f"ssmbench train --resume {run_dir}")
    try:
        runs.atomic_write_json(Path(run_dir) / runs.RESULTS, record)
    except OSError:
        pass


def new_run_dir(runs_root: str | Path, recipe: Recipe) -> Path:
    """A new run directory holding the resolved recipe.yaml (its first file, so it is resumable from the start)."""
    run_dir = runs.create_run_dir(Path(runs_root), recipe.name)
    runs.atomic_write_text(run_dir / runs.RECIPE, recipe.to_yaml())
    return run_dir


def missing_imports(run_dir: Path) -> list[str]:
    """The `--import` modules of the command that started a run (argv in its env.json) not imported now."""
    argv = (runs.read_json(run_dir / runs.ENV) or {}).get("argv")
    argv = [a for a in argv if isinstance(a, str)] if isinstance(argv, list) else []
    started = [b for a, b in zip(argv, argv[1:]) if a == "--import"] + [a[9:] for a in argv if a.startswith("--import=")]
    now = os.environ.get(IMPORT_ENV, "").split(os.pathsep)
    return [m for m in dict.fromkeys(started) if m not in now]


def is_input_error(error: BaseException) -> bool:
    """A user-input error (bad data, recipe or checkpoint; exit 2), not an interruption or a failure of training."""
    return isinstance(error, SSMBenchError) and error.exit_code == SSMBenchError.exit_code


def train(recipe: Recipe | None = None, runs_root: str | Path = "runs", resume: str | Path | None = None,
          quiet: bool = False, log: Callable[[str], None] = print, on_step=None,
          accept_recipe_change: bool = False, on_eval: Callable[[int, dict], str | None] | None = None) -> dict[str, Any]:
    """Train a recipe into a new run directory under `runs_root`, or continue `resume`; return results.json.

    Unless `quiet`: a progress bar on a terminal, else (output to a file) plain `log` lines every
    `train.log_every` steps and after every evaluation. `accept_recipe_change`: resume even though recipe.yaml
    differs from the one the checkpoint was written under. `on_eval(step, val_metrics)` is called after every
    validation evaluation; a reason it returns ends the run there (see the module docstring)."""
    from rich.console import Console

    from ssmbench.progress import TrainingProgress

    terminal = Console().is_terminal  # else (nohup, Slurm) plain lines replace the progress bar

    writer = distributed.is_main_process()  # under torchrun only rank 0 writes and prints
    if not writer:
        quiet, log = True, (lambda *_: None)
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / runs.RECIPE).is_file():
            raise SSMBenchError(f"{run_dir}: not a run directory (no {runs.RECIPE}); pass the folder under runs/ to resume")
        done = runs.read_json(run_dir / runs.RESULTS)
        if runs.is_finished(done):
            log(f"{run_dir} has already finished; nothing to resume")
            return done
        flags = [a for m in missing_imports(run_dir) for a in ("--import", m)]
        again = shlex.join(["ssmbench", *flags, "train", "--resume", str(run_dir)])
        hint = f"this run was started with {shlex.join(flags)} (argv in env.json); resume it with `{again}`"
        try:
            recipe = load_recipe(run_dir / runs.RECIPE)
        except RecipeError as e:
            raise RecipeError(e.source, e.problems + ([hint] if flags else [])) from None
        if flags:
            log(f"note: {hint}")
    if writer and "wandb" in recipe.train.loggers:
        check_wandb_login()  # before any run directory is made
    started = distributed.setup(recipe.train.device)  # joins torchrun's process group, if any
    try:
        if resume is None:  # rank 0 creates the run directory and tells the other ranks its path
            run_dir = distributed.broadcast_object(new_run_dir(runs_root, recipe) if writer else None)
        with runs.locked(run_dir) if writer else nullcontext(), StopSignals() as stop:
            trainer = None
            try:
                stop.setting_up = True  # a signal now stops at once: no step boundary, nothing to checkpoint
                trainer = Trainer(recipe, run_dir, resume=resume is not None, quiet=quiet, log=log, is_writer=writer,
                                  lines=not quiet and not terminal, accept_recipe_change=accept_recipe_change,
                                  on_eval=on_eval)
                stop.setting_up = False
                with TrainingProgress(trainer, disable=quiet or not terminal) as bar:
                    trainer.fit(on_step=lambda tr: (bar.update(tr), on_step and on_step(tr)), stop=stop)
                results = trainer.test()
            except (Exception, KeyboardInterrupt) as e:
                if writer and trainer is None and resume is None and is_input_error(e):
                    shutil.rmtree(run_dir, ignore_errors=True)  # nothing ran: leave no run directory
                elif writer:
                    record_failure(run_dir, recipe, e, trainer)
                raise
            finally:
                if trainer is not None:
                    close_all(trainer.loggers)
        return results
    finally:
        if started:  # DDP's reducer holds the process group: release it (and any cycle around it) before the group
            trainer = None  # is destroyed, so its threads stop there rather than at interpreter exit
            gc.collect()
            distributed.teardown()
