"""Recipe loading: overrides, resolved dump, and errors that name the file, the field and what is allowed."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssmbench.errors import RecipeError
from ssmbench.recipe import load_recipe

BASE = {"name": "t", "data": {"name": "smnist", "permute": False}, "model": {"d_model": 8}, "train": {"lr": 0.01}}


def write(tmp_path: Path, obj, name="r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else yaml.safe_dump(obj))
    return p


def errors_of(path, overrides=()) -> str:
    with pytest.raises(RecipeError) as e:
        load_recipe(path, list(overrides))
    return str(e.value)


def test_valid_recipe_resolves_defaults(tmp_path):
    r = load_recipe(write(tmp_path, BASE))
    assert r.model.ssm.d_state == 64 and r.init.name == "s4d-lin" and r.data.options["permutation_seed"] == 0
    again = load_recipe(write(tmp_path, r.to_yaml(), "resolved.yaml"))
    assert again == r


def test_override_sets_nested_values(tmp_path):
    r = load_recipe(write(tmp_path, BASE), ["train.lr=0.004", "model.ssm.beta=0.5", "init.name=s4d-inv"])
    assert r.train.lr == 0.004 and r.model.ssm.beta == 0.5 and r.init.name == "s4d-inv"


def test_unknown_key_is_an_error_listing_allowed_keys(tmp_path):
    msg = errors_of(write(tmp_path, {**BASE, "train": {"lrr": 0.1}}))
    assert "r.yaml: train.lrr: unknown key" in msg and "lr" in msg and "batch_size" in msg


def test_unknown_adapter_option_is_an_error(tmp_path):
    msg = errors_of(write(tmp_path, {**BASE, "data": {"name": "smnist", "permute": False, "shuffle_pixels": 1}}))
    assert "data.shuffle_pixels: unknown key" in msg and "permute" in msg


def test_missing_required_adapter_option(tmp_path):
    msg = errors_of(write(tmp_path, {**BASE, "data": {"name": "smnist"}}))
    assert "data.permute: required field is missing" in msg


def test_wrong_type(tmp_path):
    msg = errors_of(write(tmp_path, BASE), ["train.batch_size=many"])
    assert "train.batch_size:" in msg and "integer" in msg


def test_unknown_registry_name_lists_known(tmp_path):
    msg = errors_of(write(tmp_path, {**BASE, "init": {"name": "s4d-lni"}}))
    assert "init.name: 's4d-lni' is not a registered initializer; known:" in msg
    assert "s4d-inv" in msg and "s4d-legs" in msg and "s4d-lin" in msg and "s4d-real" in msg


def test_literal_lists_allowed_values(tmp_path):
    msg = errors_of(write(tmp_path, BASE), ["model.norm=group"])
    assert "model.norm:" in msg and "'batch'" in msg and "'layer'" in msg


def test_missing_file(tmp_path):
    assert "nope.yaml: file not found" in errors_of(tmp_path / "nope.yaml")


def test_broken_yaml_names_the_line(tmp_path):
    msg = errors_of(write(tmp_path, "name: x\ndata: {name: smnist\n"))
    assert "invalid YAML" in msg and "line" in msg


def test_empty_and_non_mapping_files(tmp_path):
    assert "empty" in errors_of(write(tmp_path, ""))
    assert "mapping" in errors_of(write(tmp_path, "- a\n- b\n"))


def test_cli_exit_code_2_and_no_traceback(tmp_path):
    p = write(tmp_path, {**BASE, "init": {"name": "s4d-lni"}})
    out = subprocess.run([sys.executable, "-m", "ssmbench", "train", str(p)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "is not a registered initializer" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
