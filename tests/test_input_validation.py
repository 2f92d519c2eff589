"""Every recipe error is one line naming the field, exit status 2, and leaves no run directory: schema bounds
(seeds, learning rates, inf/NaN, dt order, threads, workers, odd d_state) and `budget.check` (pooling, STU
lengths, the memory estimate, whose parameter count is held to the real model's)."""

from __future__ import annotations

import pytest
import torch

from killpoint import cli_run
from ssmbench.data import build_data
from ssmbench.errors import RecipeError, SSMBenchError
from ssmbench.recipe import load_recipe, validate_recipe
from ssmbench.train import budget
from ssmbench.train.engine import build_model

QUICK = ["train.max_steps=1", "train.max_eval_batches=1", "train.device=cpu", "data.train_fraction=0.05"]


@pytest.mark.parametrize("override, field, words", [
    ("seed=4294967296", "seed", "less than 4294967296"),
    ("seed=18446744073709551616", "seed", "less than"),
    ("data.split_seed=99999999999999999999999", "data.split_seed", "less than"),
    ("data.split_seed=-1", "data.split_seed", "greater than or equal to 0"),
    ("data.permutation_seed=18446744073709551615", "data.permutation_seed", "less than"),
    ("model.ssm.d_state=3", "model.ssm.d_state", "must be even (got 3); use 4, or init.name: s4d-real"),
    ("model.ssm.lr.dt=1e308", "model.ssm.lr.dt", "less than or equal to 10"),
    ("model.ssm.beta_lr=1e308", "model.ssm.beta_lr", "less than or equal to 10"),
    ("model.ssm.dt_min=.inf", "model.ssm.dt_min", "finite number"),
    ("model.ssm.dt_max=.nan", "model.ssm.dt_max", "finite number"),
    ("model.ssm.lr.dt=.nan", "model.ssm.lr.dt", "finite number"),
    ("model.ssm.beta=.nan", "model.ssm.beta", "finite number"),
    ("model.ssm.beta=-.inf", "model.ssm.beta", "finite number"),
    ("model.ssm.kappa=.inf", "model.ssm.kappa", "finite number"),
    ("model.ssm.kappa=0", "model.ssm.kappa", "positive finite number (got 0)"),
    ("train.grad_clip=.inf", "train.grad_clip", "finite number"),
    ("data.val_fraction=.nan", "data.val_fraction", "finite number"),
    ("model.ssm.dt_min=0.5", "model.ssm", "dt_min (0.5) is larger than dt_max (0.1)"),
    ("train.threads=1024", "train.threads", "CPUs"),
    ("data.num_workers=100000000000000000000000", "data.num_workers", "less than or equal to 128"),
    ("init.artifact=/etc/x.pt", "init.artifact", "outside the allowed roots"),
])
def test_bad_recipe_values_are_one_line_errors_without_a_run_dir(tmp_path, repo_root, override, field, words):
    recipe = repo_root / "recipes" / "quickstart.yaml"
    code, text = cli_run("train", str(recipe), "--set", override, "--runs-dir", str(tmp_path / "runs"))
    assert code == 2, text
    assert text.startswith(f"error: {recipe}: {field}: ") and words in text, text
    assert text.count("\n") == 1 and "Traceback" not in text
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_odd_d_state_is_fine_for_real_modes(repo_root):
    r = load_recipe(repo_root / "recipes" / "quickstart.yaml", ["model.ssm.d_state=3", "init.name=s4d-real"])
    assert r.model.ssm.d_state == 3


@pytest.mark.parametrize("recipe, overrides, words", [
    ("quickstart.yaml", ["model.pool=none"], "model.pool: none keeps one output per time step, but smnist"),
    ("synthetic/lds-stu.yaml", ["model.kind=ar-stu", "model.stu.y_term=none", "model.stu.k_y=257"],
     "model.stu.k_y: 257 output lags"),
    ("synthetic/lds-stu.yaml", ["model.stu.k=300"], "model.stu.k: 300 spectral filters"),
    ("quickstart.yaml", ["model.d_model=65536"], "model: training needs at least"),
    ("quickstart.yaml", ["model.d_model=1024", "model.n_layers=256"], "lower model.d_model, model.n_layers or train.batch_size"),
])
def test_recipes_that_cannot_fit_the_data_or_machine_stop_before_a_run_dir(tmp_path, repo_root, recipe, overrides, words):
    sets = [a for o in overrides + QUICK for a in ("--set", o)]
    code, text = cli_run("train", str(repo_root / "recipes" / recipe), *sets, "--runs-dir", str(tmp_path / "runs"))
    *phases, error = text.splitlines()  # the lines saying what the run did before (reading the data)
    assert code == 2 and error.startswith("error: ") and words in error, text
    assert len(phases) <= 3 and all(" reading the data " in p or " data ready in " in p or " building the model " in p
                                    for p in phases), text
    assert not list((tmp_path / "runs").iterdir())  # the run directory made for it was removed


