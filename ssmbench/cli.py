"""The `ssmbench` command line. Thin: parse arguments, call one function per command, and turn known errors
into a one-paragraph message, never a traceback.

Exit status: 0 done; 2 bad input (recipe, data, checkpoint, an output path that cannot be written, a read or
write the machine refused); 3 non-finite training; 75 (EX_TEMPFAIL) training was preempted by SIGTERM/SIGINT
after writing a checkpoint: continue with `ssmbench train --resume RUN_DIR`; 130 aborted by a second interrupt."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from typer._click import exceptions as click_errors  # Typer >= 0.29 carries its own click
from typer.core import TyperOption

from ssmbench.errors import SSMBenchError, stop_on_sigterm
from ssmbench.paths import output_file, output_folder
from ssmbench.progress import plural

app = typer.Typer(help="ssmbench: train and compare state space model initializations from recipe YAMLs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
# Messages never wrap; off a terminal (a log file) tables get 240 columns instead of rich's default 80.
console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() or "COLUMNS" in os.environ else 240)

SET_HELP = "override a recipe field, e.g. --set train.lr=0.004 (repeatable; the value is read as YAML)"


def show_version(value: bool) -> None:
    if value:
        import platform

        import torch

        from ssmbench import __version__

        typer.echo(f"ssmbench {__version__} (torch {torch.__version__}, Python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def options(
    version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True, help="print the version and exit"),
    imports: List[str] = typer.Option([], "--import", help="import this module (or .py file) first, so the datasets, "
                                      "initializers and layers it registers can be named in recipes (repeatable)"),
) -> None:
    """ssmbench: train and compare state space model initializations from recipe YAMLs."""
    from ssmbench.registry import IMPORT_ENV, import_module

    if imports:  # kept in the environment, so sweep workers and torchrun ranks import them too
        for name in imports:
            import_module(name)
        listed = [m for m in os.environ.get(IMPORT_ENV, "").split(os.pathsep) if m]
        os.environ[IMPORT_ENV] = os.pathsep.join(listed + [m for m in imports if m not in listed])


@app.command()
def train(
    recipe: Optional[Path] = typer.Argument(None, help="recipe YAML to train (omit with --resume)"),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this run directory from its last checkpoint"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where new run directories are created"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar or progress lines"),
    nproc: int = typer.Option(1, "--nproc", min=1, help="data-parallel processes on this machine (launches torchrun; one per GPU)"),
    print_config: bool = typer.Option(False, "--print-config", help="print the resolved recipe (defaults and --set applied) as YAML and exit"),
    accept_recipe_change: bool = typer.Option(False, "--accept-recipe-change", help="with --resume: continue although "
                                              "the run's recipe.yaml changed since its last checkpoint"),
) -> None:
    """Train a recipe and write its run record under runs/<name>-<timestamp>-<hash>/.

    Exit status 75: SIGTERM/SIGINT stopped the run after a checkpoint; continue it with --resume RUN_DIR.

    Exit status 3: a non-finite loss or gradient (see train.on_nonfinite); 2: bad input.
    """
    from ssmbench.recipe import load_recipe
    from ssmbench.train import distributed
    from ssmbench.train.engine import train as run_training

    if recipe is None and resume is None:
        raise SSMBenchError("train: no recipe given; name a recipe YAML (e.g. `ssmbench train recipes/quickstart.yaml`) "
                            "or continue a run with --resume RUN_DIR")
    if recipe is not None and resume is not None:
        raise SSMBenchError("train: give a RECIPE or --resume RUN_DIR, not both (a resumed run keeps its own recipe)")
    if resume is not None and set_:
        raise SSMBenchError("train: --set cannot change a run being resumed; start a new run instead")
    if resume is None:
        output_folder(runs_dir, "--runs-dir")
    r = load_recipe(recipe, set_) if recipe is not None else None
    if print_config:
        from ssmbench.runs import RECIPE

        typer.echo((r or load_recipe(resume / RECIPE)).to_yaml(), nl=False)
        return
    if nproc > 1:  # re-run this command under torchrun, without --nproc
        args = ["train", *([str(recipe)] if recipe else ["--resume", str(resume)]), *(a for s in set_ for a in ("--set", s)),
                "--runs-dir", str(runs_dir), *(["--quiet"] if quiet else []),
                *(["--accept-recipe-change"] if accept_recipe_change else [])]
        code = distributed.launch(nproc, args)
        if code:
            raise typer.Exit(code)
        return
    results = run_training(r, runs_root=runs_dir, resume=resume, quiet=quiet, log=console.print,
                           accept_recipe_change=accept_recipe_change)
    if distributed.is_main_process():
        console.print(summary_line(results))


def summary_line(results: dict) -> str:
    test = results["test"]
    metric = f"test accuracy {test['accuracy']:.4f}" if "accuracy" in test else f"test loss {test['loss']:.5g}"
    best = results.get("best_val") or {}
    best_txt = f", best val {best.get('accuracy', best.get('loss')):.4f} at step {results['best_step']}" if best else ""
    speed = f", {results['samples_per_second']:.0f} samples/s" if results.get("samples_per_second") else ""
    return (f"[bold]{results['name']}[/]: {metric}{best_txt}; {plural(results['steps'], 'step')}, {plural(results['epochs'], 'epoch')}, "
            f"{results['n_params']:,} params, {results['train_seconds']:.0f} s{speed}; data: {results['data_source']}; "
            f"run: {results['run_dir']}")


@app.command()
def smoke(
    paths: List[Path] = typer.Argument(..., help="recipe files or folders (searched recursively for *.yaml)"),
    steps: int = typer.Option(3, help="optimizer steps per recipe"),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="where to write the runs (default: a temp folder)"),
) -> None:
    """Run a few training steps of every recipe, so a broken recipe fails CI; end with done / failed / skipped."""
    from ssmbench.smoke import smoke_recipes

    s = smoke_recipes(paths, steps, runs_dir or Path(tempfile.mkdtemp(prefix="ssmbench-smoke-")), console)
    skipped = f", {len(s['skipped'])} sweep file(s) skipped (run them with `ssmbench sweep`)" if s["skipped"] else ""
    console.print(f"smoke: {s['done']} recipe(s) done, {len(s['failed'])} failed{skipped}")
    if s["failed"]:
        raise SSMBenchError(f"smoke: {len(s['failed'])} recipe(s) failed: {', '.join(s['failed'])}")


@app.command()
def doctor() -> None:
    """Check this machine for GPU training: torch's CUDA build and GPU code vs each GPU, the driver, why CUDA is
    unusable, native bf16, NCCL, free memory, Triton's compile of the fused kernel and its self-check (docs/gpu.md).

    Exit status 1: nvidia-smi lists a GPU that torch cannot use."""
    from ssmbench.doctor import diagnose

    lines, unusable = diagnose()
    for status, text in lines:
        typer.echo(f"{status:<4}  {text}")
    if unusable:
        raise typer.Exit(1)


@app.command()
def components() -> None:
    """List every registered dataset, initializer and sequence layer."""
    from ssmbench.registry import DATASETS, INITIALIZERS, LAYERS

    for reg in (DATASETS, INITIALIZERS, LAYERS):
        typer.echo(f"{reg.kind}s: {', '.join(reg.names())}")


@app.command()
def bench(
    lengths: str = typer.Option("1024,4096,16384", "--lengths", help="comma-separated sequence lengths"),
    batch: int = typer.Option(8, "--batch", min=1, help="batch size"),
    d_model: int = typer.Option(256, "--d-model", min=1, help="features H of the S4D block"),
    d_state: int = typer.Option(64, "--d-state", min=2, help="state size N of the S4D block"),
    blocks: str = typer.Option("s4d,stu", "--blocks", help="comma-separated blocks: s4d, stu, ar-stu, stu-tensordot, s4, dss, s5, lru"),
    stu_d_model: int = typer.Option(64, "--stu-d-model", min=1, help="features of the STU blocks (stu, ar-stu, stu-tensordot)"),
    reps: int = typer.Option(3, "--reps", min=1, help="timed rounds per case (interleaved across paths)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:i]"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's choice)"),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="measure peak memory in a subprocess per case"),
    out: Path = typer.Option(Path("runs/bench.json"), "--out", help="JSON file for the results"),
    reference: Optional[Path] = typer.Option(None, "--reference", help="a reference s4d.py or s4.py (state-spaces/s4 models/s4/s4d.py or s4.py), timed beside the S4D or S4 block"),
    precision: str = typer.Option("fp32", "--precision", help="comma-separated: fp32, bf16 (autocast)"),
    bidirectional: bool = typer.Option(False, "--bidirectional", help="bidirectional S4D blocks (the reference stays causal: not with --reference)"),
    ops_only: bool = typer.Option(False, "--ops-only", help="only count kernel launches per forward+backward (no timing, memory or differences); with TRITON_INTERPRET=1 on the CPU the S4D fast path runs the Triton kernels"),
) -> None:
    """Time forward+backward of the S4D, STU and AR-STU blocks, fast vs straightforward path, with peak memory."""
    from ssmbench.bench import bench as run

    output_file(out, "--out")
    run(lengths, batch, d_model, d_state, blocks, reps, device, threads, memory, stu_d_model, out, console,
        reference=reference, precision=precision, ops_only=ops_only, bidirectional=bidirectional)


@app.command()
def sweep(
    sweep_file: Path = typer.Argument(..., help="sweep YAML (base recipes and a grid of variants, seeds, train fractions)"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="runs trained in parallel processes (1 = one after another)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list every run of the grid and its state, and per variant the resolved "
                                 "fields that differ from the baseline; train nothing"),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="where the runs go (default: the sweep file's runs_dir, else runs/)"),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP + "; applied to every run"),
    backend: str = typer.Option("local", "--backend", help="where runs execute: local, ray (Ray tasks) or slurm (submitit jobs)"),
    detach: bool = typer.Option(False, "--detach", help="slurm: submit the jobs and return without waiting for them"),
) -> None:
    """Train every run of a sweep grid that has no finished record yet (interrupted runs are resumed)."""
    from ssmbench.backends import run_sweep

    if runs_dir is not None and not dry_run:
        output_folder(runs_dir, "--runs-dir")
    results = run_sweep(sweep_file, backend, runs_dir, jobs, dry_run, tuple(set_), console, wait=not detach)
    if results:
        console.print(sweep_summary(results))
    failed = [r["name"] for r in results if r["status"] == "failed"]
    if failed:
        raise SSMBenchError(f"sweep: {len(failed)} of {len(results)} run(s) failed (recorded in their run "
                            f"directories): {', '.join(failed)}")
    preempted = [r["name"] for r in results if r["status"] in ("preempted", "stopped")]  # stopped: not started
    if preempted:
        from ssmbench.train.engine import Preempted

        from ssmbench.registry import IMPORT_ENV

        imports = [m for m in os.environ.get(IMPORT_ENV, "").split(os.pathsep) if m]
        again = shlex.join(["ssmbench", *(a for m in imports for a in ("--import", m)), "sweep", str(sweep_file),
                            *(["--runs-dir", str(runs_dir)] if runs_dir else []), *(a for s in set_ for a in ("--set", s)),
                            *(["--jobs", str(jobs)] if jobs > 1 else []), *(["--backend", backend] if backend != "local" else [])])
        raise Preempted(f"sweep: stopped by a signal during {', '.join(preempted)}; run `{again}` to resume it and "
                        f"train the rest")


@app.command()
def tune(
    tune_file: Path = typer.Argument(..., help="tune YAML (base recipes, and per variant a search space over recipe fields)"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="trials (then final runs) at once, on any backend"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the spaces, the budget per variant and the fields each "
                                 "variant tunes, with the trials done so far; train nothing"),
    storage: Optional[str] = typer.Option(None, "--storage", help="study storage: a database URL (postgresql://user:pw@"
                                          "host/db, sqlite:///file.db) or a journal file path (shared filesystem); "
                                          "default: SQLite in the runs folder"),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="where the runs go (default: the tune file's runs_dir, else runs/)"),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP + "; applied to every trial and final run"),
    backend: str = typer.Option("local", "--backend", help="where trials execute: local, ray (Ray tasks) or slurm (submitit jobs)"),
) -> None:
    """Tune recipe fields on validation data with the same trial budget for every variant, then train and test the
    chosen configuration of each with several seeds (docs/tuning.md). A killed tune resumes where it stopped."""
    from ssmbench.tune import run_tune

    if runs_dir is not None and not dry_run:
        output_folder(runs_dir, "--runs-dir")
    results = run_tune(tune_file, backend, runs_dir, jobs, dry_run, storage, tuple(set_), console)
    if dry_run:
        return
    failed = [r["name"] for r in results if "trial" not in r and r["status"] == "failed"]  # final runs
    stopped = [r["name"] for r in results if r["status"] in ("preempted", "stopped")]
    if stopped:
        from ssmbench.train.engine import Preempted

        raise Preempted(f"tune: stopped by a signal during {', '.join(stopped)}; run the same `ssmbench tune` again "
                        f"to resume it")
    if failed:
        raise SSMBenchError(f"tune: {len(failed)} final run(s) failed (recorded in their run directories): "
                            f"{', '.join(failed)}")
    console.print(f"tune: done; `ssmbench report {runs_dir or 'RUNS_DIR'}` puts the final runs in its tables")


def sweep_summary(results: list[dict]) -> str:
    """The sweep's last line: how many runs were trained, already done, failed (with why), stopped or submitted."""
    labels = {"finished": "trained", "skipped": "skipped (already finished)", "failed": "failed",
              "preempted": "stopped by a signal", "stopped": "not started (stopped by a signal)",
              "submitted": "submitted (--detach)"}
    count = {k: sum(r["status"] == k for r in results) for k in labels}
    parts = [f"{n} {labels[k]}" for k, n in count.items() if n or k in ("finished", "skipped", "failed")]
    text = f"sweep: {len(results)} run(s): {', '.join(parts)}"
    why = [f"  {r['name']}: {r['error']}" for r in results if r["status"] == "failed"]
    return "\n".join([text, *why])


