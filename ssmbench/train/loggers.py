"""Where training metrics go besides `metrics.jsonl`: plain log lines, TensorBoard event files and W&B.

Every logger receives the same rows, `log(split, metrics, step)`:

- `train`, `val`, `test`: the evaluation rows that `metrics.jsonl` also holds (train = mean over the steps since
  the previous evaluation);
- `progress`: every `train.log_every` steps, the running train loss (and accuracy), the learning rate, the
  throughput (samples/s) and the estimated time to the last step.

`train.loggers` picks TensorBoard (event files in the run directory, so `tensorboard --logdir runs/` shows every
run) and W&B (the optional extra `ssmbench[wandb]`; `WANDB_MODE=offline` keeps it off the network). Plain lines
are added by the engine when the output is not a terminal (nohup, Slurm), where no progress bar can be drawn.
Only the process that writes the run directory (rank 0 under torchrun) logs.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path
from typing import Callable, Protocol

from ssmbench.errors import SSMBenchError


class Logger(Protocol):
    def log(self, split: str, metrics: dict, step: int) -> None: ...

    def close(self) -> None: ...


def scalars(metrics: dict) -> dict[str, float]:
    """The numeric entries of a row (without booleans, the step and the evaluation's sample count `n`)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("n", "step")}


def clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class TextLines:
    """One plain line per progress row and per evaluation, for logs written to a file."""

    def __init__(self, name: str, total_steps: int, write: Callable[[str], None]):
        self.name, self.total, self.write = name, total_steps, write

    def log(self, split: str, metrics: dict, step: int) -> None:
        m = scalars(metrics)
        head = f"{self.name} step {step}/{self.total}"
        if split == "progress":
            acc = f" acc {m['accuracy']:.4f}" if "accuracy" in m else ""
            self.write(f"{head} epoch {int(m['epoch'])}: loss {m['loss']:.4f}{acc} lr {m['lr']:.3g} "
                       f"{m['samples_per_second']:.0f} samples/s elapsed {clock(m['seconds'])} ETA {clock(m['eta_seconds'])}")
        elif split in ("val", "test"):
            acc = f" acc {m['accuracy']:.4f}" if "accuracy" in m else ""
            self.write(f"{head} {split}: loss {m['loss']:.4f}{acc}")

    def close(self) -> None:
        pass


class TensorBoard:
    """Scalars `<split>/<metric>` in TensorBoard event files in the run directory.

    On resume from the checkpoint of step s, `purge_step = s + 1` makes TensorBoard drop the events logged after
    that checkpoint, which the resumed run logs again (as metrics.jsonl drops its rows).
    """

    def __init__(self, run_dir: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir), purge_step=start_step + 1 if start_step else None)

    def log(self, split: str, metrics: dict, step: int) -> None:
        for key, value in scalars(metrics).items():
            self.writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        self.writer.close()


class WandB:
    """A W&B run named after the run directory, with the resolved recipe as its config; its local files go to
    `<run_dir>/wandb/`. The W&B id is a hash of the run directory, so `--resume` continues the same W&B run."""

    def __init__(self, run_dir: Path, config: dict):
        import wandb

        run_id = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "ssmbench"), name=Path(run_dir).name,
                              id=run_id, resume="allow", dir=str(run_dir), config=config, tags=[config["name"]])

    def log(self, split: str, metrics: dict, step: int) -> None:
        self.run.log({f"{split}/{k}": v for k, v in scalars(metrics).items()}, step=step)

    def close(self) -> None:
        import wandb

        self.run.finish()
        wandb.teardown()  # waits for W&B's writer process, so the run's files are complete when training returns


def check_wandb_login(environ=os.environ) -> None:
    """Refuse `train.loggers: [wandb]` before a run directory exists unless W&B can start without a prompt: an
    API key in $WANDB_API_KEY or in the netrc file (`wandb login` writes it there; $NETRC moves it), or
    $WANDB_MODE offline/disabled. Otherwise wandb.init would end the run with a UsageError traceback."""
    import netrc
    from urllib.parse import urlparse

    if environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun") or environ.get("WANDB_API_KEY"):
        return
    host = urlparse(environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(environ.get("NETRC") or Path.home() / ".netrc")
    try:
        if path.is_file() and netrc.netrc(str(path)).authenticators(host):
            return
    except (netrc.NetrcParseError, OSError):
        pass
    raise SSMBenchError(f"train.loggers: wandb needs a W&B login and none was found (no $WANDB_API_KEY, no {host} "
                        f"entry in {path}): run `wandb login`, or set WANDB_MODE=offline to log locally "
                        f"(`wandb sync` uploads later), or remove wandb from train.loggers")


def build_loggers(names: list[str], run_dir: Path, config: dict, start_step: int) -> list[Logger]:
    """The loggers named in `train.loggers` for a run starting (or resuming) at `start_step`."""
    out: list[Logger] = []
    try:
        for name in names:
            out.append(TensorBoard(run_dir, start_step) if name == "tensorboard" else WandB(run_dir, config))
    except ImportError as e:
        close_all(out)
        raise SSMBenchError(f"train.loggers: cannot start '{name}' ({e}); `pip install {name}`, or remove it") from None
    return out


def close_all(loggers: list[Logger]) -> None:
    for lg in loggers:
        lg.close()
