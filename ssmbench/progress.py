"""What a run says while it works: a rich progress bar for training (step, epoch, running loss/accuracy and
throughput), a line as each phase before it starts (`phase_lines`), so a log file (nohup, Slurm) is never silent
while data is prepared or an initialization is fitted, and a display for downloads (size, rate, ETA) with plain
lines in its place off a terminal."""

from __future__ import annotations

import contextlib
import time
from typing import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def plural(n: int, word: str) -> str:
    """`1 epoch`, `3 epochs`, `1,000 steps`."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def phase_lines(name: str, log: Callable[[str], None], enabled: bool) -> Callable[[str], None]:
    """`say(what)` writes `<name>: <what>` with the time of day when `enabled` (not quiet, the writing rank)."""
    def say(what: str) -> None:
        if enabled:
            log(f"{time.strftime('%H:%M:%S')} {name}: {what}")
    return say


class TrainingProgress:
    def __init__(self, trainer, disable: bool = False):
        self.trainer = trainer
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            disable=disable, transient=False)

    def __enter__(self) -> "TrainingProgress":
        self.bar.__enter__()
        p = self.trainer.progress
        self.task = self.bar.add_task(self.trainer.recipe.name, total=self.trainer.total_steps, completed=p.step, stats="")
        return self

    def update(self, trainer) -> None:
        p = trainer.progress
        stats = f"epoch {p.epoch}"
        if p.train_seen:
            stats += f" loss {p.train_loss_sum / p.train_seen:.4f}"
            if trainer.task == "classification":
                stats += f" acc {p.train_correct / p.train_seen:.3f}"
        if p.best_val is not None:
            key = "accuracy" if trainer.task == "classification" else "loss"
            stats += f" best val {key} {p.best_val[key]:.4f}"
        if p.seconds:
            stats += f" {p.samples / p.seconds:.0f} samples/s"
        self.bar.update(self.task, completed=p.step, stats=stats)

    def __exit__(self, *exc) -> None:
        self.update(self.trainer)  # the last evaluation comes after the last step's update
        self.bar.__exit__(*exc)


class TransferLines:
    """Progress of a transfer off a terminal: a plain line at every tenth of the total (every `every_bytes` when
    the total is unknown) with bytes done, rate and time left."""

    def __init__(self, what: str, log, every_bytes: int = 100 * 1000 ** 2):
        self.what, self.log, self.every_bytes = what, log, every_bytes
        self.start = self.first = None
        self.next = 0

    def __call__(self, done: int, total: int | None) -> None:
        from rich.filesize import decimal

        now = time.monotonic()
        if self.start is None:
            self.start, self.first = now, done
            self.next = done
        if done < self.next and done != total:
            return
        self.next = done + (total // 10 if total else self.every_bytes)
        rate = (done - self.first) / max(now - self.start, 1e-9)
        size = f"{decimal(done)} of {decimal(total)} ({done / total:.0%})" if total else decimal(done)
        left = f", {(total - done) / rate:.0f} s left" if total and rate > 0 else ""
        self.log(f"{self.what}: {size}, {decimal(int(rate))}/s{left}" if done > self.first else f"{self.what}: {size}")


@contextlib.contextmanager
def transfer(what: str, console):
    """A `progress(done, total)` callable for a download: a rich bar with size, rate and ETA on a terminal,
    `TransferLines` to `console.print` off it."""
    if not console.is_terminal:
        yield TransferLines(what, console.print)
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    with Progress(TextColumn(f"[bold]{what}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
