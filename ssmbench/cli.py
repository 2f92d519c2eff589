"""The `ssmbench` command line. Thin: parse arguments, call one function per command, and turn known errors
into a one-paragraph message with exit status 2 (3 for non-finite training)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from ssmbench.errors import SSMBenchError

app = typer.Typer(help="ssmbench: train and compare state space model initializations from recipe YAMLs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)

SET_HELP = "override a recipe field, e.g. --set train.lr=0.004 (repeatable; the value is read as YAML)"


@app.command()
def train(
    recipe: Optional[Path] = typer.Argument(None, help="recipe YAML to train (omit with --resume)"),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this run directory from its last checkpoint"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where new run directories are created"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Train a recipe and write its run record under runs/<name>-<timestamp>-<hash>/."""
    from ssmbench.recipe import load_recipe
    from ssmbench.train.engine import train as run_training

    if (recipe is None) == (resume is None):
        raise SSMBenchError("train: give either a RECIPE file or --resume RUN_DIR (not both)")
    if resume is not None and set_:
        raise SSMBenchError("train: --set cannot change a run being resumed; start a new run instead")
    r = load_recipe(recipe, set_) if recipe is not None else None
    results = run_training(r, runs_root=runs_dir, resume=resume, quiet=quiet, log=console.print)
    console.print(summary_line(results))


def summary_line(results: dict) -> str:
    test = results["test"]
    metric = f"test accuracy {test['accuracy']:.4f}" if "accuracy" in test else f"test loss {test['loss']:.5g}"
    best = results.get("best_val") or {}
    best_txt = f", best val {best.get('accuracy', best.get('loss')):.4f} at step {results['best_step']}" if best else ""
    speed = f", {results['samples_per_second']:.0f} samples/s" if results.get("samples_per_second") else ""
    return (f"[bold]{results['name']}[/]: {metric}{best_txt}; {results['steps']} steps, {results['epochs']} epochs, "
            f"{results['n_params']:,} params, {results['train_seconds']:.0f} s{speed}; data: {results['data_source']}; "
            f"run: {results['run_dir']}")


@app.command()
def smoke(
    paths: List[Path] = typer.Argument(..., help="recipe files or folders (searched recursively for *.yaml)"),
    steps: int = typer.Option(3, help="optimizer steps per recipe"),
    runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="where to write the runs (default: a temp folder)"),
) -> None:
    """Run a few training steps of every recipe, so a broken recipe fails CI."""
    from ssmbench.smoke import smoke_recipes

    failures = smoke_recipes(paths, steps, runs_dir or Path(tempfile.mkdtemp(prefix="ssmbench-smoke-")), console)
    if failures:
        raise SSMBenchError(f"smoke: {len(failures)} recipe(s) failed: {', '.join(failures)}")


@app.command()
def components() -> None:
    """List every registered dataset, initializer and sequence layer."""
    from ssmbench.recipe import load_components
    from ssmbench.registry import DATASETS, INITIALIZERS, LAYERS

    load_components()
    for reg in (DATASETS, INITIALIZERS, LAYERS):
        typer.echo(f"{reg.kind}s: {', '.join(reg.names())}")


def main() -> None:
    try:
        app()
    except SSMBenchError as e:
        console.print(f"error: {e}", style="red", highlight=False, markup=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted", style="red")
        sys.exit(130)