@app.command()
def report(
    paths: List[Path] = typer.Argument(None, help="runs folders or run directories (default: runs/)"),
    group_by: str = typer.Option("variant", "--group-by", help="recipe tag that names a table row (runs without it use their recipe name)"),
    fmt: str = typer.Option("md", "--format", help="table format: md, csv, latex or json"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the tables to this file instead of printing them"),
    plots: Optional[Path] = typer.Option(None, "--plots", help="write PNG figures (learning curves, data efficiency, poles, TDI spectra) here"),
    window: int = typer.Option(0, "--window", min=0, help="data efficiency: average the last N validation evaluations instead of the test value (0 = test)"),
    explain: bool = typer.Option(False, "--explain", help="per cell: the run directories counted, duplicate seeds, and the recipe fields the runs share and differ in"),
    runs_csv: Optional[Path] = typer.Option(None, "--runs-csv", help="also write a tidy CSV here: one line per run and test metric (variant, task, seed, value, n_eval, source, ...)"),
) -> None:
    """Comparison tables and plots from run directories alone (no re-training)."""
    from ssmbench.report import report as build_report

    if out is not None:
        output_file(out, "--out")
    if plots is not None:
        output_folder(plots, "--plots")
    text, written = build_report(paths or [Path("runs")], group_by, fmt, out, plots, window, explain, runs_csv)
    if out is None:
        typer.echo(text, nl=False)
    else:
        console.print(f"tables written to {out}")
    for path in written:
        console.print(f"plot: {path}")


@app.command("init-tdi")
def init_tdi(
    dataset: Optional[str] = typer.Option(None, "--dataset", help="registered dataset adapter whose training data sets the spectrum"),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="take data, model and init options from this recipe instead of --dataset"),
    set_: List[str] = typer.Option([], "--set", help="override a recipe field, e.g. --set data.permute=false (repeatable; the value is read as YAML; "
                                "`data.` may be left out of a data option)"),
    samples: Optional[int] = typer.Option(None, "--samples", min=2, help="most training pairs used for the task spectrum (default 20000)"),
    d_state: Optional[int] = typer.Option(None, "--d-state", min=2, help="state size N of the SSM layer (N/2 complex modes; default 64)"),
    d_model: Optional[int] = typer.Option(None, "--d-model", min=1, help="channels H of the SSM layer (default 64)"),
    steps: Optional[int] = typer.Option(None, "--steps", min=0, help="Adam iterations of the spectrum matching (default 2000)"),
    out: Optional[Path] = typer.Option(None, "--out", help="artifact path: NAME writes NAME.pt, NAME.json and NAME.png; default <data.root>/cache/tdi/"),
) -> None:
    """TDI: match an SSM layer's power spectrum to a dataset's and save the parameters (docs/methods.md §C)."""
    from ssmbench.init_tdi import init_tdi as run_init_tdi

    if out is not None:
        output_file(out, "--out")
    run_init_tdi(dataset, recipe, set_, samples, d_state, d_model, steps, out, console)


