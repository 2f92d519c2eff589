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
next step boundary with a checkpoint, results.json status "preempted" and exit status 75 (`Preempted`). A
non-finite loss or gradient stops the run (NonFiniteError, exit 3) or, with `train.on_nonfinite: skip`, drops
that update. A run directory is locked while a process trains in it (`runs.locked`).

An input error found while a new run is set up (data, `budget.check`, init) removes its run directory, so a
run that never started leaves no record.
"""

from __future__ import annotations

import math
import random
import shutil
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from ssmbench import runs
from ssmbench.data import DataBundle, build_data
from ssmbench.errors import NonFiniteError, SSMBenchError
from ssmbench.init import apply_init
from ssmbench.models.backbone import SequenceModel
from ssmbench.recipe import Recipe, load_recipe
from ssmbench.train import budget, checkpoint, distributed
from ssmbench.train.optim import build_optimizer, cosine_with_warmup


# --------------------------------------------------------------------------------------------------
# Device, precision, seeding


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SSMBenchError(f"train.device: '{name}' requested but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = fp32). auto: bf16 on CUDA when supported, else fp32. fp16 needs CUDA."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if precision == "fp16" and device.type != "cuda":
        raise SSMBenchError("train.precision: 'fp16' needs a CUDA device; on the CPU use 'fp32' or 'bf16'")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


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
    total, loss_sum, correct = 0, 0.0, 0
    for i, (x, y) in enumerate(data):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = model(x)
        loss, c = loss_and_correct(task, out, y)
        loss_sum += loss.item() * len(x)
        correct += int(c) if c is not None else 0
        total += len(x)
    model.train()
    loss_sum, correct, total = distributed.all_reduce_sum([loss_sum, correct, total])  # each rank saw a shard
    correct, total = round(correct), round(total)
    metrics = {"loss": loss_sum / max(total, 1), "n": total}
    if task == "classification":
        metrics["accuracy"] = correct / max(total, 1)
    return metrics


def better(task: str, new: dict, best: dict | None) -> bool:
    if best is None:
        return True
    if task == "classification":
        return new["accuracy"] > best["accuracy"]
    return new["loss"] < best["loss"]


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    bad = []
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            bad.append(f"{name} (value)")
        elif p.grad is not None and not torch.isfinite(p.grad).all():
            bad.append(f"{name} (gradient)")
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


class Preempted(SSMBenchError):
    """SIGTERM/SIGINT stopped training at a step boundary after writing last.pt; the run can be resumed."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): temporary failure, try again


class StopSignals:
    """Turn SIGTERM and SIGINT into a request to stop at the next step boundary (checkpoint, then Preempted).

    A second signal aborts at once (KeyboardInterrupt; the last checkpoint stays valid). Handlers can only be
    installed in the main thread; elsewhere the signals keep their default behaviour.
    """

    def __init__(self):
        self.received: str | None = None
        self.previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def build_model(recipe: Recipe, bundle: DataBundle) -> torch.nn.Module:
    return SequenceModel(recipe.model, recipe.init.name, bundle.io)


