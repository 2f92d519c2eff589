"""`ssmbench sweep`: expand a sweep file into runs, skip the finished ones, train the rest.

A sweep file is YAML with a top-level `grid` (that key is how `ssmbench smoke` tells sweeps from recipes):

    name: smnist-table                  # tag `sweep` of every run
    recipe: smnist/{variant}.yaml       # recipe template, relative to the sweep file; {task}, {variant} filled in
    set: [train.epochs=2]               # overrides applied to every run (optional)
    grid:
      tasks: [listops, text]            # optional task axis (only useful when the template uses {task})
      variants:                         # a list of names, or name -> {recipe, set, changes}
        s4d: {}
        alpha-beta: {set: [init.alpha=3.0]}
        stu: {recipe: stu.yaml, changes: [model.kind, model.stu]}
      baseline: s4d                     # the variant the others are compared with (default: the first)
      seeds: [0, 1, 2]
      train_fractions: [0.1, 1.0]       # data.train_fraction (data-efficiency studies)
      budget: epochs                    # with several fractions: `epochs` or `steps` (see below)
      exclude: [text/alpha-beta]        # task/variant points to leave out (optional)
    resources: {cpus: 4, gpus: 1}       # per run, for --backend ray|slurm (see ssmbench.backends)

A data-efficiency sweep (several train_fractions) states its training budget: `budget: epochs` trains every
fraction for the same train.epochs (the TDI paper's protocol: fewer optimizer steps on less data; train.max_steps
must be null so that no fraction is cut short), `budget: steps` for the same train.max_steps (which must be set;
train.epochs must be large enough for the smallest fraction to reach it). Each run is tagged `budget`.

The grid is task x variant x train_fraction x seed. Every run is tagged {sweep, task, variant, run_key}; the run
key is a hash of the sweep name, task, variant and the run's recipe (file + overrides), so a finished run is
skipped (finished and valid by the definition `report` uses too: ssmbench/finished.py), a preempted or interrupted
one (checkpoints but no finished results, or a damaged results.json) is resumed, one with another damaged record
is trained again in a new directory, and editing a recipe gives new runs.

Concurrent sweeps on one runs_dir share the work: a process trains a run only while it holds the run's claim
(`flock` on RUNS_DIR/.claims/<run key>.lock, released by the OS even on SIGKILL) and decides new/resume/skip
after taking it, so no run is trained twice; a run claimed elsewhere is retried until it is done.

Signals (`run_sweep`): the first SIGTERM/SIGINT starts no further run, and the running ones checkpoint at their
next step and record "preempted" (with --jobs N the sweep passes the signal on to its workers, which sit in their
own process group and get SIGTERM if the sweep process dies, even by SIGKILL); the sweep then exits 75 like a
preempted `train`. A second signal aborts at once (exit 130; the last checkpoints stay valid).

A comparison changes only what it names: a variant states the fields it changes (the keys of its `set`, and, when it
has a recipe file of its own, the fields listed under `changes`; a listed section such as `model.stu` covers every
field below it). `variant_differences` compares every variant's resolved recipe with the baseline's, field by
field, and `sweep --dry-run` prints those differences, flagging any the variant does not name.

The core is backend-neutral: `expand(sweep_file) -> [RunSpec]` (pure), `find_finished(spec)`, and the top-level
`run_spec(spec) -> dict`, which trains one spec in the current process and records a failure instead of raising.
`run_sweep` executes specs locally, sequentially or in `jobs` spawned processes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Iterator, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ssmbench import runs
from ssmbench.errors import RecipeError, RecordError, SSMBenchError
from ssmbench.finished import DamagedRecord, read_run_files
from ssmbench.paths import DATA_ROOT_ENV, allowed_roots, escape

# --------------------------------------------------------------------------------------------------
# Sweep file schema


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: Optional[str] = Field(None, description="recipe file of this variant (default: the sweep's `recipe` template)")
    set: list[str] = Field(default_factory=list, description="--set overrides of this variant")
    changes: list[str] = Field(default_factory=list, description="fields (or sections) in which this variant's own "
                               "recipe differs from the baseline's, besides its `set` keys")

    def named_fields(self) -> set[str]:
        """The fields this variant says it changes: its `set` keys and `changes`."""
        return {o.partition("=")[0].strip() for o in self.set} | set(self.changes)


class Grid(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[str] = Field(default_factory=list, description="values of {task} in the recipe template (optional)")
    variants: Union[list[str], dict[str, Optional[Variant]]] = Field(description="variant names, or name -> {recipe, set, changes}")
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]] = Field([0], min_length=1, description="recipe seeds, each in [0, 2^32)")
    train_fractions: list[float] = Field([1.0], min_length=1, description="data.train_fraction values")
    exclude: list[str] = Field(default_factory=list, description="`task/variant` points left out of the grid")
    baseline: Optional[str] = Field(None, description="the variant the others are compared with; null = the first")
    budget: Optional[Literal["epochs", "steps"]] = Field(None, description="training budget shared by the train "
                                                          "fractions: same epochs or same optimizer steps")

    def variant_specs(self) -> dict[str, Variant]:
        if isinstance(self.variants, list):
            return {v: Variant() for v in self.variants}
        return {k: v or Variant() for k, v in self.variants.items()}

    def baseline_name(self) -> str:
        return self.baseline or next(iter(self.variant_specs()), "")


class SweepFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=60, description="sweep name (tag `sweep`)")
    recipe: Optional[str] = Field(None, description="recipe path template relative to the sweep file")
    set: list[str] = Field(default_factory=list, description="--set overrides for every run")
    runs_dir: str = Field("runs", description="where the runs go (relative to the working directory); must resolve "
                          "inside it, the sweep file's folder or a folder in $SSMBENCH_DATA_ROOT (`--runs-dir` may "
                          "point anywhere)")
    resources: dict = Field(default_factory=dict, description="per-run resources of the ray/slurm backends "
                            "(validated by ssmbench.backends)")
    grid: Grid


def load_sweep(path: Path) -> SweepFile:
    from ssmbench.recipe import _format_errors, read_yaml_mapping

    raw = read_yaml_mapping(Path(path))
    if "grid" not in raw and "data" in raw:
        raise RecipeError(str(path), [f"this is a recipe (it has `data` and no `grid`), not a sweep file: use "
                                      f"`ssmbench train {path}`"])
    try:
        sweep = SweepFile.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(str(path), _format_errors(e, SweepFile)) from None
    problem = escape(sweep.runs_dir, allowed_roots() + [Path(path).parent.resolve()])  # ssmbench/paths.py
    if problem:
        raise RecipeError(str(path), [f"runs_dir: {problem}; use a folder inside one of them, or add it to "
                                      f"${DATA_ROOT_ENV}"])
    for v, spec in sweep.grid.variant_specs().items():
        if spec.recipe is None and sweep.recipe is None:
            raise RecipeError(str(path), [f"grid.variants.{v}: no recipe; give `recipe:` for the variant or a top-level `recipe:` template"])
    points = {f"{t}/{v}" for t in sweep.grid.tasks for v in sweep.grid.variant_specs()}
    for x in sweep.grid.exclude:
        if x not in points:
            raise RecipeError(str(path), [f"grid.exclude: {x!r} is not a task/variant point of the grid "
                                          f"(tasks: {', '.join(sweep.grid.tasks) or 'none'})"])
    for f in sweep.grid.train_fractions:
        if not 0.0 < f <= 1.0:
            raise RecipeError(str(path), [f"grid.train_fractions: {f} is outside (0, 1]"])
    if sweep.grid.baseline is not None and sweep.grid.baseline not in sweep.grid.variant_specs():
        raise RecipeError(str(path), [f"grid.baseline: {sweep.grid.baseline!r} is not a variant of the grid "
                                      f"({', '.join(sweep.grid.variant_specs())})"])
    if len(sweep.grid.train_fractions) > 1 and sweep.grid.budget is None:
        raise RecipeError(str(path), ["grid.budget: required with several train_fractions; `budget: epochs` (same "
                                      "epochs for every fraction, the TDI paper's protocol) or `budget: steps` (same "
                                      "train.max_steps)"])
    return sweep


def check_budget(budget: Optional[str], recipe) -> None:
    """Raise ValueError when a run's recipe breaks the sweep's budget rule (see the module docstring)."""
    if budget == "epochs" and recipe.train.max_steps is not None:
        raise ValueError(f"train.max_steps is {recipe.train.max_steps}, which cuts the larger fractions short under "
                         "grid.budget: epochs; set train.max_steps=null")
    if budget == "steps" and recipe.train.max_steps is None:
        raise ValueError("train.max_steps is null; grid.budget: steps needs it set (the same step count for every fraction)")


# --------------------------------------------------------------------------------------------------
# Run specs


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: everything another process (or a cluster job) needs to train it. Picklable."""

    recipe: str  # recipe file (absolute path)
    overrides: tuple[str, ...]
    tags: dict[str, str] = field(hash=False)  # {sweep, task, variant, run_key}
    name: str
    seed: int
    train_fraction: float
    runs_dir: str
    key: str  # deterministic: sweep, task, variant and the raw recipe (file + overrides)


