"""A rich progress bar for training: step, epoch, running loss/accuracy and throughput."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


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
