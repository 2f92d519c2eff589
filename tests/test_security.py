"""No code runs from a data file and no path escapes: a CIFAR batch whose pickle would run a command is refused
before anything runs; the containment rule (ssmbench/paths.py) holds, after resolving symlinks, for data.root,
adapter `source` folders, Pathfinder metadata, init.artifact and a sweep file's runs_dir; a TDI artifact never
replaces a file ssmbench did not write."""

from __future__ import annotations

import copy
import json
import os
import pickle

import numpy as np
import pytest
import yaml

from ssmbench.data import build_data
from ssmbench.data.fixtures import data_config, write_cifar
from ssmbench.data.images import read_batch
from ssmbench.errors import DataError, RecipeError, SSMBenchError
from ssmbench.paths import DATA_ROOT_ENV, escape
from ssmbench.recipe import validate_recipe

RECIPE = {"name": "sec", "data": {"name": "smnist", "permute": False}}


# ---- pickles ----------------------------------------------------------------------------------------------


class Payload:
    """Unpickling this calls os.system (plain pickle.load would run the command)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("where", ["top", "inside"])
def test_malicious_cifar_batch_runs_nothing(tmp_path, monkeypatch, where):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))  # data files are read only inside an allowed root
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, n=4)
    witness = tmp_path / "pwned"
    payload = Payload(f"touch {witness}")
    batch = payload if where == "top" else {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3], b"x": payload}
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch))
    pickle.loads(pickle.dumps(Payload(f"true {witness}")))  # the payload is live: plain pickle would run it
    with pytest.raises(DataError, match=r"data_batch_3: .*posix.system.*refused"):
        read_batch(folder / "data_batch_3")
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    with pytest.raises(DataError, match="data_batch_3"):
        build_data(data_config(tmp_path, "scifar"))
    assert not witness.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_protocol_still_load(tmp_path, monkeypatch, protocol):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [1, 9, 0], b"batch_label": b"x"}, protocol=protocol))
    images, labels = read_batch(path)
    assert labels.tolist() == [1, 9, 0]
    assert np.array_equal(images.transpose(0, 3, 1, 2).reshape(3, 3072), data)  # HWC back to channel-major


@pytest.mark.parametrize("batch, message", [
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "0-9"),
    ([1, 2], "list indices"),
    ({b"data": np.zeros((2, 3072), object), b"labels": [0, 1]}, "uint8"),
])
def test_cifar_batch_with_wrong_content_names_the_file(tmp_path, monkeypatch, batch, message):
    monkeypatch.setenv("SSMBENCH_DATA_ROOT", str(tmp_path))
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match=message) as e:
        read_batch(path)
    assert str(path) in str(e.value)


# ---- the containment rule ---------------------------------------------------------------------------------


def test_escape_resolves_symlinks_and_dotdot(tmp_path, monkeypatch):
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    (inside / "link").symlink_to("../out")  # relative symlink
    roots = [inside.resolve()]
    assert escape(inside / "x" / "y", roots) is None
    assert escape(inside / "x" / ".." / "y", roots) is None
    assert "leads to" in escape(inside / "link" / "f", roots)
    assert escape(inside / ".." / "out", roots)
    assert escape(str(outside), roots)
    assert escape("", roots) and escape("a\0b", roots)
    loop = inside / "loop"
    loop.symlink_to("loop")
    assert "cannot be resolved" in escape(loop / "x", roots)
    monkeypatch.chdir(inside)
    assert escape("x") is None and escape("link") is not None  # default roots include the working directory


def recipe_with(**data) -> dict:
    r = copy.deepcopy(RECIPE)
    r["data"].update(data)
    return r


def test_relative_data_root_symlink_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    (work / "data").symlink_to("../elsewhere")
    (work / "real").mkdir()
    monkeypatch.chdir(work)
    assert validate_recipe(recipe_with(root="real")).data.root == "real"
    with pytest.raises(RecipeError, match=r"data.root: 'data' is outside the allowed roots \(it leads to"):
        validate_recipe(recipe_with(root="data"), "r.yaml")
    monkeypatch.setenv(DATA_ROOT_ENV, str(elsewhere))  # allowed once its target is listed
    assert validate_recipe(recipe_with(root="data")).data.root == "data"


def test_adapter_source_symlink_leaving_the_roots_is_refused(tmp_path, monkeypatch):
    root, outside = tmp_path / "root", tmp_path / "outside"
    write_cifar(outside / "cifar", n=4)
    root.mkdir()
    (root / "cifar-10-batches-py").symlink_to(outside / "cifar")
    monkeypatch.setenv(DATA_ROOT_ENV, str(root))
    with pytest.raises(DataError, match="scifar: data option `source: cifar-10-batches-py`: .* outside the allowed roots"):
        build_data(data_config(root, "scifar"))


def test_sweep_runs_dir_must_stay_inside(tmp_path, monkeypatch):
    from ssmbench.sweep import load_sweep

    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    sweep = {"name": "s", "recipe": "r.yaml", "grid": {"variants": ["a"]}}
    path = tmp_path / "s.yaml"
    for ok in ["runs", "sub/runs", str(tmp_path / "x"), "../beside-the-sweep-file"]:
        path.write_text(yaml.safe_dump({**sweep, "runs_dir": ok}))
        assert load_sweep(path).runs_dir == ok
    for bad in ["../../../../tmp/x", "/tmp/elsewhere"]:
        path.write_text(yaml.safe_dump({**sweep, "runs_dir": bad}))
        with pytest.raises(RecipeError, match=f"{path}: runs_dir: '{bad}' is outside the allowed roots"):
            load_sweep(path)


@pytest.fixture
def pathfinder_root(tmp_path, monkeypatch):
    from ssmbench.data.generators import pathfinder

    root = tmp_path / "root"
    pathfinder.write_release(root / "lra_release", 32, 14, n=6, seed=0, batch_size=6)
    monkeypatch.setenv(DATA_ROOT_ENV, str(root))
    return root, root / "lra_release" / "pathfinder32" / "curv_contour_length_14"


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "missing"])
def test_pathfinder_metadata_cannot_name_images_outside_or_missing(pathfinder_root, tmp_path, kind):
    root, folder = pathfinder_root
    meta = folder / "metadata" / "0.npy"
    lines = meta.read_text().splitlines()
    subdir, name = lines[2].split()[:2]
    outside = tmp_path / "outside.png"
    (folder / subdir / name).rename(outside)
    if kind == "absolute":
        fields = [str(tmp_path), "outside.png"]
    elif kind == "dotdot":
        fields = ["../../../..", "outside.png"]
    elif kind == "symlink":
        (folder / subdir / name).symlink_to(outside)
        fields = [subdir, name]
    else:
        fields = [subdir, name]
    lines[2] = " ".join(fields + lines[2].split()[2:])
    meta.write_text("\n".join(lines) + "\n")
    expected = "does not exist" if kind == "missing" else "is outside the allowed roots"
    with pytest.raises(DataError, match=f"{meta}: line 3: .*{expected}"):
        build_data(data_config(root, "pathfinder"))


def test_artifact_path_obeys_the_containment_rule(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    r = {**RECIPE, "init": {"name": "tdi", "artifact": str(tmp_path / "settings.pt")}}
    with pytest.raises(RecipeError, match="init.artifact: .* outside the allowed roots"):
        validate_recipe(r, "r.yaml")
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert validate_recipe(r).init.artifact == str(tmp_path / "settings.pt")
    with pytest.raises(RecipeError, match="init.artifact: .* must name a .pt file"):
        validate_recipe({**RECIPE, "init": {"name": "tdi", "artifact": str(tmp_path / "settings.json")}})


def test_artifact_never_replaces_a_file_ssmbench_did_not_write(tmp_path):
    from ssmbench.init.tdi import prepare_target

    folder = tmp_path / "some" / "dir"
    prepare_target(folder / "a.pt")  # creates the folder only
    assert folder.is_dir() and not list(folder.iterdir())
    (folder / "settings.json").write_text('{"user": "data"}')
    with pytest.raises(SSMBenchError, match="settings.json: exists and is not part of a TDI artifact"):
        prepare_target(folder / "settings.pt")
    assert json.loads((folder / "settings.json").read_text()) == {"user": "data"}
    (folder / "b.png").write_bytes(b"a picture")
    with pytest.raises(SSMBenchError, match="b.png: exists"):
        prepare_target(folder / "b.pt")
    (folder / "c.json").write_text(json.dumps({"task_spectrum": [1.0], "loss_after": 0.1, "M": 2}))
    (folder / "c.pt").write_bytes(b"old artifact")
    prepare_target(folder / "c.pt")  # an artifact ssmbench wrote may be replaced
    with pytest.raises(SSMBenchError, match="x.pt: cannot create its folder"):
        prepare_target(folder / "settings.json" / "x.pt")
