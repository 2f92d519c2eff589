"""`ssmbench sweep`: expand a sweep file into runs, skip the finished ones, train the rest.

A sweep file is YAML with a top-level `grid` (that key is how `ssmbench smoke` tells sweeps from recipes):

    name: smnist-table                  # tag `sweep` of every run
    recipe: smnist/{variant}.yaml       # recipe template, relative to the sweep file; {task}, {variant} filled in
    set: [train.epochs=2]               # overrides applied to every run (optional)
    grid:
      tasks: [listops, text]            # optional task axis (only useful when the template uses {task})
      variants:                         # a list of names, or name -> {recipe, set}
        s4d: {}
        alpha-beta: {set: [init.alpha=3.0]}
      seeds: [0, 1, 2]
      train_fractions: [0.1, 1.0]       # data.train_fraction (data-efficiency studies)
      exclude: [text/alpha-beta]        # task/variant points to leave out (optional)
    resources: {cpus: 4, gpus: 1}       # per run, for --backend ray|slurm (see ssmbench.backends)

The grid is task x variant x train_fraction x seed. Every run is tagged {sweep, task, variant, run_key}; the run
key is a hash of the sweep name, task, variant and the run's recipe (file + overrides), so a run whose finished record
exists is skipped, a preempted or interrupted one (checkpoints but no finished results) is resumed, and editing
a recipe gives new runs.

The core is backend-neutral: `expand(sweep_file) -> [RunSpec]` (pure), `find_finished(spec)`, and the top-level
`run_spec(spec) -> dict`, which trains one spec in the current process and records a failure instead of raising.
`run_sweep` executes specs locally, sequentially or in `jobs` spawned processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Annotated, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ssmbench import runs
from ssmbench.errors import RecipeError, SSMBenchError
from ssmbench.paths import DATA_ROOT_ENV, allowed_roots, escape

# --------------------------------------------------------------------------------------------------
# Sweep file schema


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: Optional[str] = Field(None, description="recipe file of this variant (default: the sweep's `recipe` template)")
    set: list[str] = Field(default_factory=list, description="--set overrides of this variant")


class Grid(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[str] = Field(default_factory=list, description="values of {task} in the recipe template (optional)")
    variants: Union[list[str], dict[str, Optional[Variant]]] = Field(description="variant names, or name -> {recipe, set}")
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]] = Field([0], min_length=1, description="recipe seeds, each in [0, 2^32)")
    train_fractions: list[float] = Field([1.0], min_length=1, description="data.train_fraction values")
    exclude: list[str] = Field(default_factory=list, description="`task/variant` points left out of the grid")

    def variant_specs(self) -> dict[str, Variant]:
        if isinstance(self.variants, list):
            return {v: Variant() for v in self.variants}
        return {k: v or Variant() for k, v in self.variants.items()}


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
    if "data" in raw and "grid" not in raw:
        raise RecipeError(str(path), ["this is a recipe (it has `data`, no `grid`); train it with `ssmbench train`"])
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
    return sweep


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
            try:
                recipe_path = (path.parent / template.format(task=task, variant=variant)).resolve()
            except (KeyError, IndexError) as e:
                raise RecipeError(str(path), [f"recipe template {template!r}: unknown name {e} in braces; only {{task}} and {{variant}} are filled in"]) from None
            sets = tuple(sweep.set) + tuple(v.set) + tuple(overrides)
            for frac in sweep.grid.train_fractions:
                for seed in sweep.grid.seeds:
                    parts = [sweep.name, task, variant, f"s{seed}"] + ([f"f{frac:g}"] if frac != 1.0 else [])
                    name = _slug("-".join(p for p in parts if p))[:100]
                    tags = {"sweep": sweep.name, "variant": variant, **({"task": task} if task else {})}
                    draft = RunSpec(str(recipe_path), sets, tags, name, seed, frac, out_dir, key="")
                    try:
                        key = run_key(spec_raw(draft), sweep.name, task, variant)
                        spec_recipe(draft)  # validate every run before any starts
                    except RecipeError as e:
                        raise RecipeError(str(path), [f"grid run {name}: {line}" for line in str(e).splitlines()]) from None
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
            raw = yaml.safe_load((d / runs.RECIPE).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        key = ((raw or {}).get("tags") or {}).get("run_key") if isinstance(raw, dict) else None
        if key:
            index.setdefault(str(key), []).append(d)
    return index


def run_state(run_dir: Path) -> str:
    """finished | failed | resumable (results "preempted", or no results yet: the engine continues from the last
    checkpoint, or starts over in the same directory if none was written)."""
    results = runs.read_json(run_dir / runs.RESULTS)
    if results is None or results.get("status") == "preempted":
        return "resumable"
    return "finished" if results.get("status") == "finished" else "failed"


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


def run_spec(spec: RunSpec, threads: Optional[int] = None) -> dict:
    """Train one spec in this process (resuming a preempted/interrupted run) and return a status dict.

    {key, name, status: skipped|finished|failed, action: skip|new|resume, run_dir, test, error, seconds}.
    Errors are recorded in the run's results.json (status failed) and returned, never raised.
    """
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
            results = train(resume=run_dir, quiet=True, log=lambda *_: None)
        else:
            results = train(recipe, runs_root=spec.runs_dir, quiet=True, log=lambda *_: None)
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


def result_line(r: dict) -> str:
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
    bar = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    with bar:
        task = bar.add_task("sweep", total=len(specs), completed=len(specs) - len(todo))
        if jobs == 1:
            for s in todo:
                results.append(run_spec(s))
                bar.console.print(result_line(results[-1]))
                bar.advance(task)
                if results[-1]["status"] == "preempted":  # a stop signal: start no further run
                    break
        else:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(run_spec, s, threads) for s in todo]
                for f in as_completed(futures):
                    if f.cancelled():
                        continue
                    results.append(f.result())
                    bar.console.print(result_line(results[-1]))
                    bar.advance(task)
                    if results[-1]["status"] == "preempted":  # runs not yet started are cancelled
                        pool.shutdown(wait=False, cancel_futures=True)
    if any(r["status"] == "preempted" for r in results):
        console.print(f"sweep stopped by a signal; run `ssmbench sweep {sweep_file}` again to resume")
    order = {s.key: i for i, s in enumerate(specs)}
    return sorted(results, key=lambda r: order[r["key"]])