data_app = typer.Typer(help="Datasets: list, show options, download, prepare (cache), generate and synthesize.", no_args_is_help=True)
generate_app = typer.Typer(help="Write generated LRA data in the release layout (offline).", no_args_is_help=True)
data_app.add_typer(generate_app, name="generate")
app.add_typer(data_app, name="data")
ROOT_HELP = "data root (the recipes' data.root)"


@data_app.command("list")
def data_list(root: Path = typer.Option(Path("data"), "--root", help=ROOT_HELP)) -> None:
    """Every dataset adapter: data present or missing, its source, prepared sizes, how to get it."""
    from ssmbench.data.catalog import list_text

    typer.echo(list_text(root))


@data_app.command("show")
def data_show(
    name: str = typer.Argument(..., help="registered dataset adapter, e.g. smnist"),
    root: Path = typer.Option(Path("data"), "--root", help=ROOT_HELP),
) -> None:
    """One adapter: its data folder and state, and every option with type, default and description."""
    from ssmbench.data.catalog import show_text

    typer.echo(show_text(name, root))


@data_app.command("prepare")
def data_prepare(
    name: str = typer.Argument(..., help="registered dataset adapter, e.g. listops"),
    source: Optional[str] = typer.Option(None, "--source", help="the adapter's `source` folder, relative to --root"),
    root: Path = typer.Option(Path("data"), "--root", help=ROOT_HELP),
    set_: List[str] = typer.Option([], "--set", help="an adapter option, e.g. --set data.permute=false (as in train; "
                                   "`data.` may be left out; repeatable; see `ssmbench data show NAME`)"),
) -> None:
    """Read a dataset once and store its prepared splits under <root>/<name>/prepared/."""
    from ssmbench.data.catalog import prepare

    r = prepare(name, str(root), source, set_)
    sizes = ", ".join(f"{v:,} {k}" for k, v in r["sizes"].items())
    console.print(f"{r['name']}: {sizes} sequences of length {r['seq_len']} ({r['source']} data) in {r['seconds']} s"
                  + (f"; cached in {r['cache']}" if r["cache"] else ""))


