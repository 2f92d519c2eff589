"""The training engine: one loop from a validated recipe to a complete run record.

    data -> model -> init -> AdamW (param groups) + cosine/warmup -> [train steps, eval on val, checkpoint]*
         -> test with the best checkpoint -> results.json

Resume (`--resume RUN_DIR`) restores model, optimizer, scheduler, grad scaler, RNG states and the position in
the epoch's data order (which is a pure function of seed and epoch), so a resumed run equals an uninterrupted
one on the CPU. Only rank 0 writes files (`is_writer`), so DDP can slot in.
"""

from __future__ import annotations

import math
import random
import time
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
from ssmbench.train import checkpoint
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
    `rank`/`world` take every world-th batch (for data-parallel training).
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True, start: int = 0,
                 rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.start, self.rank, self.world = n, batch_size, start, rank, world
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        self.order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)

    def __len__(self) -> int:
        return max(0, math.ceil(self.n / self.batch_size) - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(self.start, math.ceil(self.n / self.batch_size)):
            yield self.order[b * self.batch_size:(b + 1) * self.batch_size].tolist()


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
    extra: dict = field(default_factory=dict)


def build_model(recipe: Recipe, bundle: DataBundle) -> torch.nn.Module:
    return SequenceModel(recipe.model, recipe.init.name, bundle.io)


class Trainer:
    def __init__(self, recipe: Recipe, run_dir: Path, resume: bool = False, quiet: bool = False,
                 log: Callable[[str], None] = print, is_writer: bool = True):
        self.recipe, self.run_dir, self.quiet, self.log, self.is_writer = recipe, Path(run_dir), quiet, log, is_writer
        t = recipe.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = resolve_device(t.device)
        self.amp = resolve_precision(t.precision, self.device)
        seed_everything(recipe.seed)
        self.data = build_data(recipe.data)
        self.task = self.data.task
        self.model = build_model(recipe, self.data).to(self.device)
        self.init_facts = apply_init(self.model, recipe.init, {"data": self.data, "recipe": recipe, "log": log})
        self.optimizer = build_optimizer(self.model, t.lr, t.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.data.train) / t.batch_size)
        total = self.steps_per_epoch * t.epochs
        self.total_steps = min(total, t.max_steps) if t.max_steps else total
        self.scheduler = cosine_with_warmup(self.optimizer, t.warmup_steps, self.total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.progress = Progress()
        self.ckpt_dir = self.run_dir / runs.CHECKPOINTS
        if resume:
            self._restore()
        elif is_writer:
            self._start_record()

    # ---- run record -------------------------------------------------------------------------------

    def _start_record(self) -> None:
        runs.atomic_write_text(self.run_dir / runs.RECIPE, self.recipe.to_yaml())
        env = runs.environment(str(self.device))
        env.update({"precision": str(self.amp).replace("torch.", "") if self.amp else "fp32",
                    "data": {"source": self.data.source, "provenance": self.data.provenance,
                             "sizes": self.data.sizes(), "seq_len": self.data.seq_len, **self.data.facts},
                    "init": self.init_facts, "n_params": sum(p.numel() for p in self.model.parameters())})
        runs.atomic_write_json(self.run_dir / runs.ENV, env)
        checkpoint.save(self.ckpt_dir / "init.pt", {"model": self.model.state_dict()})

    def _state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_state(), "progress": asdict(self.progress)}

    def save_last(self) -> None:
        if self.is_writer:
            checkpoint.save(self.ckpt_dir / "last.pt", self._state(), keep_previous=True)

    def _restore(self) -> None:
        state, path = checkpoint.load_latest(self.ckpt_dir, warn=self.log)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.progress = Progress(**state["progress"])
        if self.is_writer:  # drop metric lines written after this checkpoint; they will be produced again
            rows = runs.read_jsonl(self.run_dir / runs.METRICS)
            runs.rewrite_jsonl(self.run_dir / runs.METRICS, [r for r in rows if r["step"] <= self.progress.step])
        self.log(f"resuming {self.run_dir} from {path.name} at step {self.progress.step} (epoch {self.progress.epoch})")

    def log_metrics(self, split: str, metrics: dict) -> None:
        row = {"step": self.progress.step, "epoch": self.progress.epoch, "split": split,
               **{k: v for k, v in metrics.items() if k != "n"}, "seconds": round(self.progress.seconds, 3),
               "lr": self.optimizer.param_groups[0]["lr"]}
        if self.is_writer:
            runs.append_jsonl(self.run_dir / runs.METRICS, row)

    # ---- training ---------------------------------------------------------------------------------

    def eval_loader(self, dataset: Dataset) -> DataLoader:
        t = self.recipe.train
        sampler = EpochBatches(len(dataset), t.eval_batch_size or t.batch_size, 0, 0, shuffle=False)
        return loader(dataset, sampler, self.recipe.data.num_workers, self.device)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        t, p = self.recipe.train, self.progress
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            out = self.model(x)
        loss, correct = loss_and_correct(self.task, out, y)
        if not torch.isfinite(loss):
            self._nonfinite(f"loss is {loss.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip or float("inf"))
        if not torch.isfinite(grad_norm) and self.amp != torch.float16:  # fp16: the scaler skips such steps
            self._nonfinite(f"gradient norm is {grad_norm.item()}")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        p.step += 1
        p.batch_in_epoch += 1
        p.samples += len(x)
        p.train_loss_sum += loss.item() * len(x)
        p.train_correct += int(correct) if correct is not None else 0
        p.train_seen += len(x)

    def _nonfinite(self, what: str) -> None:
        bad = nonfinite_parameters(self.model)
        last = self.ckpt_dir / "last.pt"
        where = f"last good checkpoint: {last} (resume with `ssmbench train --resume {self.run_dir}`)" if last.exists() \
            else "no checkpoint was written yet"
        raise NonFiniteError(f"non-finite training at step {self.progress.step + 1}: {what}; "
                             f"non-finite parameters: {', '.join(bad[:8]) or 'none (the loss itself overflowed)'}; "
                             f"{where}. Try a lower train.lr or train.grad_clip.")

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

    def fit(self, on_step: Callable[["Trainer"], None] | None = None) -> None:
        t, p = self.recipe.train, self.progress
        self.model.train()
        while p.step < self.total_steps:
            sampler = EpochBatches(len(self.data.train), t.batch_size, self.recipe.seed, p.epoch, start=p.batch_in_epoch)
            tick = time.perf_counter()
            for x, y in loader(self.data.train, sampler, self.recipe.data.num_workers, self.device):
                self.train_step(x, y)
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
                tick = time.perf_counter()
                if done or end_of_epoch:
                    break

    def test(self) -> dict[str, Any]:
        """Evaluate the best checkpoint (by validation) on the test split; return and write results.json."""
        best = self.ckpt_dir / "best.pt"
        if best.exists():
            self.model.load_state_dict(checkpoint.load(best)["model"])
        test = evaluate(self.model, self.eval_loader(self.data.test), self.task, self.device, self.amp,
                        self.recipe.train.max_eval_batches)
        self.log_metrics("test", test)
        p = self.progress
        results = {
            "status": "finished", "name": self.recipe.name, "run_dir": str(self.run_dir), "task": self.task,
            "test": test, "best_val": p.best_val, "best_step": p.best_step, "steps": p.step, "epochs": p.epoch,
            "samples": p.samples, "train_seconds": round(p.seconds, 3),
            "samples_per_second": round(p.samples / p.seconds, 2) if p.seconds else None,
            "data_source": self.data.source, "n_params": sum(q.numel() for q in self.model.parameters()),
        }
        if self.is_writer:
            runs.atomic_write_json(self.run_dir / runs.RESULTS, results)
        return results


def record_failure(run_dir: Path, recipe: Recipe, error: BaseException, status: str = "failed") -> None:
    runs.atomic_write_json(Path(run_dir) / runs.RESULTS, {"status": status, "name": recipe.name,
                                                          "error": f"{type(error).__name__}: {error}"})


def train(recipe: Recipe | None = None, runs_root: str | Path = "runs", resume: str | Path | None = None,
          quiet: bool = False, log: Callable[[str], None] = print, on_step=None) -> dict[str, Any]:
    """Train a recipe into a new run directory under `runs_root`, or continue `resume`; return results.json."""
    from ssmbench.progress import TrainingProgress

    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / runs.RECIPE).is_file():
            raise SSMBenchError(f"{run_dir}: not a run directory (no {runs.RECIPE}); pass the folder under runs/ to resume")
        done = runs.read_json(run_dir / runs.RESULTS)
        if done and done.get("status") == "finished":
            log(f"{run_dir} has already finished; nothing to resume")
            return done
        recipe = load_recipe(run_dir / runs.RECIPE)
    else:
        run_dir = runs.create_run_dir(Path(runs_root), recipe.name)
    trainer = Trainer(recipe, run_dir, resume=resume is not None, quiet=quiet, log=log)
    try:
        with TrainingProgress(trainer, disable=quiet) as bar:
            trainer.fit(on_step=lambda tr: (bar.update(tr), on_step and on_step(tr)))
        results = trainer.test()
    except Exception as e:
        record_failure(run_dir, recipe, e)
        raise
    return results
