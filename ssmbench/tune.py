"""`ssmbench tune`: choose recipe fields on validation data with Optuna, the same trial budget for every variant,
then train the chosen configuration of each variant with several seeds and test it (docs/tuning.md).

A tune file is YAML with a top-level `variants` whose entries have a `space`:

    name: smnist-alpha                  # tag `sweep` (and `tune`) of every run; prefix of the study names
    recipe: smnist/{variant}.yaml       # recipe template, relative to the tune file ({task}, {variant} filled in)
    set: [train.max_steps=150]          # overrides of every trial and final run (optional)
    tasks: []                           # optional task axis, as in a sweep
    trials: 8                           # the budget: trials per variant (and task), the baseline's included
    seeds: [0, 1, 2]                    # seeds of the final runs of each variant's chosen configuration
    objective: accuracy                 # validation metric of the best checkpoint: accuracy (maximized) or loss
    variants:
      s4d:
        space:
          train.lr: {float: [0.002, 0.05], log: true}
      alpha:
        set: [init.alpha=1.0]
        changes: [init.alpha]           # the variant's own method fields: the baseline need not tune them
        space:
          init.alpha: {float: [0.25, 16.0], log: true}
          train.lr: {float: [0.002, 0.05], log: true}
    baseline: s4d

A space entry is `{float: [low, high]}`, `{int: [low, high]}` (optional `log: true`, `step`) or `{choices: [...]}`,
over any dotted recipe field (`ssmbench train --print-config` lists them). A variant may tune a field the baseline
does not tune only when it lists the field under `changes`, so the baseline gets the same freedom on what they share.
Every space is checked against the recipe schema before anything runs: an unknown field, an empty range or a
value the field does not take is one line and exit status 2.

Each (task, variant) is one Optuna study `<name>.<task>.<variant>` (TPE, QMC or random sampler; median pruner or
none) in the storage: by default SQLite in RUNS_DIR/<name>.optuna.db; `--storage` takes a database URL
(postgresql://user:pw@host/db, sqlite:///file) or a journal file path (optuna's JournalFileBackend, for a shared
filesystem without a database).
A trial is asked from the study, then trained as an ordinary run directory through `sweep.run_spec` (claims,
resume, failure records) on any backend (`--jobs N` local processes, Ray tasks, Slurm jobs; `backends.launcher`);
the worker reports every validation evaluation to the pruner and tells the study the trial's result itself. The
objective is the best validation value; the test split is never read to choose.

Resuming and concurrency. A trial left RUNNING by a killed `tune` has a run directory that `run_spec` resumes;
the next `tune` on the study relaunches it (once per process) when no process holds its claim. New trials are
asked under an exclusive lock on RUNS_DIR/.claims/tune-<study>.lock, so several `tune` processes on one study never
exceed the budget, and every trial's run is claimed (`sweep.claim`), so none is trained twice.

When every study has spent its budget, the best trial of each gives the final runs (`seeds`), tagged
`tune_role: final` with the space, budget, chosen values and trial counts; `ssmbench report` puts those in its
tables and the trials in a Tuning table.
"""

from __future__ import annotations

import fcntl
import json
import math
import time
import zlib
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ssmbench import backends, runs, sweep
from ssmbench.errors import RecipeError, SSMBenchError
from ssmbench.paths import DATA_ROOT_ENV, allowed_roots, escape

# --------------------------------------------------------------------------------------------------
# Tune file schema

Scalar = Union[bool, int, float, str, None]