def test_the_largest_k_y_that_fits_trains(tmp_path, repo_root):
    sets = ["model.kind=ar-stu", "model.stu.y_term=none", "model.stu.k_y=256", "data.n_train=40", "train.batch_size=4",
            *QUICK[:3]]
    code, text = cli_run("train", str(repo_root / "recipes" / "synthetic" / "lds-stu.yaml"),
                         *[a for o in sets for a in ("--set", o)], "--runs-dir", str(tmp_path / "runs"), "-q")
    assert code == 0, text


@pytest.mark.parametrize("overrides", [
    [], ["model.kind=stu"], ["model.kind=ar-stu", "model.stu.k_y=5"], ["init.name=s4d-legs", "model.bidirectional=true"],
    ["model.ssm.beta=1.0", "model.n_layers=3", "model.prenorm=true"],
])
def test_parameter_count_on_meta_equals_the_real_model(repo_root, overrides):
    recipe = load_recipe(repo_root / "recipes" / "quickstart.yaml", overrides + ["model.d_model=24"])
    data = build_data(recipe.data)
    real = sum(p.numel() for p in build_model(recipe, data).parameters())
    assert budget.parameter_count(recipe, data.io) == real


def test_memory_estimate_formula_and_refusal(repo_root, monkeypatch):
    recipe = load_recipe(repo_root / "recipes" / "quickstart.yaml", ["model.d_model=32", "model.n_layers=2",
                                                                     "train.batch_size=10"])
    data = build_data(recipe.data)
    need = budget.memory_estimate(recipe, data, None)
    assert need["state_bytes"] == 16 * need["parameters"]
    assert need["activation_bytes"] == 4 * 4 * 10 * 784 * 32 * 2
    assert budget.memory_estimate(recipe, data, torch.bfloat16, world=2)["activation_bytes"] == 4 * 2 * 5 * 784 * 32 * 2
    assert budget.check(recipe, data, torch.device("cpu"), None) == need
    monkeypatch.setattr(budget, "available_memory", lambda device: need["total_bytes"] - 1)
    with pytest.raises(SSMBenchError, match=r"but cpu has .* GiB available"):
        budget.check(recipe, data, torch.device("cpu"), None)


def test_cpu_memory_is_known_here():
    free = budget.available_memory(torch.device("cpu"))
    assert free is not None and 2**26 < free


def test_recipe_check_messages_name_the_field_not_top_level():
    with pytest.raises(RecipeError) as e:
        validate_recipe({"name": "x", "data": {"name": "smnist"}, "model": {"ssm": {"d_state": 5}}}, "r.yaml")
    assert str(e.value).startswith("r.yaml: model.ssm.d_state: s4d-lin stores complex-conjugate pairs")


@pytest.mark.parametrize("args, words", [
    (["train"], "train: no recipe given; name a recipe YAML (e.g. `ssmbench train recipes/quickstart.yaml`) or continue a run with --resume RUN_DIR"),
    (["train", "{recipe}", "--resume", "{tmp}"], "train: give a RECIPE or --resume RUN_DIR, not both (a resumed run keeps its own recipe)"),
    (["init-tdi"], "init-tdi: no data given; name a dataset adapter with --dataset NAME (see `ssmbench data list`) or take data and model from a recipe with --recipe FILE"),
    (["init-tdi", "--dataset", "smnist", "--recipe", "{recipe}"], "init-tdi: give --dataset NAME or --recipe FILE, not both"),
    (["train", "{sweep}"], "{sweep}: this is a sweep file (it has a `grid`), not a recipe: use `ssmbench sweep {sweep}`"),
    (["sweep", "{recipe}", "--dry-run"], "{recipe}: this is a recipe (it has `data` and no `grid`), not a sweep file: use `ssmbench train {recipe}`"),
])
def test_wrong_or_missing_arguments_say_what_to_give(tmp_path, repo_root, args, words):
    fill = {"recipe": repo_root / "recipes" / "quickstart.yaml", "tmp": tmp_path,
            "sweep": repo_root / "recipes" / "sweeps" / "smnist-table.yaml"}
    code, text = cli_run(*[a.format(**fill) for a in args])
    assert code == 2 and text == f"error: {words.format(**fill)}\n", text


def test_sweep_seeds_are_bounded_like_recipe_seeds(tmp_path):
    from ssmbench.sweep import load_sweep

    path = tmp_path / "s.yaml"
    path.write_text("name: s\nrecipe: r.yaml\ngrid: {variants: [a], seeds: [0, 4294967296]}\n")
    with pytest.raises(RecipeError, match=f"{path}: grid.seeds.1: Input should be less than 4294967296"):
        load_sweep(path)


def test_init_tdi_refuses_a_model_whose_weights_do_not_fit(tmp_path):
    code, text = cli_run("init-tdi", "--dataset", "smnist", "--set", "data.permute=false", "--d-model", "65536",
                         "--out", str(tmp_path / "a.pt"))
    assert code == 2 and text.startswith("error: model: the weights alone need") and text.count("\n") == 1, text
    assert not list(tmp_path.iterdir())
