"""`ssmbench init-tdi`: compute a TDI artifact for a dataset or a recipe, outside a training run.

The artifact is S4D's (Algorithm 1 fits S4D channels); a recipe of kind dss, s5, lru or s4 is refused with one
line, since TDI on DSS, S5 and LRU is the F.1 placement done at the start of a run (docs/methods.md §I.6).
The command builds the recipe's data and model (the same encoder a training run starts from) and calls the TDI
math in `ssmbench.init.tdi` (task spectrum, matching, saving the artifact), with a progress bar.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ssmbench.data import build_data
from ssmbench.errors import RecipeError, SSMBenchError
from ssmbench.init import ssm_layers
from ssmbench.init.tdi import compute, default_path, prepare_target, save_artifact
from ssmbench.recipe import apply_overrides, data_shorthand, read_recipe_mapping, validate_recipe
from ssmbench.train import budget
from ssmbench.train.engine import build_model, seed_everything


def artifact_path(out: Path) -> Path:
    """`--out NAME` writes NAME.pt (and NAME.json, NAME.png beside it); a name ending in .pt is kept."""
    out = Path(out)
    return out if out.suffix == ".pt" else out.with_name(out.name + ".pt")


def init_tdi(dataset: str | None, recipe_path: Path | None, overrides: list[str], samples: int | None,
             d_state: int | None, d_model: int | None, steps: int | None, out: Path | None, console) -> dict:
    """Compute and save a TDI artifact for a dataset (or a recipe's data/model); return its metadata."""
    if dataset is None and recipe_path is None:
        raise SSMBenchError("init-tdi: no data given; name a dataset adapter with --dataset NAME (see `ssmbench data "
                            "list`) or take data and model from a recipe with --recipe FILE")
    if dataset is not None and recipe_path is not None:
        raise SSMBenchError("init-tdi: give --dataset NAME or --recipe FILE, not both")
    raw = read_recipe_mapping(recipe_path) if recipe_path else {"name": "init-tdi", "data": {"name": dataset}}
    model_section = raw.get("model")
    kind = model_section.get("kind", "s4d") if isinstance(model_section, dict) else "s4d"
    if kind in ("dss", "s5", "lru", "s4"):
        raise SSMBenchError(f"{recipe_path}: model.kind: {kind}: the artifact holds Algorithm 1's fit of S4D channels; "
                            + ("s4 takes no TDI (its low-rank part couples the modes)" if kind == "s4" else
                               f"a {kind} recipe with init.name: tdi places its first layer's modes at the start of "
                               f"the run, with no artifact")
                            + " (docs/methods.md §I.6); run init-tdi on an s4d recipe or a dataset")
    flags = {"init.name": "tdi", "init.samples": samples, "init.tdi.steps": steps, "model.d_model": d_model,
             "model.ssm.d_state": d_state, "model.kind": "s4d"}
    raw = apply_overrides(raw, [f"{k}={v}" for k, v in flags.items() if v is not None] + [data_shorthand(o) for o in overrides])
    try:
        recipe = validate_recipe(raw, str(recipe_path or "init-tdi"))
    except RecipeError as e:
        hint = f"give the dataset's options with --set data.KEY=VALUE (see `ssmbench data show {dataset}`)"
        options = dataset and any(q.startswith("data.") and not q.startswith("data.name") for q in e.problems)
        raise RecipeError(e.source, e.problems + ([hint] if options else [])) from None
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    path = artifact_path(out) if out else default_path(recipe)
    prepare_target(path)  # refused before any computation
    seed_everything(recipe.seed)
    data = build_data(recipe.data)
    budget.check_weights(recipe, data.io, torch.device("cpu"))
    model = build_model(recipe, data)  # the same encoder a training run of this recipe starts from
    H, M = ssm_layers(model)[0].A_im.shape
    steps_total = recipe.init.tdi.steps
    with Progress(TextColumn("[bold]TDI"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task("tdi", total=steps_total, loss="")
        result, meta = compute(recipe, data, model.encoder, H, M,
                               on_step=lambda i, loss: bar.update(task, completed=i, loss=f"{loss:.4g}"))
    written = save_artifact(path, result, meta)
    console.print(f"TDI {recipe.data.name}: loss {meta['loss_before']:.4g} -> {meta['loss_after']:.4g} "
                  f"(x{meta['loss_before'] / max(meta['loss_after'], 1e-300):.3g}) in {meta['seconds']:.1f} s; "
                  f"S = {meta['samples']}, L = {meta['L']}, H = {H}, M = {M}; peak bin task {meta['peak_bin_task']}, "
                  f"model {meta['peak_bin_before']} -> {meta['peak_bin_after']}; wrote {', '.join(map(str, written))}")
    return meta
