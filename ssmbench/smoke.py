"""`ssmbench smoke`: a few steps of every recipe, each in its own run directory, failures collected.

Recipes keep their real `data.root`; smoke points it at a temporary root that it fills with tiny datasets in
the official formats (`ssmbench.data.fixtures`: generated ListOps / Pathfinder / Path-X, fixture IMDB, AAN,
CIFAR and Speech Commands), so every recipe runs offline on any machine.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ssmbench.errors import RecipeError, SSMBenchError
from ssmbench.recipe import read_yaml_mapping


def split_files(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(training recipes, sweep and tune files) among `paths` (folders searched recursively); sweep files have a
    `grid`, tune files `variants` and no `data`."""
    files: list[Path] = []
    for p in paths:
        files += sorted(p.rglob("*.yaml")) if p.is_dir() else [p]
    recipes, sweeps = [], []
    for f in files:
        try:
            raw = read_yaml_mapping(f)
        except RecipeError:  # unreadable: listed as a recipe, whose check then names the problem
            raw = None
        plan = isinstance(raw, dict) and ("grid" in raw or ("variants" in raw and "data" not in raw))
        (sweeps if plan else recipes).append(f)
    return recipes, sweeps


def recipe_files(paths: list[Path]) -> list[Path]:
    """Training recipes among `paths`; sweep files are skipped."""
    return split_files(paths)[0]


def smoke_overrides(steps: int, data_root: Path) -> list[str]:
    """Few steps, tiny batches, and a narrow one-layer model (the recipe's layer kind, init, data and options are
    kept), so the whole recipe folder runs on a CPU in minutes; TDI's spectrum fit is cut to a few iterations."""
    return [f"train.max_steps={steps}", "train.max_eval_batches=2", "train.max_test_batches=2", "train.eval_every=null",
            "train.warmup_steps=0", f"data.root={data_root}", "train.batch_size=4", "train.eval_batch_size=4",
            "model.d_model=16", "model.n_layers=1", "init.samples=64", "init.tdi.steps=5"]


def fixture_root(runs_dir: Path) -> Path:
    """A data root under runs_dir with every adapter's fixture data, allowed via $SSMBENCH_DATA_ROOT."""
    from ssmbench.data.fixtures import write_all
    from ssmbench.paths import DATA_ROOT_ENV

    root = (runs_dir / "smoke-data").resolve()
    write_all(root)
    listed = os.environ.get(DATA_ROOT_ENV, "")
    os.environ[DATA_ROOT_ENV] = os.pathsep.join([p for p in (listed, str(root)) if p])
    return root


def smoke_recipes(paths: list[Path], steps: int, runs_dir: Path, console) -> dict:
    """Train `steps` steps of every recipe; return {done: count, failed: [recipe files], skipped: [sweep files]}."""
    from ssmbench.recipe import load_recipe
    from ssmbench.train.engine import train

    failures = []
    data_root = fixture_root(runs_dir)
    recipes, sweeps = split_files(paths)
    for f in recipes:
        start = time.perf_counter()
        try:
            recipe = load_recipe(f, smoke_overrides(steps, data_root))
            results = train(recipe, runs_root=runs_dir, quiet=True, log=lambda *_: None)
            test = results["test"]
            console.print(f"ok   {f}: {results['steps']} steps, test loss {test['loss']:.4f} "
                          f"({time.perf_counter() - start:.1f} s)")
        except SSMBenchError as e:
            failures.append(str(f))
            console.print(f"FAIL {f}: {e}")
        except Exception as e:  # a crash in a recipe is exactly what smoke exists to find
            failures.append(str(f))
            console.print(f"FAIL {f}: {type(e).__name__}: {e}")
    return {"done": len(recipes) - len(failures), "failed": failures, "skipped": sweeps}