class Param(BaseModel):
    """One field's search range: exactly one of `float`, `int`, `choices`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    float_: Optional[tuple[float, float]] = Field(None, alias="float", description="[low, high] of a float field")
    int_: Optional[tuple[int, int]] = Field(None, alias="int", description="[low, high] of an integer field")
    choices: Optional[list[Scalar]] = Field(None, description="categorical values")
    log: bool = Field(False, description="sample on a log scale (float or int ranges with low > 0)")
    step: Optional[float] = Field(None, gt=0, description="grid step of a float or int range")

    @model_validator(mode="after")
    def _one_kind(self) -> "Param":
        given = [k for k, v in (("float", self.float_), ("int", self.int_), ("choices", self.choices)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of float: [low, high], int: [low, high], choices: [...] (got "
                             f"{', '.join(given) or 'none'})")
        if self.choices is not None and not self.choices:
            raise ValueError("choices: empty; list at least one value")
        bounds = self.float_ or self.int_
        if bounds is not None and bounds[0] > bounds[1]:
            raise ValueError(f"empty range [{bounds[0]}, {bounds[1]}]: low is above high")
        if self.log and (bounds is None or bounds[0] <= 0):
            raise ValueError("log: needs a float or int range with low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step: optuna samples one or the other; drop one")
        return self

    def describe(self) -> str:
        """`logU[0.25, 16]`, `int[16, 64] step 16`, `{a, b}`: the range as the dry run and the tables print it."""
        if self.choices is not None:
            return "{" + ", ".join(map(str, self.choices)) + "}"
        kind = "int" if self.int_ is not None else "U"
        low, high = self.int_ or self.float_
        return f"{'log' if self.log else ''}{kind}[{low:g}, {high:g}]" + (f" step {self.step:g}" if self.step else "")

    def suggest(self, trial, name: str) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(name, self.choices)
        if self.int_ is not None:
            return trial.suggest_int(name, *self.int_, step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, *self.float_, step=self.step, log=self.log)

    def probes(self) -> list[Any]:
        """Values that must all validate in the field: the bounds and a non-round interior point of a float range
        (so a float range over an integer field fails), or every choice."""
        if self.choices is not None:
            return list(self.choices)
        if self.int_ is not None:
            return list(self.int_)
        low, high = self.float_
        return [low, high] + ([low + 0.3819660113 * (high - low)] if high > low else [])


class TuneVariant(sweep.Variant):
    space: dict[str, Param] = Field(default_factory=dict, description="dotted recipe field -> search range")


class TuneFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=60, description="tune name (tags `sweep`, `tune`)")
    recipe: Optional[str] = Field(None, description="recipe path template relative to the tune file")
    set: list[str] = Field(default_factory=list, description="--set overrides of every trial and final run")
    runs_dir: str = Field("runs", description="where the runs and the default SQLite study go (see sweep files)")
    resources: dict = Field(default_factory=dict, description="per-run resources of the ray/slurm backends")
    tasks: list[str] = Field(default_factory=list, description="values of {task} in the recipe template (optional)")
    variants: dict[str, Optional[TuneVariant]] = Field(min_length=1, description="name -> {recipe, set, changes, space}")
    baseline: Optional[str] = Field(None, description="the variant the others are compared with; null = the first")
    trials: int = Field(ge=1, le=100000, description="trial budget of every variant (and task), the baseline's included")
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="seeds of the final runs of each chosen configuration")
    trial_seed: int = Field(0, ge=0, lt=2**32, description="recipe seed of every trial")
    objective: Literal["accuracy", "loss"] = Field("accuracy", description="validation metric of the best checkpoint: "
                                                   "accuracy (maximized) or loss (minimized)")
    sampler: Literal["tpe", "qmc", "random"] = Field("tpe", description="optuna sampler: tpe (TPESampler), qmc "
                                                     "(QMCSampler: scrambled Sobol, small budgets) or random")
    sampler_seed: int = Field(0, ge=0, lt=2**32, description="seed of the sampler (with the study and, but for qmc, "
                                                             "the trial number)")
    sampler_startup_trials: int = Field(4, ge=1, description="tpe: random trials before the model-based ones")
    pruner: Literal["median", "none"] = Field("median", description="median: stop a trial whose validation value is "
                                              "worse than the median of earlier trials at the same step")
    pruner_startup_trials: int = Field(3, ge=0, description="trials per study before the pruner may stop one")

    def variant_specs(self) -> dict[str, TuneVariant]:
        return {k: v or TuneVariant() for k, v in self.variants.items()}

    def baseline_name(self) -> str:
        return self.baseline or next(iter(self.variants))


# Fields a space may not tune: the run's identity, set per run by tune itself.
RUN_FIELDS = {"name", "seed", "tags", "data.train_fraction"}


def yaml_value(value: Any) -> str:
    """A value as `--set` reads it back unchanged (YAML: 1e-05 alone would be a string; 1.0e-05 is a float)."""
    return yaml.safe_dump(value, default_flow_style=True).split("\n...")[0].strip()


def load_tune(path: Path) -> TuneFile:
    """Read and check a tune file: the schema, then every variant's space against its resolved recipe."""
    from ssmbench.recipe import _format_errors, read_yaml_mapping

    raw = read_yaml_mapping(Path(path))
    if "data" in raw or "grid" in raw:
        what = "a recipe" if "data" in raw else "a sweep file"
        raise RecipeError(str(path), [f"this is {what}, not a tune file (it has no `variants` with a `space`)"])
    try:
        tune = TuneFile.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(str(path), _format_errors(e, TuneFile)[:1]) from None
    problem = escape(tune.runs_dir, allowed_roots() + [Path(path).parent.resolve()])
    if problem:
        raise RecipeError(str(path), [f"runs_dir: {problem}; use a folder inside one of them, or add it to ${DATA_ROOT_ENV}"])
    variants = tune.variant_specs()
    if tune.baseline is not None and tune.baseline not in variants:
        raise RecipeError(str(path), [f"baseline: {tune.baseline!r} is not a variant ({', '.join(variants)})"])
    base = variants[tune.baseline_name()]
    for v, spec in variants.items():
        if spec.recipe is None and tune.recipe is None:
            raise RecipeError(str(path), [f"variants.{v}: no recipe; give `recipe:` for the variant or a top-level `recipe:` template"])
        if not spec.space:
            raise RecipeError(str(path), [f"variants.{v}.space: empty; every variant, the baseline included, tunes at "
                                          f"least one field with the same budget"])
        for field in spec.space:
            if field in RUN_FIELDS or field.startswith("tags."):
                raise RecipeError(str(path), [f"variants.{v}.space.{field}: set per run by tune (trial_seed, seeds); "
                                              f"tune a recipe field instead"])
            if v != tune.baseline_name() and field not in base.space and not sweep.is_named(field, set(spec.changes)):
                raise RecipeError(str(path), [
                    f"variants.{v}.space.{field}: the baseline {tune.baseline_name()} does not tune it; tune it in the "
                    f"baseline too (same budget, same freedom), or list it under variants.{v}.changes if it is this "
                    f"variant's own method field"])
    return tune