class Trainer:
    def __init__(self, recipe: Recipe, run_dir: Path, resume: bool = False, quiet: bool = False,
                 log: Callable[[str], None] = print, is_writer: bool = True):
        self.recipe, self.run_dir, self.quiet, self.log, self.is_writer = recipe, Path(run_dir), quiet, log, is_writer
        t = recipe.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = distributed.local_device(resolve_device(t.device))
        self.rank, self.world = distributed.rank(), distributed.world_size()
        if t.batch_size < self.world or (t.eval_batch_size or t.batch_size) < self.world:
            raise SSMBenchError(f"train.batch_size / train.eval_batch_size: the global batch is split across "
                                f"{self.world} processes, so it must be at least {self.world}")
        self.amp = resolve_precision(t.precision, self.device)
        seed_everything(recipe.seed)
        self.data = build_data(recipe.data)
        self.task = self.data.task
        budget.check(recipe, self.data, self.device, self.amp, self.world)
        self.model = distributed.prepare(build_model(recipe, self.data), self.device).to(self.device)
        self.init_facts = apply_init(self.model, recipe.init, {"data": self.data, "recipe": recipe, "log": log})
        if t.compile:  # nn.Module.compile works in place: same parameters, same state-dict keys
            for block in self.model.blocks:
                block.compile()
        self.optimizer = build_optimizer(self.model, t.lr, t.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.data.train) / t.batch_size)
        total = self.steps_per_epoch * t.epochs
        self.total_steps = min(total, t.max_steps) if t.max_steps else total
        self.scheduler = cosine_with_warmup(self.optimizer, t.warmup_steps, self.total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.progress = Progress()
        self.ckpt_dir = self.run_dir / runs.CHECKPOINTS
        self.saved_step: int | None = None  # step of the newest last.pt (named by the non-finite guard)
        if resume:
            self._restore()
        elif is_writer:
            self._start_record()
        self.ddp = distributed.wrap(self.model, self.device)  # steps run through DDP; state dicts use self.model

    # ---- run record -------------------------------------------------------------------------------

    def _start_record(self) -> None:
        runs.atomic_write_text(self.run_dir / runs.RECIPE, self.recipe.to_yaml())
        env = runs.environment(str(self.device))
        env.update({"precision": str(self.amp).replace("torch.", "") if self.amp else "fp32",
                    "data": {"source": self.data.source, "provenance": self.data.provenance,
                             "sizes": self.data.sizes(), "seq_len": self.data.seq_len, **self.data.facts},
                    "init": self.init_facts, "n_params": sum(p.numel() for p in self.model.parameters()),
                    "distributed": distributed.facts(self.model, self.device, self.recipe.train.batch_size)})
        runs.atomic_write_json(self.run_dir / runs.ENV, env)
        checkpoint.save(self.ckpt_dir / "init.pt", {"model": self.model.state_dict()})

    def _state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_state(), "progress": asdict(self.progress)}

    def save_last(self) -> None:
        if self.is_writer:
            checkpoint.save(self.ckpt_dir / checkpoint.LAST, self._state(), keep_previous=True)
        self.saved_step = self.progress.step

    def _restore(self) -> None:
        """Continue from the newest good checkpoint (last.pt, else prev.pt); with none written yet, start over."""
        if self.is_writer:
            for f in runs.remove_temp_files(self.ckpt_dir) + runs.remove_temp_files(self.run_dir):
                self.log(f"removed {f}, a partial file left by the interrupted process")
        found = checkpoint.load_latest(self.ckpt_dir, warn=self.log)
        if found is None:
            self.log(f"{self.run_dir}: no checkpoint was written before the interruption; starting the run over")
            if self.is_writer:
                self._start_record()
        else:
            state, path = found
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            self.progress = Progress(**state["progress"])
            self.saved_step = self.progress.step
            self.log(f"resuming {self.run_dir} from {path.name} at step {self.progress.step} (epoch {self.progress.epoch})")
        if self.is_writer:  # lines written after the checkpoint (and a torn last line) are produced again
            rows = runs.read_jsonl(self.run_dir / runs.METRICS)
            runs.rewrite_jsonl(self.run_dir / runs.METRICS, rows[:self.progress.metrics_rows])

    def log_metrics(self, split: str, metrics: dict) -> None:
        row = {"step": self.progress.step, "epoch": self.progress.epoch, "split": split,
               **{k: v for k, v in metrics.items() if k != "n"}, "seconds": round(self.progress.seconds, 3),
               "lr": self.optimizer.param_groups[0]["lr"]}
        if self.is_writer:
            runs.append_jsonl(self.run_dir / runs.METRICS, row)
        self.progress.metrics_rows += 1

    # ---- training ---------------------------------------------------------------------------------

    def eval_loader(self, dataset: Dataset) -> DataLoader:
        t = self.recipe.train
        sampler = EpochBatches(len(dataset), t.eval_batch_size or t.batch_size, 0, 0, shuffle=False,
                               rank=self.rank, world=self.world, filler=False)
        return loader(dataset, sampler, self.recipe.data.num_workers, self.device)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, share: tuple[int, int] | None = None) -> None:
        """One optimizer step on this rank's shard. `share` = (samples of the shard that count, samples in the
        global batch), default (len(x), len(x)). The mean loss is scaled by world * share[0] / share[1], so
        DDP's gradient average is the mean over the global batch (distributed.py); logged sums are reduced."""
        t, p = self.recipe.train, self.progress
        mine, total = share or (len(x), len(x))
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            out = self.ddp(x)
        loss, correct = loss_and_correct(self.task, out, y)
        loss_sum, n_correct = distributed.all_reduce_sum([loss.item() * mine, int(correct) if correct is not None and mine else 0])
        self.optimizer.zero_grad(set_to_none=True)
        problem = None if math.isfinite(loss_sum) else f"loss is {loss_sum / total}"
        if problem is None:
            self.scaler.scale(loss * (self.world * mine / total)).backward()
            self.scaler.unscale_(self.optimizer)
            params = [q for q in self.model.parameters() if q.grad is not None]
            grad_norm = torch.nn.utils.get_total_norm([q.grad for q in params])
            if torch.isfinite(grad_norm):  # = clip_grad_norm_, split so a bad gradient is reported unclipped
                torch.nn.utils.clip_grads_with_norm_(params, t.grad_clip or float("inf"), grad_norm)
            elif self.amp != torch.float16:  # fp16: the scaler skips such steps
                problem = f"gradient norm is {grad_norm.item()}"
        if problem is None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            p.train_loss_sum += loss_sum
            p.train_correct += round(n_correct)
            p.train_seen += total
        else:
            self._nonfinite(problem)  # raises unless train.on_nonfinite is skip
            p.skipped_steps += 1
        self.scheduler.step()
        p.step += 1
        p.batch_in_epoch += 1
        p.samples += total

    def _nonfinite(self, what: str) -> None:
        """A non-finite loss or gradient at the coming step. `train.on_nonfinite: skip` drops the update (the step
        and the lr schedule still advance) unless the parameters themselves are non-finite, which no later step
        can repair; otherwise NonFiniteError names the step, the parameters and the last good checkpoint."""
        step, bad = self.progress.step + 1, nonfinite_parameters(self.model)
        values_finite = all(torch.isfinite(q).all() for q in self.model.parameters())
        if self.recipe.train.on_nonfinite == "skip" and values_finite:
            self.log(f"warning: step {step}: {what}; update skipped (train.on_nonfinite: skip)")
            return
        last = self.ckpt_dir / checkpoint.LAST
        where = (f"last good checkpoint: {last} (step {self.saved_step})" if self.saved_step is not None
                 else "no checkpoint was written yet")
        raise NonFiniteError(f"non-finite training at step {step}: {what}; "
                             f"non-finite parameters: {', '.join(bad[:8]) or 'none (the loss itself overflowed)'}; "
                             f"{where}. Start again with a lower train.lr, a train.grad_clip, "
                             f"or train.on_nonfinite: skip.")

    def run_eval(self) -> None:
        p = self.progress
        if p.train_seen:
            train_metrics = {"loss": p.train_loss_sum / p.train_seen}
            if self.task == "classification":
                train_metrics["accuracy"] = p.train_correct / p.train_seen
            self.log_metrics("train", train_metrics)
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

    def fit(self, on_step: Callable[["Trainer"], None] | None = None, stop: StopSignals | None = None) -> None:
        """Train to `total_steps`. A signal caught by `stop` ends training at the next step boundary, after
        writing last.pt, with Preempted."""
        t, p = self.recipe.train, self.progress
        self.model.train()
        while p.step < self.total_steps:
            sampler = EpochBatches(len(self.data.train), t.batch_size, self.recipe.seed, p.epoch, start=p.batch_in_epoch,
                                   rank=self.rank, world=self.world)
            tick = time.perf_counter()
            for x, y in loader(self.data.train, sampler, self.recipe.data.num_workers, self.device):
                self.train_step(x, y, sampler.share(p.batch_in_epoch))
                done = p.step >= self.total_steps
                end_of_epoch = p.batch_in_epoch >= self.steps_per_epoch
                if end_of_epoch:
                    p.epoch, p.batch_in_epoch = p.epoch + 1, 0
                now = time.perf_counter()
                p.seconds += now - tick
                tick = now
                if on_step:
                    on_step(self)
                evaluate_now = end_of_epoch if t.eval_every is None else p.step % t.eval_every == 0
                if evaluate_now or done:
                    self.run_eval()
                if evaluate_now or done or (t.checkpoint_every and p.step % t.checkpoint_every == 0):
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

    @staticmethod
    def stop_requested(stop: StopSignals | None) -> bool:
        """Whether any rank caught a stop signal (all ranks must stop at the same step)."""
        return stop is not None and distributed.all_reduce_sum([stop.received is not None])[0] > 0

    def test(self) -> dict[str, Any]:
        """Evaluate the best checkpoint (by validation) on the test split; return and write results.json."""
        best = self.ckpt_dir / "best.pt"
        distributed.barrier()  # rank 0 has finished writing best.pt
        if best.exists():
            self.model.load_state_dict(checkpoint.load(best)["model"])
        test = evaluate(self.model, self.eval_loader(self.data.test), self.task, self.device, self.amp,
                        self.recipe.train.max_eval_batches)
        self.log_metrics("test", test)
        p = self.progress
        results = {
            "status": "finished", "name": self.recipe.name, "run_dir": str(self.run_dir), "task": self.task,
            "test": test, "best_val": p.best_val, "best_step": p.best_step, "steps": p.step, "epochs": p.epoch,
            "samples": p.samples, "skipped_steps": p.skipped_steps, "train_seconds": round(p.seconds, 3),
            "samples_per_second": round(p.samples / p.seconds, 2) if p.seconds else None,
            "data_source": self.data.source, "n_params": sum(q.numel() for q in self.model.parameters()),
        }
        if self.is_writer:
            runs.atomic_write_json(self.run_dir / runs.RESULTS, results)
        distributed.barrier()  # no rank leaves (and tears down the process group) before results.json exists
        return results


