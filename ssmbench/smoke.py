"""`ssmbench smoke`: a few steps of every recipe, each in its own run directory, failures collected."""

from __future__ import annotations

from pathlib import Path

import yaml

from ssmbench.errors import SSMBenchError


def recipe_files(paths: list[Path]) -> list[Path]:
    """Training recipes among `paths` (folders searched recursively); sweep files (with a `grid`) are skipped."""
    files: list[Path] = []
    for p in paths:
        files += sorted(p.rglob("*.yaml")) if p.is_dir() else [p]
    out = []
    for f in files:
        try:
            raw = yaml.safe_load(f.read_text())
        except (OSError, yaml.YAMLError):
            raw = None
        if isinstance(raw, dict) and "grid" in raw:
            continue
        out.append(f)
    return out


def smoke_overrides(steps: int) -> list[str]:
    return [f"train.max_steps={steps}", "train.max_eval_batches=2", "train.eval_every=null", "train.warmup_steps=0"]


def smoke_recipes(paths: list[Path], steps: int, runs_dir: Path, console) -> list[str]:
    from ssmbench.recipe import load_recipe
    from ssmbench.train.engine import train

    failures = []
    for f in recipe_files(paths):
        try:
            recipe = load_recipe(f, smoke_overrides(steps))
            results = train(recipe, runs_root=runs_dir, quiet=True, log=lambda *_: None)
            test = results["test"]
            console.print(f"ok   {f}: {results['steps']} steps, test loss {test['loss']:.4f}")
        except SSMBenchError as e:
            failures.append(str(f))
            console.print(f"FAIL {f}: {e}")
        except Exception as e:  # a crash in a recipe is exactly what smoke exists to find
            failures.append(str(f))
            console.print(f"FAIL {f}: {type(e).__name__}: {e}")
    return failures