@data_app.command("download")
def data_download(
    name: str = typer.Argument(..., help="dataset adapter with a public archive, e.g. listops (`data list` shows which)"),
    root: Path = typer.Option(Path("data"), "--root", help=ROOT_HELP),
    url: Optional[str] = typer.Option(None, "--url", help="a mirror of the same archive: http(s):// or file:// URL"),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="the SHA-256 the archive must have (replaces the "
                                         "published checksum; use it with a --url that serves another copy)"),
) -> None:
    """Download, verify and extract an adapter's official data into its folder under --root (resumable)."""
    from ssmbench.data.download import download

    output_folder(root, "--root")
    download(name, root, url=url, sha256=sha256, console=console)


def generator_bar(what: str):
    """A progress bar with ETA for the data generators; `bar.progress(done, total)` moves it."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    bar = Progress(TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=not console.is_terminal)
    task = bar.add_task(what, total=None)
    bar.progress = lambda done, total: bar.update(task, completed=done, total=total)
    return bar


@generate_app.command("listops")
def generate_listops(
    out: Path = typer.Option(Path("data/lra_release/listops-1000"), "--out", help="folder for basic_{train,val,test}.tsv"),
    n: int = typer.Option(96000, "--n", min=1, help="training samples (the release has 96000)"),
    eval_n: Optional[int] = typer.Option(None, "--eval-n", min=1, help="validation and test samples each (default n/48, 2000 for the release)"),
    seed: int = typer.Option(0, "--seed", help="random seed"),
) -> None:
    """ListOps expressions (docs/methods.md §G procedure) in the release's TSV format."""
    from ssmbench.data.generators.listops import write_release

    output_folder(out, "--out")
    tick = time.perf_counter()
    with generator_bar("listops") as bar:
        r = write_release(out, n, eval_n, seed, progress=bar.progress)
    sizes = ", ".join(f"{v:,} {k}" for k, v in r["sizes"].items())
    console.print(f"ListOps: wrote {sizes} expressions to {out} in {time.perf_counter() - tick:.1f} s "
                  f"({r['acceptance']:.1%} of the drawn trees had an allowed length)")