def record_failure(run_dir: Path, recipe: Recipe, error: BaseException, trainer: Trainer | None = None) -> None:
    """results.json of a run that did not finish: status "preempted" (a signal; resumable) or "failed", the
    error, the step reached and the last checkpoint. Best effort: a full disk must not hide the original error."""
    record = {"status": "preempted" if isinstance(error, (Preempted, KeyboardInterrupt)) else "failed",
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


def is_input_error(error: BaseException) -> bool:
    """A user-input error (bad data, recipe or checkpoint; exit 2), not an interruption or a failure of training."""
    return isinstance(error, SSMBenchError) and error.exit_code == SSMBenchError.exit_code


def train(recipe: Recipe | None = None, runs_root: str | Path = "runs", resume: str | Path | None = None,
          quiet: bool = False, log: Callable[[str], None] = print, on_step=None) -> dict[str, Any]:
    """Train a recipe into a new run directory under `runs_root`, or continue `resume`; return results.json."""
    from ssmbench.progress import TrainingProgress

    writer = distributed.is_main_process()  # under torchrun only rank 0 writes and prints
    if not writer:
        quiet, log = True, (lambda *_: None)
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / runs.RECIPE).is_file():
            raise SSMBenchError(f"{run_dir}: not a run directory (no {runs.RECIPE}); pass the folder under runs/ to resume")
        done = runs.read_json(run_dir / runs.RESULTS)
        if done and done.get("status") == "finished":
            log(f"{run_dir} has already finished; nothing to resume")
            return done
        recipe = load_recipe(run_dir / runs.RECIPE)
    started = distributed.setup(recipe.train.device)  # joins torchrun's process group, if any
    try:
        if resume is None:  # rank 0 creates the run directory and tells the other ranks its path
            run_dir = distributed.broadcast_object(runs.create_run_dir(Path(runs_root), recipe.name) if writer else None)
        with runs.locked(run_dir) if writer else nullcontext(), StopSignals() as stop:
            trainer = None
            try:
                trainer = Trainer(recipe, run_dir, resume=resume is not None, quiet=quiet, log=log, is_writer=writer)
                with TrainingProgress(trainer, disable=quiet) as bar:
                    trainer.fit(on_step=lambda tr: (bar.update(tr), on_step and on_step(tr)), stop=stop)
                results = trainer.test()
            except (Exception, KeyboardInterrupt) as e:
                if writer and trainer is None and resume is None and is_input_error(e):
                    shutil.rmtree(run_dir, ignore_errors=True)  # nothing ran: leave no run directory
                elif writer:
                    record_failure(run_dir, recipe, e, trainer)
                raise
        return results
    finally:
        if started:
            distributed.teardown()