def spec_raw(spec: RunSpec) -> dict:
    """The raw recipe mapping of a spec: the file, its overrides, then seed, train fraction, name and tags."""
    from ssmbench.recipe import apply_overrides, read_yaml_mapping

    raw = apply_overrides(read_yaml_mapping(Path(spec.recipe)), list(spec.overrides))
    raw["seed"] = spec.seed
    raw["name"] = spec.name
    if not isinstance(raw.get("data"), dict):
        raise RecipeError(spec.recipe, ["data: required section is missing"])
    raw["data"]["train_fraction"] = spec.train_fraction
    raw["tags"] = {**(raw.get("tags") or {}), **spec.tags}
    return raw


def spec_recipe(spec: RunSpec):
    """The validated recipe of a spec."""
    from ssmbench.recipe import validate_recipe

    return validate_recipe(spec_raw(spec), spec.recipe)


def run_key(raw: dict, sweep: str, task: str, variant: str) -> str:
    """sha256 (16 hex) of the sweep identity of a run and its raw recipe (without name and tags).

    The raw mapping (file + overrides), not the validated one: a default added to the schema later must not
    turn finished runs into new ones.
    """
    body = {k: v for k, v in raw.items() if k not in ("name", "tags")}
    blob = json.dumps({"sweep": sweep, "task": task, "variant": variant, "recipe": body}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fill_template(template: str, values: dict[str, str], source: Path) -> str:
    """The recipe template with each `{name}` replaced by values[name] (`{task}`, `{variant}`); plain text
    substitution, not Python's str.format (whose `{variant.__class__}` reaches into objects): any other text in
    braces is a RecipeError naming the sweep file."""
    def fill(m: re.Match) -> str:
        if m.group(1) not in values:
            raise RecipeError(str(source), [f"recipe template {template!r}: unknown name {{{m.group(1)}}} in braces; "
                                            f"only {{task}} and {{variant}} are filled in"])
        return values[m.group(1)]

    return re.sub(r"\{([^{}]*)\}", fill, template)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def expand(sweep_file: Union[str, Path], runs_dir: Optional[Union[str, Path]] = None,
           overrides: tuple[str, ...] = ()) -> list[RunSpec]:
    """The runs of a sweep file, in grid order task x variant x train_fraction x seed; every recipe is validated.

    `runs_dir` replaces the sweep file's `runs_dir`; `overrides` are appended to every run's overrides.
    """
    path = Path(sweep_file)
    sweep = load_sweep(path)
    out_dir = str(runs_dir if runs_dir is not None else sweep.runs_dir)
    specs = []
    for task in sweep.grid.tasks or [""]:
        for variant, v in sweep.grid.variant_specs().items():
            if f"{task}/{variant}" in sweep.grid.exclude:
                continue
            template = v.recipe or sweep.recipe
            recipe_path = (path.parent / fill_template(template, {"task": task, "variant": variant}, path)).resolve()
            sets = tuple(sweep.set) + tuple(v.set) + tuple(overrides)
            for frac in sweep.grid.train_fractions:
                for seed in sweep.grid.seeds:
                    parts = [sweep.name, task, variant, f"s{seed}"] + ([f"f{frac:g}"] if frac != 1.0 else [])
                    name = _slug("-".join(p for p in parts if p))[:100]
                    tags = {"sweep": sweep.name, "variant": variant, **({"task": task} if task else {}),
                            **({"budget": sweep.grid.budget} if sweep.grid.budget else {})}
                    draft = RunSpec(str(recipe_path), sets, tags, name, seed, frac, out_dir, key="")
                    try:
                        key = run_key(spec_raw(draft), sweep.name, task, variant)
                        check_budget(sweep.grid.budget, spec_recipe(draft))  # validate every run before any starts
                    except RecipeError as e:
                        raise RecipeError(str(path), [f"grid run {name}: {line}" for line in str(e).splitlines()]) from None
                    except ValueError as e:
                        raise RecipeError(str(path), [f"grid run {name}: {e}"]) from None
                    specs.append(RunSpec(str(recipe_path), sets, {**tags, "run_key": key}, name, seed, frac, out_dir, key))
    return specs


# --------------------------------------------------------------------------------------------------
# Finding existing runs


def index_runs(runs_dir: Union[str, Path]) -> dict[str, list[Path]]:
    """run_key tag -> run directories under `runs_dir` (oldest first)."""
    index: dict[str, list[Path]] = {}
    root = Path(runs_dir)
    if not root.is_dir():
        return index
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            raw = runs.load_yaml(d / runs.RECIPE)
        except (OSError, RecordError):  # not a run directory, or a damaged one: a new run is made instead
            continue
        key = (raw.get("tags") or {}).get("run_key") if isinstance(raw.get("tags"), dict) else None
        if isinstance(key, str) and key:
            index.setdefault(key, []).append(d)
    return index


def run_state(run_dir: Path) -> str:
    """finished (a finished, valid run: `finished.read_run_files`, the definition `report` uses) | failed |
    resumable (results "preempted", no results yet, or only results.json damaged: the engine continues from the
    last checkpoint, or starts over in the same directory if none was written, and rewrites results.json) |
    damaged (another record fails: the grid point is trained again in a new directory)."""
    try:
        files = read_run_files(run_dir)
    except DamagedRecord as e:
        return "resumable" if e.path.name == runs.RESULTS else "damaged"
    except RecordError:
        return "damaged"
    if files.finished:
        return "finished"
    return "failed" if files.results is not None and files.results.get("status") == "failed" else "resumable"


def spec_state(spec: RunSpec, index: Optional[dict[str, list[Path]]] = None) -> tuple[str, Optional[Path]]:
    """("finished", dir) | ("resume", dir) | ("new", None) for a spec, from the runs already on disk."""
    dirs = (index if index is not None else index_runs(spec.runs_dir)).get(spec.key, [])
    states = [(run_state(d), d) for d in dirs]
    for wanted, label in (("finished", "finished"), ("resumable", "resume")):
        for s, d in reversed(states):  # newest first
            if s == wanted:
                return label, d
    return "new", None


def find_finished(spec: RunSpec, index: Optional[dict[str, list[Path]]] = None) -> Optional[Path]:
    """The run directory holding the finished record of `spec`, if any."""
    state, run_dir = spec_state(spec, index)
    return run_dir if state == "finished" else None


CLAIMS = ".claims"


@contextmanager
def claim(spec: RunSpec) -> Iterator[bool]:
    """Hold the claim on `spec` (an exclusive `flock` on RUNS_DIR/.claims/<key>.lock) for the block; yields False,
    holding nothing, if another process holds it."""
    import fcntl

    folder = Path(spec.runs_dir) / CLAIMS
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{spec.key}.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


# --------------------------------------------------------------------------------------------------
# Running


def _record_failure(spec: RunSpec, recipe, before: set[Path], error: BaseException) -> Path:
    """Give a new run that failed before the engine could record it a directory with recipe.yaml and results.json
    {status: failed, error}; the engine records failures once training has started, and those are kept."""
    from ssmbench.train.engine import record_failure

    pattern = re.compile(re.escape(spec.name) + r"-\d{8}-\d{6}-[0-9a-f]{8}$")
    new = sorted(d for d in Path(spec.runs_dir).iterdir() if d.is_dir() and pattern.match(d.name) and d not in before)
    run_dir = new[-1] if new else runs.create_run_dir(Path(spec.runs_dir), spec.name)
    if not (run_dir / runs.RECIPE).exists():
        runs.atomic_write_text(run_dir / runs.RECIPE, recipe.to_yaml())
    if not (run_dir / runs.RESULTS).exists():
        record_failure(run_dir, recipe, error)
    return run_dir


def run_spec(spec: RunSpec, threads: Optional[int] = None, on_eval: Optional[Callable[[int, dict], Optional[str]]] = None
             ) -> dict:
    """Train one spec in this process (resuming a preempted/interrupted run) and return a status dict.

    {key, name, status: skipped|finished|failed|preempted|busy, action: skip|new|resume|busy, run_dir, test,
    error, seconds}. Errors are recorded in the run's results.json (status failed) and returned, never raised.
    "busy": another process holds the run's claim (`claim`); nothing was done. `on_eval`: the engine's hook after
    every validation evaluation (`ssmbench tune` reports to its pruner there).
    """
    with claim(spec) as mine:
        if not mine:
            return {"key": spec.key, "name": spec.name, "tags": spec.tags, "status": "busy", "action": "busy",
                    "run_dir": "", "test": None, "error": None, "seconds": 0.0}
        return _run_claimed(spec, threads, on_eval)


def _run_claimed(spec: RunSpec, threads: Optional[int], on_eval=None) -> dict:
    """`run_spec` once the claim is held: the state is read now, after any other process let go of the run."""
    import torch

    from ssmbench.train.engine import train

    if threads:
        torch.set_num_threads(threads)
    state, run_dir = spec_state(spec)
    out = {"key": spec.key, "name": spec.name, "tags": spec.tags, "action": state, "run_dir": str(run_dir or ""),
           "test": None, "error": None, "seconds": 0.0}
    if state == "finished":
        return {**out, "status": "skipped", "action": "skip",
                "test": (runs.read_json(run_dir / runs.RESULTS) or {}).get("test")}
    tick = time.perf_counter()
    Path(spec.runs_dir).mkdir(parents=True, exist_ok=True)
    before = set(Path(spec.runs_dir).iterdir())
    recipe = None
    try:
        recipe = spec_recipe(spec)
        if state == "resume":
            results = train(resume=run_dir, quiet=True, log=lambda *_: None, on_eval=on_eval)
        else:
            results = train(recipe, runs_root=spec.runs_dir, quiet=True, log=lambda *_: None, on_eval=on_eval)
        return {**out, "status": results.get("status", "finished"), "run_dir": results.get("run_dir", str(run_dir or "")),
                "test": results.get("test"), "seconds": time.perf_counter() - tick}
    except Exception as e:  # a failed run is recorded and reported; the sweep goes on
        if recipe is not None and state == "new":
            run_dir = _record_failure(spec, recipe, before, e)
        status = (runs.read_json(run_dir / runs.RESULTS) or {}).get("status", "failed") if run_dir else "failed"
        return {**out, "status": status if status == "preempted" else "failed", "run_dir": str(run_dir or ""),
                "error": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - tick}


def describe(spec: RunSpec) -> str:
    t = spec.tags
    where = f"task={t['task']} " if "task" in t else ""
    return f"{where}variant={t['variant']} seed={spec.seed} train_fraction={spec.train_fraction:g}"


def format_grid(specs: list[RunSpec], index: dict[str, list[Path]]) -> str:
    """The dry-run listing: one line per run with its state, key, grid point, recipe and overrides."""
    lines = []
    for i, s in enumerate(specs, 1):
        state, d = spec_state(s, index)
        sets = " ".join(f"--set {o}" for o in s.overrides)
        rel = os.path.relpath(s.recipe)
        lines.append(f"{i:>3} {state:<8} {s.key} {describe(s)} recipe={s.recipe if rel.startswith('..') else rel} {sets}".rstrip()
                     + (f"  [{d}]" if d else ""))
    counts = {st: sum(spec_state(s, index)[0] == st for s in specs) for st in ("new", "resume", "finished")}
    lines.append(f"{len(specs)} runs: {counts['new']} new, {counts['resume']} to resume, {counts['finished']} finished")
    return "\n".join(lines)


# Fields that tell runs of one grid point apart, or are set per run by the sweep: not compared.
RUN_FIELDS = {"name", "seed", "tags", "data.train_fraction"}


def inert_sections(flat: dict[str, object]) -> set[str]:
    """Sections a resolved recipe does not use: the S4D options and `init` for an STU layer, `model.stu` for S4D."""
    return {"model.ssm", "init"} if flat.get("model.kind") in ("stu", "ar-stu") else {"model.stu"}


def is_named(field_name: str, named: set[str]) -> bool:
    """Whether a dotted field is one of `named` or lies below a named section."""
    return any(field_name == n or field_name.startswith(n + ".") for n in named)


@dataclass
class VariantDifference:
    """How one variant's resolved recipe differs from the baseline's at one task."""

    task: str
    variant: str
    baseline: str
    fields: dict[str, tuple]  # dotted field -> (baseline value, variant value)
    unnamed: list[str]  # differing fields the variant does not name


def variant_differences(sweep_file: Union[str, Path], specs: list[RunSpec]) -> list[VariantDifference]:
    """Per task and variant, the resolved fields that differ from the baseline variant (first seed and fraction).

    Run identity (name, seed, tags, train fraction) is not compared, nor a section either recipe does not use.
    """
    from ssmbench.recipe import flatten

    grid = load_sweep(Path(sweep_file)).grid
    variants, base = grid.variant_specs(), grid.baseline_name()
    first: dict[tuple[str, str], RunSpec] = {}
    for spec in specs:
        first.setdefault((spec.tags.get("task", ""), spec.tags["variant"]), spec)
    resolved = {k: flatten(spec_recipe(s).to_dict()) for k, s in first.items()}
    out = []
    for (task, variant), fields in resolved.items():
        ref = resolved.get((task, base))
        if variant == base or ref is None:
            continue
        skip = RUN_FIELDS | inert_sections(ref) | inert_sections(fields)
        diff = {k: (ref.get(k), fields.get(k)) for k in sorted(set(ref) | set(fields))
                if not is_named(k, skip) and ref.get(k) != fields.get(k)}
        named = variants[variant].named_fields() | variants[base].named_fields()
        out.append(VariantDifference(task, variant, base, diff, [k for k in diff if not is_named(k, named)]))
    return out


def format_differences(diffs: list[VariantDifference]) -> str:
    """The dry-run report: per variant, each resolved field that differs from the baseline, unnamed ones flagged."""
    lines = []
    for d in diffs:
        where = f"task={d.task} " if d.task else ""
        lines.append(f"{where}variant={d.variant} vs baseline {d.baseline}: "
                     f"{len(d.fields)} field{'s differ' if len(d.fields) != 1 else ' differs'}")
        for k, (a, b) in d.fields.items():
            lines.append(f"    {k}: {a!r} -> {b!r}" + ("   [not named by the variant]" if k in d.unnamed else ""))
    return "\n".join(lines)


def result_line(r: dict) -> str:
    if r["status"] == "busy":
        return f"wait {r['name']}: another ssmbench process is training it; retried every {BUSY_RETRY_SECONDS:g} s"
    if r["status"] == "stopped":
        return f"[yellow]not started[/] {r['name']}: {r['error']}"
    if r["status"] == "failed":
        return f"[red]FAIL[/] {r['name']}: {r['error']} ({r['run_dir']})"
    if r["status"] not in ("finished", "skipped"):  # e.g. preempted: the next sweep resumes it
        return f"[yellow]{r['status']}[/] {r['name']} ({r['run_dir']})"
    test = r.get("test") or {}
    metric = f"test acc {test['accuracy']:.4f}" if "accuracy" in test else f"test loss {test.get('loss', float('nan')):.4g}"
    verb = {"skip": "done", "new": "ok  ", "resume": "ok (resumed)"}[r["action"]]
    return f"{verb} {r['name']}: {metric}, {r['seconds']:.0f} s ({r['run_dir']})"


def run_sweep(sweep_file: Path, runs_dir: Optional[Path] = None, jobs: int = 1, dry_run: bool = False,
              overrides: tuple[str, ...] = (), console=None) -> list[dict]:
    """Expand, skip finished runs, train the others (in `jobs` processes); return one status dict per run."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    specs = expand(sweep_file, runs_dir, tuple(overrides))
    index = index_runs(specs[0].runs_dir) if specs else {}
    if dry_run:
        print(format_grid(specs, index))
        print(format_differences(variant_differences(sweep_file, specs)))
        return []
    if jobs < 1:
        raise SSMBenchError(f"sweep --jobs: must be at least 1, got {jobs}")
    results = []
    todo = []
    for s in specs:
        state, d = spec_state(s, index)
        if state == "finished":
            results.append({"key": s.key, "name": s.name, "status": "skipped", "action": "skip", "run_dir": str(d),
                            "test": (runs.read_json(d / runs.RESULTS) or {}).get("test"), "error": None, "seconds": 0.0})
        else:
            todo.append(s)
    console.print(f"sweep {Path(sweep_file).name}: {len(specs)} runs, {len(specs) - len(todo)} already finished, "
                  f"{len(todo)} to run" + (f" in {jobs} processes" if jobs > 1 and todo else ""))
    from ssmbench.train.engine import StopSignals

    bar = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    with bar, StopSignals(forward=signal_workers if jobs > 1 else None) as stop:
        task = bar.add_task("sweep", total=len(specs), completed=len(specs) - len(todo))

        def report(r: dict) -> None:
            bar.console.print(result_line(r))
            if r["status"] != "busy":
                bar.advance(task)

        if jobs == 1:
            results += execute(todo, lambda s: done_future(run_spec(s)), 1, stop, report)
        else:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn, initializer=worker_init,
                                     initargs=(os.getpid(), spawn.Value("i", 0), worker_gpus(todo))) as pool:
                results += execute(todo, lambda s: pool.submit(worker_run_spec, s, threads), jobs, stop, report)
    order = {s.key: i for i, s in enumerate(specs)}
    return sorted(results, key=lambda r: order[r["key"]])


# --------------------------------------------------------------------------------------------------
# Local execution: scheduling, signals, worker processes

BUSY_RETRY_SECONDS = 2.0


def done_future(result: dict) -> Future:
    f: Future = Future()
    f.set_result(result)
    return f


def not_started(spec: RunSpec, why: str) -> dict:
    return {"key": spec.key, "name": spec.name, "tags": spec.tags, "status": "stopped", "action": "new",
            "run_dir": "", "test": None, "error": why, "seconds": 0.0}


def execute(todo: list[RunSpec], launch: Callable[[RunSpec], Future], jobs: int, stop, report: Callable[[dict], None]
            ) -> list[dict]:
    """Run `todo` through `launch` (spec -> Future of run_spec's dict), at most `jobs` at a time, reporting each
    result (a "busy" one once). A "busy" run (claimed by another sweep) is retried after BUSY_RETRY_SECONDS until
    it is done here or found finished. Once `stop.received` is set (a signal) or a run comes back preempted, nothing new starts: the
    running ones are awaited and every run not started is returned as "stopped"."""
    results: list[dict] = []
    pending: list[tuple[float, RunSpec]] = [(0.0, s) for s in todo]  # (not before, spec)
    running: dict[Future, RunSpec] = {}
    waiting: set[str] = set()
    while pending or running:
        if stop.received:
            results += [not_started(s, f"the sweep was stopped ({stop.received}) before it started") for _, s in pending]
            pending = []
        now = time.monotonic()
        while len(running) < jobs and pending and min(t for t, _ in pending) <= now:
            item = min(pending, key=lambda p: p[0])
            pending.remove(item)
            running[launch(item[1])] = item[1]
        if not running:
            if pending:
                time.sleep(max(0.05, min(t for t, _ in pending) - now))
            continue
        finished, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
        for f in finished:
            spec = running.pop(f)
            try:
                r = f.result()
            except BrokenProcessPool as e:  # the worker process died (killed, out of memory)
                r = {**not_started(spec, f"worker process died ({e}); the next sweep resumes the run"), "status": "failed"}
            if r["status"] == "busy":
                if spec.key not in waiting:
                    waiting.add(spec.key)
                    report(r)
                pending.append((time.monotonic() + BUSY_RETRY_SECONDS, spec))
                continue
            results.append(r)
            report(r)
            if r["status"] == "preempted" and not stop.received:
                stop.received = "a run was preempted"
    return results


def signal_workers() -> None:
    """Send SIGTERM to every worker process of this sweep (they checkpoint at their next step; a second aborts)."""
    for child in multiprocessing.active_children():
        try:
            os.kill(child.pid, signal.SIGTERM)
        except (ProcessLookupError, TypeError):
            pass


_WORKER = {"parent": 0, "signal": None, "gpu": None}


def worker_gpus(specs: list[RunSpec]) -> int:
    """How many GPUs the workers of `sweep --jobs N` take turns on: all visible ones when there are several and a
    run trains on CUDA without naming a GPU (train.device auto or cuda), else 0 (every worker keeps the default)."""
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return 0
    devices = set()
    for spec in specs:
        try:
            devices.add(spec_recipe(spec).train.device)
        except SSMBenchError:  # a bad recipe fails when its run starts
            continue
    return torch.cuda.device_count() if devices & {"auto", "cuda"} else 0


def take_gpu(turns, gpus: int) -> int | None:
    """The GPU of the next worker to start: worker i (in start order, counted by the shared `turns`) gets i mod
    `gpus`; None when `gpus` is 0."""
    if not gpus:
        return None
    with turns.get_lock():
        turns.value += 1
        return (turns.value - 1) % gpus


def worker_init(parent: int, turns=None, gpus: int = 0) -> None:
    """Set up a worker process of `sweep --jobs N`: its own process group (a Ctrl-C at the terminal reaches only
    the sweep, which passes it on once), SIGTERM when the sweep process dies (Linux PR_SET_PDEATHSIG, so no worker
    outlives a killed sweep), a handler that turns a signal between two runs into "start nothing more", and its
    GPU (`take_gpu`), made current for its runs on `train.device` auto or cuda."""
    _WORKER["parent"] = parent
    _WORKER["gpu"] = take_gpu(turns, gpus)
    os.setpgrp()
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, _worker_signal)
    if os.getppid() != parent:  # the sweep died before the parent-death signal was armed
        os._exit(75)


def _worker_signal(signum, frame) -> None:
    _WORKER["signal"] = signal.Signals(signum).name
    if os.getppid() != _WORKER["parent"]:  # idle, and the sweep is gone: nobody will send more work
        os._exit(75)


def worker_run_spec(spec: RunSpec, threads: int, run: Callable[..., dict] | None = None) -> dict:
    """`run(spec, threads)` (default `run_spec`) in a worker, unless a signal arrived since the last run (then the
    run is not started). `run` must be a top-level function (it is pickled to the worker)."""
    if _WORKER["signal"]:
        return not_started(spec, f"{_WORKER['signal']} received before it started")
    if _WORKER["gpu"] is not None:  # "cuda" and "auto" mean the current GPU; a recipe's cuda:N sets its own
        import torch

        torch.cuda.set_device(_WORKER["gpu"])
    try:
        result = (run or run_spec)(spec, threads)
    except BaseException:  # a second signal (KeyboardInterrupt) aborted the run: if the sweep is gone, so is this
        if os.getppid() != _WORKER["parent"]:  # worker (else it would wait for work forever, orphaned)
            os._exit(75)
        raise
    if result["status"] == "preempted":
        _WORKER["signal"] = _WORKER["signal"] or "SIGTERM"
    if os.getppid() != _WORKER["parent"]:  # the sweep died while this run checkpointed: nobody to report to
        os._exit(75)
    return result
