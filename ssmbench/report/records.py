"""Run directories -> plain records, the only input of `ssmbench report` (it never imports the training engine).

A run directory (see `ssmbench.runs`) holds recipe.yaml, env.json, metrics.jsonl, results.json and checkpoints/.
Its status is read from results.json:

    finished   results.json status "finished"                   -> goes into the tables
    failed     results.json status "failed" (with its error)    -> listed separately
    preempted  results.json status "preempted"                   -> listed separately (a sweep resumes it)
    running    no results.json, a process holds the run's lock  -> listed separately (training now)
    interrupted no results.json, checkpoints/last.pt exists     -> listed separately (a sweep resumes it)
    incomplete no results.json, no last.pt                       -> listed separately

Only finished runs are ever averaged. A runs folder may hold anything, so every file is read as untrusted: only
regular files under a size cap (runs.open_regular), parsed and then checked against the schema below (`RecipeView`,
`EnvView`, `ResultsView`, metric rows); a run directory whose recipe.yaml, env.json, results.json or metrics.jsonl
fails is skipped with a one-line warning naming the file, and dropped metric lines are counted in a warning.

The SSM parameters of a run (docs/methods.md §A: A = -f(A_re) + i A_im, B, C, D)
are read from checkpoints/init.pt and the final weights for the parameter-change table and the pole plot.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from ssmbench import runs
from ssmbench.errors import RecordError

FINISHED = "finished"
REAL_TRANSFORMS = ("exp", "relu", "none")  # the keys of ssmbench.models.s4d.REAL_TRANSFORMS (checked by a test)
Warn = Callable[[str], None]


def warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------------
# The fields the report reads, as a schema (other fields are kept but not checked)


class _View(BaseModel):
    model_config = ConfigDict(extra="allow")


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # a 400-digit integer
        raise ValueError("number too large for a float") from None


Number = Annotated[Union[StrictInt, StrictFloat], AfterValidator(_as_float)]  # JSON numbers (not bools) as floats


class DataView(_View):
    name: StrictStr = "?"
    train_fraction: Number = Field(1.0, gt=0, le=1)


class SSMView(_View):
    real_transform: Literal[REAL_TRANSFORMS] = "exp"


class ModelView(_View):
    ssm: SSMView = Field(default_factory=SSMView)


class RecipeView(_View):
    name: Optional[StrictStr] = None
    seed: Optional[StrictInt] = None
    tags: dict[StrictStr, Union[StrictStr, StrictBool, StrictInt, StrictFloat]] = Field(default_factory=dict)
    data: DataView = Field(default_factory=DataView)
    model: ModelView = Field(default_factory=ModelView)


class InitView(_View):
    tdi: Optional[dict[StrictStr, Union[list[Number], Number, StrictStr, None]]] = None  # spectra, losses, artifact


class EnvView(_View):
    data: dict[StrictStr, Any] = Field(default_factory=dict)
    init: InitView = Field(default_factory=InitView)


class ResultsView(_View):
    status: StrictStr
    name: Optional[StrictStr] = None
    task: Literal["classification", "regression"] = "classification"
    test: Optional[dict[StrictStr, Number]] = None
    error: Optional[StrictStr] = None
    data_source: Optional[StrictStr] = None


def _checked(view: type[BaseModel], obj: dict, path: Path) -> dict:
    """`obj` if it satisfies `view`, else RecordError naming the file and the first bad field."""
    try:
        view.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"])) or "(top level)"
        raise RecordError(f"{path}: field {where}: {err['msg']}") from None
    except RecursionError:
        raise RecordError(f"{path}: nested too deeply") from None
    return obj


def _metric_row(row: dict) -> bool:
    """A metrics.jsonl row as the engine writes it: integer step, a split name, numeric (or null) values (integers
    within int64, so every value converts to a float)."""
    def number(v: Any) -> bool:
        return isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63)

    return (isinstance(row.get("step"), int) and number(row["step"]) and isinstance(row.get("split"), str)
            and all(v is None or number(v) for k, v in row.items() if k != "split"))


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


def _optional(load: Callable[[Path], Any], path: Path, default: Any) -> Any:
    """`load(path)`, or `default` if the file does not exist."""
    try:
        return load(path)
    except FileNotFoundError:
        return default


def read_run(run_dir: Path, warn: Warn = warn_stderr) -> RunRecord:
    """Read one run directory into a RunRecord; missing files give a record with what is known.

    RecordError (naming the file) if a file is present but not a valid record; dropped metric lines (a torn last
    line after a crash, or damage) are reported through `warn`.
    """
    run_dir = Path(run_dir)
    recipe = _checked(RecipeView, _optional(runs.load_yaml, run_dir / runs.RECIPE, {}), run_dir / runs.RECIPE)
    env = _checked(EnvView, _optional(runs.load_json, run_dir / runs.ENV, {}), run_dir / runs.ENV)
    results = _optional(runs.load_json, run_dir / runs.RESULTS, None)
    if results is not None:
        _checked(ResultsView, results, run_dir / runs.RESULTS)
        if results["status"] == FINISHED and not runs.is_finished(results):
            raise RecordError(f"{run_dir / runs.RESULTS}: status finished but no `test` object with a loss")
    metrics, dropped = runs.scan_jsonl(run_dir / runs.METRICS)
    kept = [r for r in metrics if _metric_row(r)]
    dropped += len(metrics) - len(kept)
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
    that is present but unreadable (truncated, corrupt, not a state dict) is reported through `warn` and the run
    left out."""
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
    return None if init is None or end is None else (init, end)


def parameter_change(run: RunRecord, warn: Warn = warn_stderr) -> Optional[dict[str, float]]:
    """Relative change of Re(A), Im(A), B*C and D between init and end of training (Yu et al., Table 1)."""
    pair = parameters_at_init_and_end(run, warn)
    if pair is None:
        return None
    init, end = pair
    return {k: relative_change(init[k], end[k]) for k in init}
