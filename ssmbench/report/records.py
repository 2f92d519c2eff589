"""Run directories -> plain records, the only input of `ssmbench report` (it never imports the training engine).

A run directory (see `ssmbench.runs`) holds recipe.yaml, env.json, metrics.jsonl, results.json and checkpoints/.
Its status is read from results.json:

    finished   results.json status "finished"                   -> goes into the tables
    failed     results.json status "failed" (with its error)    -> listed separately
    preempted  results.json status "preempted"                   -> listed separately (a sweep resumes it)
    running    no results.json, a process holds the run's lock  -> listed separately (training now)
    interrupted no results.json, checkpoints/last.pt exists     -> listed separately (a sweep resumes it)
    incomplete no results.json, no last.pt                       -> listed separately

Only finished runs are ever averaged. A runs folder may hold anything, so every file is read as untrusted, by
`finished.read_run_files`, the definition of a valid run that `sweep` uses too (ssmbench/finished.py: the reading
rule of ssmbench/safe_read.py, then the record schema and possible test values); a run directory that fails is
skipped with a one-line warning naming the file (the next `sweep` trains it again), and dropped metric lines are
counted in a warning.

The SSM parameters of a run (docs/methods.md §A: A = -f(A_re) + i A_im, B, C, D)
are read from checkpoints/init.pt and the final weights for the parameter-change table and the pole plot.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ssmbench import runs
from ssmbench.errors import RecordError
from ssmbench.finished import FINISHED, REAL_TRANSFORMS, read_run_files  # noqa: F401 (REAL_TRANSFORMS: tests)

Warn = Callable[[str], None]


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 (but tab and line feed), DEL and C1 controls


def printable(text: str) -> str:
    """`text` with every control character written as a visible escape (`\\x1b`), so that a name, tag or error
    message taken from a run record can never drive the terminal (escape sequences that move the cursor, rewrite
    the title or hide lines)."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def warn_stderr(message: str) -> None:
    print(f"warning: {printable(message)}", file=sys.stderr)


