"""One definition of a finished, valid run, shared by `ssmbench sweep` (which skips such a run) and `ssmbench report`
(which puts it in the tables): a run directory whose records all read and check, and whose results.json says
finished with possible test values.

    recipe.yaml    present (every run directory gets it first), a YAML mapping matching `RecipeView`
    env.json       absent (not yet written) or a JSON object matching `EnvView`
    metrics.jsonl  absent or a regular file (lines that are not metric rows are dropped and counted, not fatal)
    results.json   absent (not finished) or a JSON object matching `ResultsView`; status "finished" also needs
                   `runs.is_finished`: a `test` object whose values are possible (finite, loss >= 0, accuracy
                   in [0, 1])

Every file is read under the reading rule (ssmbench/safe_read.py, via `runs`). `read_run_files` raises
`DamagedRecord` naming the first file that fails. `sweep` treats a damaged run as absent, so the next sweep
trains the grid point again (the damaged folder is left for the user to inspect; `report` lists it as skipped),
except when only results.json is at fault: then the run is resumed, which evaluates it again and rewrites
results.json. A run can therefore never be counted by one command and skipped by the other, and a damaged run
is never a permanent hole in a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from ssmbench import runs
from ssmbench.errors import RecordError

FINISHED = "finished"
REAL_TRANSFORMS = ("exp", "relu", "none")  # the keys of ssmbench.models.s4d.REAL_TRANSFORMS (checked by a test)


class DamagedRecord(RecordError):
    """A run's record file that is present but not a valid record; `path` is the file."""

    def __init__(self, path: Path, message: str):
        self.path = Path(path)
        super().__init__(message)


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
    name: StrictStr  # every resolved recipe names its dataset (a run without one would be tabulated under "?")
    train_fraction: Number = Field(1.0, gt=0, le=1)


class SSMView(_View):
    real_transform: Literal[REAL_TRANSFORMS] = "exp"


class ModelView(_View):
    ssm: SSMView = Field(default_factory=SSMView)


class RecipeView(_View):
    name: Optional[StrictStr] = None
    seed: Optional[StrictInt] = None
    tags: dict[StrictStr, Union[StrictStr, StrictBool, StrictInt, StrictFloat]] = Field(default_factory=dict)
    data: DataView
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


def checked(view: type[BaseModel], obj: dict, path: Path) -> dict:
    """`obj` if it satisfies `view`, else DamagedRecord naming the file and the first bad field."""
    try:
        view.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"])) or "(top level)"
        raise DamagedRecord(path, f"{path}: field {where}: {err['msg']}") from None
    except RecursionError:
        raise DamagedRecord(path, f"{path}: nested too deeply") from None
    return obj


def metric_row(row: dict) -> bool:
    """A metrics.jsonl row as the engine writes it: integer step, a split name, numeric (or null) values (integers
    within int64, so every value converts to a float)."""
    def number(v: Any) -> bool:
        return isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63)

    return (isinstance(row.get("step"), int) and number(row["step"]) and isinstance(row.get("split"), str)
            and all(v is None or number(v) for k, v in row.items() if k != "split"))


@dataclass
class RunFiles:
    """The checked records of one run directory (results None: not finished or not yet written)."""

    recipe: dict[str, Any]
    env: dict[str, Any]
    results: Optional[dict[str, Any]]
    metrics: list[dict]  # rows that are metric rows (`metric_row`)
    dropped: int  # lines of metrics.jsonl that were not

    @property
    def finished(self) -> bool:
        return self.results is not None and self.results.get("status") == FINISHED


def _load(load, path: Path, default: Any) -> Any:
    """`load(path)` (a runs reader), `default` if the file does not exist, DamagedRecord naming it otherwise."""
    try:
        return load(path)
    except FileNotFoundError:
        return default
    except RecordError as e:
        raise DamagedRecord(path, str(e)) from None


def read_run_files(run_dir: Path) -> RunFiles:
    """Read and check the records of `run_dir` (see the module docstring); DamagedRecord names the first bad file
    (results.json last, so that a run whose other records are sound is told apart: `sweep` resumes it)."""
    run_dir = Path(run_dir)
    recipe_path, results_path = run_dir / runs.RECIPE, run_dir / runs.RESULTS
    recipe = _load(runs.load_yaml, recipe_path, None)
    if recipe is None:
        raise DamagedRecord(recipe_path, f"{recipe_path}: missing (ssmbench writes it first in every run "
                                         f"directory); not a run directory, or a damaged one")
    checked(RecipeView, recipe, recipe_path)
    env = checked(EnvView, _load(runs.load_json, run_dir / runs.ENV, {}), run_dir / runs.ENV)
    try:
        metrics, dropped = runs.scan_jsonl(run_dir / runs.METRICS)
    except RecordError as e:
        raise DamagedRecord(run_dir / runs.METRICS, str(e)) from None
    kept = [r for r in metrics if metric_row(r)]
    results = _load(runs.load_json, results_path, None)
    if results is not None:
        checked(ResultsView, results, results_path)
        if results["status"] == FINISHED and not runs.is_finished(results):
            raise DamagedRecord(results_path, f"{results_path}: status finished but its `test` object is missing, "
                                              f"has no loss, or holds an impossible value ({runs.test_problem(results)})")
    return RunFiles(recipe, env, results, kept, dropped + len(metrics) - len(kept))


def is_finished_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds a finished, valid run (the one definition; see the module docstring)."""
    try:
        return read_run_files(run_dir).finished
    except RecordError:
        return False
