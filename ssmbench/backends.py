"""Where the runs of a sweep execute: `local` (this machine), `ray` (Ray tasks) or `slurm` (Slurm jobs via submitit).

    ssmbench sweep SWEEP.yaml --backend local|ray|slurm [--detach]

Every backend executes the same function, `ssmbench.sweep.run_spec(spec)`, for each run that has no finished
record yet (`sweep.find_finished`), so all of them write identical run directories into the sweep's `runs_dir`
(made absolute before submission; on a cluster it must be on a filesystem the workers share) and `ssmbench
report` does not care where a run executed. Interrupted runs are resumed by the next `ssmbench sweep`, as locally.

Resources per run come from the sweep file's optional `resources` section (`Resources` below):

    resources:
      cpus: 4               # per run: Ray num_cpus / Slurm cpus_per_task; also the run's torch threads
      gpus: 1               # per run: Ray num_gpus / Slurm gpus_per_node
      ray: {address: auto}  # a running cluster ("auto" or "ray://head:10001"); omitted = start a local instance
      slurm:
        partition: gpu
        time: 240           # minutes per run
        folder: slurm-logs  # submitit's job logs and pickles
        extra: {account: my-account}   # any other sbatch option

Ray and submitit are optional dependencies: `pip install 'ssmbench[ray]'`, `pip install 'ssmbench[slurm]'`.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ssmbench import sweep
from ssmbench.errors import RecipeError, SSMBenchError

BACKENDS = ("local", "ray", "slurm")


class RayOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: Optional[str] = Field(None, description="Ray cluster to join ('auto', 'ray://head:10001'); null = start a local instance")


class SlurmOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partition: Optional[str] = Field(None, description="Slurm partition (null = the cluster's default)")
    time: int = Field(60, ge=1, le=60 * 24 * 30, description="time limit of each run's job, in minutes")
    folder: str = Field("slurm-logs", description="where submitit keeps job logs and pickles (shared filesystem)")
    extra: dict[str, Any] = Field(default_factory=dict, description="other sbatch options, e.g. {account: X, qos: Y}")


class Resources(BaseModel):
    """The `resources` section of a sweep file: what each run asks of Ray or Slurm."""

    model_config = ConfigDict(extra="forbid")

    cpus: int = Field(1, ge=1, le=1024, description="CPU cores per run (also the run's torch threads)")
    gpus: int = Field(0, ge=0, le=64, description="GPUs per run")
    ray: RayOptions = Field(default_factory=RayOptions)
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)


def load_resources(sweep_file: Path) -> Resources:
    """The validated `resources` section of a sweep file (defaults when absent)."""
    from ssmbench.recipe import _format_errors, read_yaml_mapping

    raw = read_yaml_mapping(Path(sweep_file)).get("resources") or {}
    try:
        return Resources.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(str(sweep_file), _format_errors(e, Resources, ("resources",))) from None


def require(module: str, extra: str):
    """Import an optional dependency or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SSMBenchError(f"sweep --backend {extra}: the optional package '{module}' is not installed; install it "
                            f"with `pip install 'ssmbench[{extra}]'` (in a checkout: `.venv/bin/pip install -c constraints.txt "
                            f"-e '.[{extra}]'`, which keeps the tested torch)") from None


def absolute(spec: sweep.RunSpec) -> sweep.RunSpec:
    """The spec with an absolute runs_dir, so a worker with another working directory writes to the same place."""
    return dataclasses.replace(spec, runs_dir=str(Path(spec.runs_dir).resolve()))


# --------------------------------------------------------------------------------------------------
# Executors: (specs, resources, report) -> one status dict per spec (sweep.run_spec's format)