def check_space(path: Path, tune: TuneFile, task: str, variant: str, raw: dict) -> None:
    """Every field of the variant's space exists in the resolved recipe, and every probe value validates there."""
    from ssmbench.recipe import apply_overrides, flatten, validate_recipe

    source = str(path)
    fields = flatten(validate_recipe(json.loads(json.dumps(raw)), source).to_dict())
    where = f"variants.{variant}.space" + (f" (task {task})" if task else "")
    for field, param in tune.variant_specs()[variant].space.items():
        if field not in fields:
            section = field.rpartition(".")[0]
            near = sorted(k for k in fields if k.rpartition(".")[0] == section)
            raise RecipeError(source, [f"{where}.{field}: not a field of the resolved recipe"
                                       + (f"; fields of {section}: {', '.join(near)}" if near else
                                          "; `ssmbench train RECIPE --print-config` lists the fields")])
        for value in param.probes():
            try:
                validate_recipe(apply_overrides(json.loads(json.dumps(raw)), [f"{field}={yaml_value(value)}"]), source)
            except RecipeError as e:
                why = e.problems[0].split(": ", 1)[-1]
                raise RecipeError(source, [f"{where}.{field}: {param.describe()} includes {value!r}, which the field "
                                           f"does not take ({why})"]) from None