@generate_app.command("pathfinder")
def generate_pathfinder(
    out: Path = typer.Option(Path("data/lra_release"), "--out", help="folder that receives pathfinder<resolution>/<difficulty>/"),
    resolution: int = typer.Option(32, "--resolution", help="image side: 32 (Pathfinder), 64, or 128 (Path-X)"),
    contour_length: int = typer.Option(14, "--contour-length", help="dashes per target path: 6, 9 or 14"),
    n: int = typer.Option(200000, "--n", min=1, help="images"),
    seed: int = typer.Option(0, "--seed", help="random seed"),
) -> None:
    """Pathfinder images (docs/methods.md §G procedure) with metadata in the release layout."""
    from ssmbench.data.generators.pathfinder import write_release

    output_folder(out, "--out")
    try:
        with generator_bar(f"pathfinder{resolution}") as bar:
            r = write_release(out, resolution, contour_length, n, seed, progress=bar.progress)
    except ValueError as e:
        raise SSMBenchError(f"data generate pathfinder: {e}") from None
    console.print(f"Pathfinder-{resolution}: wrote {r['n']:,} images ({r['positive_fraction']:.1%} connected) to "
                  f"{r['folder']} in {r['seconds']:.1f} s")


@data_app.command("synth-speech")
def synth_speech(
    out: Path = typer.Option(Path("data/SpeechCommands/speech_commands_v0.02"), "--out", help="folder in the Speech Commands layout"),
    words: int = typer.Option(35, "--words", help="10 (SC10 words) or 35 (all)"),
    speakers: int = typer.Option(40, "--speakers", min=1, help="synthetic speakers (voice, pitch, rate) per word"),
    seed: int = typer.Option(0, "--seed", help="random seed"),
) -> None:
    """A synthetic Speech Commands stand-in spoken by espeak-ng and flite (labelled synthetic)."""
    from ssmbench.data.generators.speech_synth import write_release
    from ssmbench.data.speech import WORDS10, WORDS35

    if words not in (10, 35):
        raise SSMBenchError("data synth-speech: --words must be 10 or 35")
    output_folder(out, "--out")
    with generator_bar("synth-speech") as bar:
        r = write_release(out, WORDS10 if words == 10 else WORDS35, speakers, seed, progress=bar.progress)
    console.print(f"synth-speech: wrote {r['clips']:,} clips of {words} words ({r['validation']} validation, "
                  f"{r['testing']} testing; voices {', '.join(r['engines'])}) to {out} in {r['seconds']:.1f} s")