@contextmanager
def ray_session(res: Resources) -> Iterator[Any]:
    """The `ray` module, joined to `res.ray.address` or to a local Ray instance started here (and shut down
    afterwards). An already initialized Ray (e.g. `ray.init` by the caller) is reused."""
    ray = require("ray", "ray")
    started = not ray.is_initialized()
    if started:
        ray.init(address=res.ray.address, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def run_on_ray(specs: list[sweep.RunSpec], res: Resources, report: Callable[[dict], None]) -> list[dict]:
    """One Ray task per run with {num_cpus: cpus, num_gpus: gpus} (`ray_session`)."""
    with ray_session(res) as ray:
        task = ray.remote(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=0)(sweep.run_spec)
        pending = [task.remote(absolute(s), res.cpus) for s in specs]
        results = []
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            results.append(ray.get(ready[0]))
            report(results[-1])
        return results


def slurm_executor(res: Resources, cluster: str = "slurm"):
    """A submitit executor with the per-run resources of `res`; `cluster="local"` runs the jobs as local processes
    (submitit's LocalExecutor: tests, and trying a sweep file out without Slurm)."""
    submitit = require("submitit", "slurm")
    s = res.slurm
    try:
        executor = submitit.AutoExecutor(folder=s.folder, cluster=cluster)
    except (RuntimeError, ValueError) as e:
        raise SSMBenchError(f"sweep --backend slurm: cannot use the Slurm cluster ({e}); run it on a Slurm login "
                            f"node (where `sbatch` works)") from None
    executor.update_parameters(name="ssmbench", timeout_min=s.time, cpus_per_task=res.cpus, gpus_per_node=res.gpus,
                               slurm_partition=s.partition, slurm_additional_parameters=dict(s.extra))
    return executor


def run_on_slurm(specs: list[sweep.RunSpec], res: Resources, report: Callable[[dict], None], wait: bool = True,
                 cluster: str = "slurm") -> list[dict]:
    """One Slurm job per run, submitted as a job array through submitit (`slurm_executor`). With `wait`, block
    until all finish; otherwise return status "submitted" with the job ids."""
    submitit = require("submitit", "slurm")
    s = res.slurm
    executor = slurm_executor(res, cluster)
    with executor.batch():
        jobs = [executor.submit(sweep.run_spec, absolute(spec), res.cpus) for spec in specs]
    by_job = dict(zip((j.job_id for j in jobs), specs))
    if not wait:
        results = [{"key": spec.key, "name": spec.name, "tags": spec.tags, "status": "submitted", "action": "submit",
                    "run_dir": f"job {job.job_id}, logs in {s.folder}", "test": None, "error": None, "seconds": 0.0}
                   for job, spec in zip(jobs, specs)]
        for r in results:
            report(r)
        return results
    results = []
    for job in submitit.helpers.as_completed(jobs, poll_frequency=1 if cluster == "local" else 15):
        try:
            results.append(job.result())
        except Exception as e:  # the job itself died (time limit, node failure); run_spec never raises
            spec = by_job[job.job_id]
            results.append({"key": spec.key, "name": spec.name, "tags": spec.tags, "status": "failed", "action": "new",
                            "run_dir": f"job {job.job_id}", "test": None, "seconds": 0.0,
                            "error": f"Slurm job {job.job_id} failed ({type(e).__name__}: {str(e)[-300:]}); "
                                     f"logs in {s.folder}; `ssmbench sweep` again resumes the run"})
        report(results[-1])
    return results


@contextmanager
def launcher(backend: str, res: Resources, jobs: int = 1, slurm_cluster: str = "slurm"
             ) -> Iterator[Callable[[Callable[..., dict], Any], Future]]:
    """Start work one item at a time (`ssmbench tune` decides each trial after the last ones): yields
    `launch(run, item) -> Future` of `run(item, threads)`, a top-level function and a picklable item whose paths are
    absolute. local: in this process (jobs = 1) or in a pool of `jobs` spawned worker processes (`sweep.worker_init`:
    own process group, SIGTERM when this process dies); ray: one Ray task per item; slurm: one job per item, awaited
    by a thread. How many items run at once is the caller's choice (`jobs`)."""
    if backend not in BACKENDS:
        raise SSMBenchError(f"--backend: unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "local" and jobs == 1:
        yield lambda run, item: sweep.done_future(run(item, None))
    elif backend == "local":
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=sweep.worker_init, initargs=(os.getpid(),)) as pool:
            yield lambda run, item: pool.submit(sweep.worker_run_spec, item, threads, run)
    elif backend == "ray":
        with ray_session(res) as ray:
            yield lambda run, item: ray.remote(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=0)(run).remote(
                item, res.cpus).future()
    else:
        executor = slurm_executor(res, slurm_cluster)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as waiters:
            yield lambda run, item: waiters.submit(lambda job: job.result(), executor.submit(run, item, res.cpus))


# --------------------------------------------------------------------------------------------------
# Dispatch


def run_sweep(sweep_file: Path, backend: Literal["local", "ray", "slurm"] = "local", runs_dir: Optional[Path] = None,
              jobs: int = 1, dry_run: bool = False, overrides: tuple[str, ...] = (), console=None, wait: bool = True,
              slurm_cluster: str = "slurm") -> list[dict]:
    """Run a sweep on `backend`; return one status dict per run (finished runs are reported as skipped)."""
    from rich.console import Console

    if backend not in BACKENDS:
        raise SSMBenchError(f"sweep --backend: unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "local" or dry_run:
        return sweep.run_sweep(sweep_file, runs_dir, jobs, dry_run, overrides, console)
    if jobs != 1:
        raise SSMBenchError(f"sweep --jobs applies to the local backend; {backend} runs as many runs at once as the "
                            f"per-run `resources` in the sweep file allow")
    console = console or Console(stderr=True)
    resources = load_resources(sweep_file)
    specs = sweep.expand(sweep_file, runs_dir, tuple(overrides))
    index = sweep.index_runs(specs[0].runs_dir) if specs else {}
    todo = [s for s in specs if sweep.find_finished(s, index) is None]
    skipped = [sweep.run_spec(s) for s in specs if s not in todo]  # a finished spec: a "skipped" dict, no training
    console.print(f"sweep {Path(sweep_file).name}: {len(specs)} runs, {len(skipped)} already finished, {len(todo)} to "
                  f"run on {backend} ({resources.cpus} CPU, {resources.gpus} GPU per run)")
    tick = time.perf_counter()

    def report(r: dict) -> None:
        console.print(sweep.result_line(r))

    if not todo:
        ran = []
    elif backend == "ray":
        ran = run_on_ray(todo, resources, report)
    else:
        ran = run_on_slurm(todo, resources, report, wait=wait, cluster=slurm_cluster)
    console.print(f"{backend}: {len(ran)} runs in {time.perf_counter() - tick:.1f} s")
    order = {s.key: i for i, s in enumerate(specs)}
    return sorted(skipped + ran, key=lambda r: order[r["key"]])