# --------------------------------------------------------------------------------------------------
# Studies


@dataclass(frozen=True)
class Study:
    """One (task, variant) of a tune file: its study name and the spec of its base run (no tuned values yet)."""

    task: str
    variant: str
    name: str  # optuna study name
    base: sweep.RunSpec  # recipe, overrides and tags of every run of the study; key and name are filled per run
    space: dict[str, Param]


def studies(path: Path, tune: TuneFile, runs_dir: Optional[Path] = None, overrides: tuple[str, ...] = ()) -> list[Study]:
    """The studies of a tune file, in task x variant order, each space checked (before any run)."""
    out_dir = str(Path(runs_dir if runs_dir is not None else tune.runs_dir).resolve())
    out = []
    for task in tune.tasks or [""]:
        for variant, v in tune.variant_specs().items():
            template = v.recipe or tune.recipe
            try:
                recipe = (path.parent / template.format(task=task, variant=variant)).resolve()
            except (KeyError, IndexError) as e:
                raise RecipeError(str(path), [f"recipe template {template!r}: unknown name {e} in braces; only "
                                              f"{{task}} and {{variant}} are filled in"]) from None
            tags = {"sweep": tune.name, "tune": tune.name, "variant": variant, **({"task": task} if task else {})}
            base = sweep.RunSpec(str(recipe), tuple(tune.set) + tuple(v.set) + tuple(overrides), tags,
                                 f"{tune.name}-{task}-{variant}" if task else f"{tune.name}-{variant}",
                                 tune.trial_seed, 1.0, out_dir, key="")
            check_space(path, tune, task, variant, sweep.spec_raw(base))
            name = ".".join(p for p in (tune.name, task, variant) if p)
            out.append(Study(task, variant, name, base, v.space))
    return out


def run_with(study: Study, values: dict[str, Any], role: str, seed: int, suffix: str, extra_tags: dict[str, str]
             ) -> sweep.RunSpec:
    """The spec of one run of a study: the base with the tuned `values` as overrides, its seed, tags and key."""
    sets = study.base.overrides + tuple(f"{k}={yaml_value(v)}" for k, v in sorted(values.items()))
    tags = {**study.base.tags, "tune_role": role, **extra_tags}
    draft = sweep.RunSpec(study.base.recipe, sets, tags, f"{study.base.name}-{suffix}"[:100], seed, 1.0,
                          study.base.runs_dir, key="")
    key = sweep.run_key(sweep.spec_raw(draft), study.name, study.task, f"{study.variant}#{role}#{suffix}")
    return sweep.RunSpec(draft.recipe, sets, {**tags, "run_key": key}, draft.name, seed, 1.0, draft.runs_dir, key)


def storage_url(runs_dir: Path, tune: TuneFile, storage: Optional[str]) -> str:
    """The study storage: `storage` as given, or SQLite in the runs folder."""
    return storage or f"sqlite:///{Path(runs_dir).resolve() / (tune.name + '.optuna.db')}"


def open_storage(url: str):
    """An optuna storage for a database URL (`scheme://...`) or a journal file path (anything else)."""
    import optuna

    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(url)))
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(3):  # two processes creating the schema at once: one of them loses the race, then loads it
        try:
            with sqlite_lock(url):
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception as e:  # sqlalchemy: no server, bad credentials, missing driver, a lost schema race
            if attempt == 2 or "IntegrityError" not in type(e).__name__:
                raise SSMBenchError(f"tune --storage: cannot open {url.split('@')[-1]} ({type(e).__name__}: "
                                    f"{str(e).splitlines()[0][:200]})") from None
            time.sleep(1.0)


@contextmanager
def sqlite_lock(url: str) -> Iterator[None]:
    """For a SQLite file, an exclusive lock beside it while the storage opens (and creates its tables once)."""
    if not url.startswith("sqlite:///"):
        yield
        return
    db = Path(url.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def make_pruner(name: str, startup: int):
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=startup) if name == "median" else optuna.pruners.NopPruner()