def value_name(param) -> str:
    """How help and docs/cli.md name an option's value: KEY=VALUE for `--set`, MODULE for `--import`, else PATH,
    INTEGER, NUMBER or TEXT (Typer's own labels are `<bool>` on a flag and `<list[str]>` on a repeatable option)."""
    if "--set" in param.opts:
        return "KEY=VALUE"
    if "--import" in param.opts:
        return "MODULE"
    desc = param.type_descriptor
    kind = desc.annotation
    if getattr(kind, "__origin__", None) is list:
        (kind,) = kind.__args__
    if kind is bool:
        return ""
    if desc.is_path or kind is Path:
        return "PATH"
    return {int: "INTEGER", float: "NUMBER"}.get(kind, "TEXT")


def with_readable_help(command):
    """Give every option of `command` and its subcommands the value name of `value_name` (none on a flag)."""
    for param in command.params:
        if isinstance(param, TyperOption):
            param.metavar = "" if param.is_flag else value_name(param)
    help_option = command.get_help_option(typer.Context(command))
    if help_option is not None:
        help_option.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        with_readable_help(sub)
    return command


def say(label: str, message: str) -> None:
    """One message in the style of every ssmbench error: `error: ...` (or `stopped: ...`), never a box."""
    console.print(f"{label}: {message}", style="red", highlight=False, markup=False, soft_wrap=True)


def main() -> None:
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)  # exit 75 until a command handles signals itself
    try:
        code = with_readable_help(typer.main.get_command(app)).main(prog_name="ssmbench", standalone_mode=False)
        if isinstance(code, int) and code:  # typer.Exit(code) from a command
            sys.exit(code)
    except click_errors.NoArgsIsHelpError as e:  # `ssmbench` or `ssmbench data` alone: the help
        e.show()
        sys.exit(0)
    except click_errors.ClickException as e:  # a bad option value, an unknown command: one line, as for any input error
        ctx = getattr(e, "ctx", None)
        where = f"{ctx.command_path}: " if ctx else ""
        hint = f" (see `{ctx.command_path} --help`)" if ctx else ""
        say("error", f"{where}{e.format_message()}{hint}")
        sys.exit(e.exit_code)
    except typer.Abort:
        say("error", "aborted")
        sys.exit(1)
    except SSMBenchError as e:  # exit 75 is a stop by a signal that a rerun continues, not an error
        say("stopped" if e.exit_code == 75 else "error", str(e))
        sys.exit(e.exit_code)
    except OSError as e:  # the machine refused a read or write (a full disk, a vanished folder): say which file
        where = f"{e.filename}: " if e.filename else ""
        say("error", f"{where}{e.strerror or e}")
        sys.exit(SSMBenchError.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted", style="red")
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