@dataclass
class RunRecord:
    """What the report needs from one run directory, as plain Python values."""

    run_dir: Path
    name: str
    tags: dict[str, str]
    task: str  # data.name of the resolved recipe
    kind: str  # "classification" | "regression" (results.json "task"; "classification" until known)
    status: str
    detail: str  # error message or progress note for runs that are not finished
    source: str  # official | embedded-subset | generated | synthetic | unknown
    seed: Optional[int]
    train_fraction: float
    test: dict[str, float] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    def label(self, group_by: str = "variant") -> str:
        """The row identity of this run: tag `group_by` (e.g. the sweep's `variant`), else the recipe name."""
        return self.tags.get(group_by) or self.name

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    def coverage(self, split: str) -> tuple[Optional[int], Optional[int]]:
        """(samples evaluated, samples in the split) of the final `split` ("test") or of the validation evaluations
        ("val"), from results.json `evaluation`; for test, records older than that field give results.json test.n
        and env.json data.sizes.test. None where a run does not record it."""
        ev = ((self.results.get("evaluation") or {}).get(split) or {}) if isinstance(self.results, dict) else {}
        n, size = ev.get("n"), ev.get("size")
        if not ev and split == "test":
            n = (self.results.get("test") or {}).get("n")
            size = ((self.env.get("data") or {}).get("sizes") or {}).get("test")
        return (n if isinstance(n, int) else None), (size if isinstance(size, int) else None)

    def curve(self, split: str, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of metric `key` on `split` from metrics.jsonl, in file order."""
        rows = [r for r in self.metrics if r.get("split") == split and r.get(key) is not None]
        return [r["step"] for r in rows], [float(r[key]) for r in rows]


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories at or below `paths`: folders holding recipe.yaml or results.json (sorted, unique)."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            from ssmbench.errors import SSMBenchError

            raise SSMBenchError(f"{p}: no such runs folder; pass the folder that holds run directories (e.g. runs/)")
        for marker in (runs.RECIPE, runs.RESULTS):  # any kind of file: a FIFO named results.json is reported
            found.update(f.parent for f in p.rglob(marker) if runs.CHECKPOINTS not in f.parent.parts)
            if (p / marker).exists() or (p / marker).is_symlink():
                found.add(p)
    return sorted(found)


def is_locked(run_dir: Path) -> bool:
    """Whether a process holds the run directory's training lock (`runs.locked`) right now."""
    import fcntl

    try:  # non-blocking: a FIFO named .lock must not hang the report
        f = os.fdopen(os.open(Path(run_dir) / runs.LOCK, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "r")
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _status(run_dir: Path, results: dict | None, metrics: list[dict]) -> tuple[str, str]:
    if results is not None:
        status = str(results.get("status", "unknown"))
        return status, str(results.get("error", "")) if status != FINISHED else ""
    step = max((r.get("step", 0) for r in metrics), default=0)
    if is_locked(run_dir):
        return "running", f"training now; metrics up to step {step}"
    if (run_dir / runs.CHECKPOINTS / "last.pt").exists():
        return "interrupted", f"no results.json; last.pt written, metrics up to step {step}; resumable"
    return "incomplete", "no results.json and no checkpoint"


def read_run(run_dir: Path, warn: Warn = warn_stderr) -> RunRecord:
    """Read one run directory into a RunRecord; missing files give a record with what is known.

    RecordError (naming the file) if a file is present but not a valid record; dropped metric lines (a torn last
    line after a crash, or damage) are reported through `warn`.
    """
    run_dir = Path(run_dir)
    files = read_run_files(run_dir)
    recipe, env, results, kept, dropped = files.recipe, files.env, files.results, files.metrics, files.dropped
    if dropped:
        warn(f"{run_dir / runs.METRICS}: {dropped} corrupt line(s) dropped (torn by a crash, or damaged); "
             f"{len(kept)} kept")
    status, detail = _status(run_dir, results, kept)
    data = recipe.get("data") or {}
    source = (results or {}).get("data_source") or (env.get("data") or {}).get("source") or "unknown"
    test = (results or {}).get("test") or {} if status == FINISHED else {}
    return RunRecord(
        run_dir=run_dir, name=str(recipe.get("name") or (results or {}).get("name") or run_dir.name),
        tags={str(k): str(v) for k, v in (recipe.get("tags") or {}).items()},
        task=str(data.get("name", "?")), kind=str((results or {}).get("task") or "classification"),
        status=status, detail=detail, source=str(source), seed=recipe.get("seed"),
        train_fraction=float(data.get("train_fraction", 1.0)),
        test={k: float(v) for k, v in test.items() if isinstance(v, (int, float))},
        recipe=recipe, env=env, metrics=kept, results=results or {},
    )


def read_runs(paths: list[Path], warn: Warn = warn_stderr) -> list[RunRecord]:
    """The records of every run directory under `paths`; a damaged one is skipped with a warning naming the file."""
    records = []
    for d in find_run_dirs(paths):
        try:
            records.append(read_run(d, warn))
        except RecordError as e:
            warn(f"{e}; run skipped")
    return records


# --------------------------------------------------------------------------------------------------
# SSM parameters from checkpoints (parameter-change table, pole plot)


def final_checkpoint(run_dir: Path) -> Optional[Path]:
    """The weights at the end of training: best.pt if present, else last.pt (None if neither exists)."""
    for name in ("best.pt", "last.pt"):
        path = Path(run_dir) / runs.CHECKPOINTS / name
        if path.exists():
            return path
    return None


def ssm_parameters(state: dict, real_transform: str = "exp") -> Optional[dict[str, np.ndarray]]:
    """Re(A), Im(A), B*C and D of every S4D layer of a model state dict, each flattened over layers (float64).

    Keys `blocks.<i>.layer.{A_re, A_im, B, C, D, linear_real}`: Re A = -f(A_re) with f the recipe's
    `model.ssm.real_transform`, and Re A = -A_re on `linear_real` channels; B (n_ssm, M, 2) and C (c, H, M, 2) are
    view_as_real of complex tensors and B*C is the (c, H, M) product (channel h with B row h mod n_ssm). None if the model has no S4D layer.
    """
    import torch

    from ssmbench.models.s4d import REAL_TRANSFORMS

    prefixes = sorted({k[: -len("A_re")] for k in state if k.endswith("layer.A_re")})
    if not prefixes:
        return None
    parts: dict[str, list[np.ndarray]] = {"Re(A)": [], "Im(A)": [], "B*C": [], "D": []}
    for p in prefixes:
        a_re = state[p + "A_re"].double()
        neg_re = REAL_TRANSFORMS[real_transform][0](a_re)
        linear = state.get(p + "linear_real")
        if linear is not None and linear.any():
            neg_re = torch.where(linear[:, None], a_re, neg_re)
        C, B = torch.view_as_complex(state[p + "C"].double()), torch.view_as_complex(state[p + "B"].double())
        bc = C * B.repeat(C.shape[1] // B.shape[0], 1)  # B has n_ssm rows, channel h uses row h mod n_ssm
        parts["Re(A)"].append((-neg_re).numpy().ravel())
        parts["Im(A)"].append(state[p + "A_im"].double().numpy().ravel())
        parts["B*C"].append(bc.numpy().ravel())
        parts["D"].append(state[p + "D"].double().numpy().ravel())
    return {k: np.concatenate(v) for k, v in parts.items()}


def relative_change(before: np.ndarray, after: np.ndarray) -> float:
    """||after - before||_2 / ||before||_2 (NaN when ||before|| = 0, e.g. Im(A) initialized at zero)."""
    denom = float(np.linalg.norm(before))
    return float(np.linalg.norm(after - before)) / denom if denom > 0 else float("nan")


def parameters_at_init_and_end(run: RunRecord, warn: Warn = warn_stderr) -> Optional[tuple[dict, dict]]:
    """(init, end) SSM parameters of a finished run from checkpoints/init.pt and its final checkpoint; a checkpoint
    that is present but unreadable (truncated, corrupt, not a state dict) or holds non-finite parameters is
    reported through `warn` and the run left out."""
    from ssmbench.errors import CheckpointError
    from ssmbench.train import checkpoint

    init_path, end_path = run.run_dir / runs.CHECKPOINTS / "init.pt", final_checkpoint(run.run_dir)
    if not init_path.exists() or end_path is None:
        return None
    transform = ((run.recipe.get("model") or {}).get("ssm") or {}).get("real_transform", "exp")
    try:
        init, end = (ssm_parameters(checkpoint.load(p)["model"], transform) for p in (init_path, end_path))
    except CheckpointError as e:
        warn(f"{e}; run left out of the parameter-change table and pole plot")
        return None
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        warn(f"{init_path} / {end_path}: not S4D model weights ({type(e).__name__}: {e}); run left out of the "
             f"parameter-change table and pole plot")
        return None
    if init is None or end is None:
        return None
    bad = [f"{which} {k}" for which, params in (("init.pt", init), (end_path.name, end)) for k, v in params.items()
           if not np.isfinite(v).all()]
    if bad:  # a checkpoint that passes its checksum but holds NaN or inf weights cannot be plotted or compared
        warn(f"{run.run_dir}: non-finite SSM parameters ({', '.join(bad)}); run left out of the parameter-change "
             f"table and pole plot")
        return None
    return init, end


def parameter_change(run: RunRecord, warn: Warn = warn_stderr) -> Optional[dict[str, float]]:
    """Relative change of Re(A), Im(A), B*C and D between init and end of training (Yu et al., Table 1)."""
    pair = parameters_at_init_and_end(run, warn)
    if pair is None:
        return None
    init, end = pair
    return {k: relative_change(init[k], end[k]) for k in init}