def make_sampler(name: str, seed: int, startup: int = 4):
    """Optuna's TPESampler, QMCSampler (scrambled Sobol sequence; its first trial is drawn at random, as Optuna
    does, the next ones are the sequence's points in order, kept in the study so a restart continues it) or
    RandomSampler, seeded with `seed`."""
    import warnings

    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    if name == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                              independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                                              warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=seed)


def load_study(url: str, name: str, direction: str, pruner: str = "median", startup: int = 3):
    """The optuna study `name` (created if missing) with the pruner; `next_trial` sets the sampler per trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=open_storage(url), study_name=name, direction=direction,
                               pruner=make_pruner(pruner, startup), load_if_exists=True)


def sampler_seed_of(tune: TuneFile, study: str, number: int) -> int:
    """The sampler seed of trial `number` of a study: a function of the tune file, the study and the trial number,
    so a restarted tune or a second process draws new values, never those of trial 0 again. For qmc, one seed per
    study (one scrambled sequence): the study's storage counts the points drawn, so a restart takes the next one."""
    return (tune.sampler_seed + zlib.crc32(study.encode()) + (0 if tune.sampler == "qmc" else 7919 * number)) % 2**32


@contextmanager
def study_lock(runs_dir: str, study: str) -> Iterator[None]:
    """Exclusive lock of one study among tune processes (held while counting and asking trials)."""
    folder = Path(runs_dir) / sweep.CLAIMS
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"tune-{study}.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------------------------------------------------
# Trials (executed in a worker)


@dataclass(frozen=True)
class TrialSpec:
    """One trial, picklable for every backend: its run, its study and how to report to the pruner."""

    run: sweep.RunSpec
    storage: str
    study: str
    direction: str
    number: int
    trial_id: int
    metric: str
    pruner: str
    pruner_startup: int

    @property
    def key(self) -> str:  # sweep's not_started() names a run by these
        return self.run.key

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def tags(self) -> dict[str, str]:
        return self.run.tags


def objective_value(results: Optional[dict], metric: str) -> Optional[float]:
    """The trial's objective: `metric` of the best validation evaluation (never a test value)."""
    value = ((results or {}).get("best_val") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def run_trial(t: TrialSpec, threads: Optional[int] = None) -> dict:
    """Train one trial (`sweep.run_spec`: claimed, resumed, failures recorded), reporting every validation value to
    the pruner, then tell the study its result: COMPLETE with the best validation value, PRUNED, or FAIL. A run
    stopped by a signal stays RUNNING (the next `tune` resumes it); a run claimed elsewhere is left to that process."""
    import optuna
    from optuna.trial import TrialState

    study = load_study(t.storage, t.study, t.direction, pruner=t.pruner, startup=t.pruner_startup)
    trial = optuna.trial.Trial(study, t.trial_id)

    def on_eval(step: int, val: dict) -> Optional[str]:
        if t.metric not in val:
            return None
        trial.report(float(val[t.metric]), step)
        return f"pruned by the {t.pruner} pruner at step {step}" if trial.should_prune() else None

    out = sweep.run_spec(t.run, threads, on_eval if t.pruner != "none" else None)
    out["trial"] = t.number
    if out["status"] not in ("finished", "skipped", "failed"):
        return out  # busy, preempted, stopped: not this process's result to tell
    results = runs.read_json(Path(out["run_dir"]) / runs.RESULTS) if out["run_dir"] else None
    value = objective_value(results, t.metric)
    if out["status"] == "failed" or value is None:
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        out["error"] = out["error"] or f"no validation {t.metric} recorded"
        out["status"] = "failed"
    elif str((results or {}).get("stopped_early") or "").startswith("pruned"):
        study.tell(t.number, state=TrialState.PRUNED, skip_if_finished=True)
        out["status"], out["value"] = "pruned", value
    else:
        study.tell(t.number, value, skip_if_finished=True)
        out["value"] = value
    return out


# --------------------------------------------------------------------------------------------------
# The driver


def direction(tune: TuneFile) -> str:
    return "maximize" if tune.objective == "accuracy" else "minimize"


def trial_spec(tune: TuneFile, url: str, study: Study, trial) -> TrialSpec:
    """The TrialSpec of an optuna trial (asked now, or found RUNNING after a killed tune)."""
    run = run_with(study, dict(trial.params), "trial", tune.trial_seed, f"trial{trial.number}",
                   {"tune_trial": str(trial.number)})
    return TrialSpec(run, url, study.name, direction(tune), trial.number, trial._trial_id, tune.objective,
                     tune.pruner, tune.pruner_startup_trials)


def unclaimed(spec: sweep.RunSpec) -> bool:
    """Whether no process holds the claim of a run right now."""
    with sweep.claim(spec) as mine:
        return mine


def next_trial(tune: TuneFile, url: str, study: Study, ostudy, tried: set[tuple[str, int]]) -> Optional[TrialSpec]:
    """A trial of `study` to run now: a RUNNING one no process works on (left by a killed tune; once per
    process), else a new one while the budget is not spent (asked under the study lock), else None. A trial asked
    by a process killed before it drew every value of the space fails (it counts in the budget)."""
    from optuna.trial import TrialState

    with study_lock(study.base.runs_dir, study.name):
        trials = ostudy.get_trials(deepcopy=False)
        for tr in trials:
            if tr.state == TrialState.RUNNING and set(tr.params) != set(study.space):  # killed while it was asked
                ostudy.tell(tr.number, state=TrialState.FAIL, skip_if_finished=True)
            elif tr.state == TrialState.RUNNING and (study.name, tr.number) not in tried:
                spec = trial_spec(tune, url, study, tr)
                if unclaimed(spec.run):
                    tried.add((study.name, tr.number))
                    return spec
        if len(trials) >= tune.trials:
            return None
        ostudy.sampler = make_sampler(tune.sampler, sampler_seed_of(tune, study.name, len(trials)),
                                      tune.sampler_startup_trials)  # the next trial's number is len(trials): locked
        trial = ostudy.ask()
        for field, param in study.space.items():
            param.suggest(trial, field)
        tried.add((study.name, trial.number))
        return trial_spec(tune, url, study, trial)


def elsewhere(tune: TuneFile, url: str, study: Study, ostudy) -> bool:
    """Whether another process trains a trial of `study` now (a RUNNING trial whose run is claimed)."""
    from optuna.trial import TrialState

    return any(tr.state == TrialState.RUNNING and not unclaimed(trial_spec(tune, url, study, tr).run)
               for tr in ostudy.get_trials(deepcopy=False))


def trial_line(r: dict) -> str:
    if r["status"] in ("finished", "skipped", "pruned"):
        verb = {"finished": "trial", "skipped": "trial (done)", "pruned": "pruned"}[r["status"]]
        return f"{verb} {r['name']}: validation value {r.get('value', float('nan')):.6g} ({r['run_dir']})"
    return sweep.result_line(r)


def counts(ostudy) -> dict[str, int]:
    """Trials of a study by state (complete, pruned, fail, running, waiting)."""
    out: dict[str, int] = {}
    for tr in ostudy.get_trials(deepcopy=False):
        out[tr.state.name.lower()] = out.get(tr.state.name.lower(), 0) + 1
    return out


def final_specs(tune: TuneFile, study: Study, ostudy) -> list[sweep.RunSpec]:
    """The final runs of a study: its best trial's values, trained with every seed of `seeds`, tagged with the
    space, budget, objective, chosen values and trial counts (read by the report's Tuning table)."""
    c = counts(ostudy)
    try:
        best = ostudy.best_trial
    except ValueError:
        raise SSMBenchError(f"tune: study {study.name} has no completed trial among its {sum(c.values())} "
                            f"(pruned {c.get('pruned', 0)}, failed {c.get('fail', 0)}); see the trial run directories "
                            f"in {study.base.runs_dir}") from None
    tags = {"tune_space": "; ".join(f"{k} ~ {p.describe()}" for k, p in study.space.items()),
            "tune_budget": str(tune.trials), "tune_objective": f"validation {tune.objective} ({direction(tune)})",
            "tune_trials": str(c.get("complete", 0)), "tune_pruned": str(c.get("pruned", 0)),
            "tune_failed": str(c.get("fail", 0)), "tune_best_trial": str(best.number),
            "tune_best_value": f"{best.value:.6g}",
            "tune_values": ", ".join(f"{k}={yaml_value(v)}" for k, v in sorted(best.params.items()))}
    return [run_with(study, dict(best.params), "final", seed, f"s{seed}", tags) for seed in tune.seeds]


def progress_of(url: str, name: str) -> dict[str, int]:
    """Trial counts of a study if its storage and the study exist (the dry run creates neither)."""
    import optuna

    local = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url if "://" not in url else None
    if local is not None and not Path(local).exists():
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return counts(optuna.load_study(study_name=name, storage=open_storage(url)))
    except KeyError:  # no such study yet
        return {}


def format_plan(tune: TuneFile, found: list[Study], url: str, progress: dict[str, dict[str, int]]) -> str:
    """The dry-run listing: objective, budget and storage, then per study its recipe, fixed overrides and space."""
    base = tune.baseline_name()
    lines = [f"tune {tune.name}: objective validation {tune.objective} ({direction(tune)}); {tune.trials} trials per "
             f"variant{' and task' if tune.tasks else ''} (the baseline {base} included); sampler {tune.sampler}, "
             f"pruner {tune.pruner}; final runs: seeds {', '.join(map(str, tune.seeds))}",
             f"storage: {url.split('@')[-1]}"]
    for s in found:
        c = progress.get(s.name, {})
        done = ", ".join(f"{n} {k}" for k, n in sorted(c.items())) or "not started"
        lines.append(f"study {s.name}: variant {s.variant}{' (baseline)' if s.variant == base else ''}"
                     + (f", task {s.task}" if s.task else "") + f"; budget {tune.trials} trials ({done})")
        lines.append(f"    recipe {s.base.recipe}" + "".join(f" --set {o}" for o in s.base.overrides))
        lines.append(f"    tunes {len(s.space)} field(s): {', '.join(s.space)}")
        lines += [f"      {k} ~ {p.describe()}" for k, p in s.space.items()]
    return "\n".join(lines)


def run_tune(tune_file: Path, backend: str = "local", runs_dir: Optional[Path] = None, jobs: int = 1,
             dry_run: bool = False, storage: Optional[str] = None, overrides: tuple[str, ...] = (), console=None,
             slurm_cluster: str = "slurm") -> list[dict]:
    """Run every study of a tune file to its budget, then the final runs; return their status dicts."""
    from rich.console import Console

    console = console or Console(stderr=True)
    path = Path(tune_file)
    tune = load_tune(path)
    if jobs < 1:
        raise SSMBenchError(f"tune --jobs: must be at least 1, got {jobs}")
    resources = backends.load_resources(path)
    found = studies(path, tune, runs_dir, tuple(overrides))
    out_dir = Path(found[0].base.runs_dir)
    url = storage_url(out_dir, tune, storage)
    if dry_run:
        print(format_plan(tune, found, url, {s.name: progress_of(url, s.name) for s in found}))
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    ostudies = {s.name: load_study(url, s.name, direction(tune), tune.pruner, tune.pruner_startup_trials) for s in found}
    for s in found:
        check_same_study(path, url, s, ostudies[s.name])
    console.print(f"tune {path.name}: {len(found)} studies x {tune.trials} trials ({url.split('@')[-1]}), then "
                  f"{len(tune.seeds)} seeds each; {jobs} at a time on {backend}")
    from ssmbench.train.engine import StopSignals

    results: list[dict] = []
    with StopSignals(forward=sweep.signal_workers if backend == "local" and jobs > 1 else None) as stop, \
            backends.launcher(backend, resources, jobs, slurm_cluster) as launch:
        trials = run_trials(tune, url, found, ostudies, launch, jobs, stop, console)
        if stop.received or any(r["status"] in ("preempted", "stopped") for r in trials):
            return trials
        for s in found:
            ostudies[s.name] = load_study(url, s.name, direction(tune))
        finals = [spec for s in found for spec in final_specs(tune, s, ostudies[s.name])]
        index = sweep.index_runs(out_dir)
        to_train = [f for f in finals if sweep.find_finished(f, index) is None]
        console.print(f"tune {tune.name}: budgets spent; {len(finals)} final runs, {len(finals) - len(to_train)} already "
                      f"finished")
        results += [sweep.run_spec(f) for f in finals if f not in to_train]  # "skipped" dicts, no training
        results += sweep.execute(to_train, lambda spec: launch(sweep.run_spec, spec), jobs, stop,
                                 lambda r: console.print(sweep.result_line(r)))
    return trials + results


def study_fingerprint(study: Study) -> dict[str, str]:
    """What a study's trials were drawn for: its search space and (a hash of) its base recipe as resolved."""
    import hashlib

    base = json.dumps(sweep.spec_raw(study.base), sort_keys=True, default=str)
    return {"space": json.dumps({k: p.describe() for k, p in sorted(study.space.items())}),
            "base": hashlib.sha256(base.encode()).hexdigest()[:16]}


def check_same_study(path: Path, url: str, study: Study, ostudy) -> None:
    """Refuse to add trials to a stored study that was made for another space or base recipe (its trials would mix
    into this budget); record the fingerprint on a new study."""
    now, stored = study_fingerprint(study), ostudy.user_attrs.get("fingerprint")
    if stored is None:
        ostudy.set_user_attr("fingerprint", now)
        ostudy.set_user_attr("space", {k: p.describe() for k, p in study.space.items()})
        return
    changed = [what for what in ("space", "base") if stored.get(what) != now[what]]
    if changed:
        raise SSMBenchError(f"{path}: study {study.name} in {url.split('@')[-1]} holds trials of another "
                            f"{' and '.join('search space' if c == 'space' else 'base recipe' for c in changed)} "
                            f"(stored {stored['space'] if 'space' in changed else stored['base']}); give this tune "
                            f"file another name or runs_dir, or delete that study's storage to start over")


def run_trials(tune: TuneFile, url: str, found: list[Study], ostudies: dict, launch, jobs: int, stop, console
               ) -> list[dict]:
    """Keep up to `jobs` trials running, taking studies in turn, until every budget is spent and no trial of
    this process runs; wait for trials other processes run. Returns one status dict per trial run here."""
    tried: set[tuple[str, int]] = set()
    running: dict[Future, TrialSpec] = {}
    results: list[dict] = []
    turn = 0
    while True:
        idle = 0
        while not stop.received and len(running) < jobs and idle < len(found):
            s = found[turn % len(found)]
            turn += 1
            spec = next_trial(tune, url, s, ostudies[s.name], tried)
            if spec is None:
                idle += 1
                continue
            idle = 0
            running[launch(run_trial, spec)] = spec
        if not running:
            if stop.received or not any(elsewhere(tune, url, s, ostudies[s.name]) for s in found):
                return results
            time.sleep(sweep.BUSY_RETRY_SECONDS)  # trials of another process: wait for them to end
            continue
        done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
        for f in done:
            spec = running.pop(f)
            try:
                r = f.result()
            except Exception as e:  # a worker or job died: the trial stays RUNNING; the next tune resumes it
                r = {**sweep.not_started(spec, f"{type(e).__name__}: {e}; `ssmbench tune` again resumes the trial"),
                     "status": "failed"}
            if r["status"] != "busy":
                results.append(r)
                console.print(trial_line(r))
            if r["status"] == "preempted" and not stop.received:
                stop.received = "a trial was preempted"
