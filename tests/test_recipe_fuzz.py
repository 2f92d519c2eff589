"""Bad input never yields a traceback: hypothesis mutates valid recipes (wrong types, unknown keys, out-of-range
values, huge numbers, deep nesting), writes broken YAML, empty files and binary junk, and feeds `--set`
overrides, all through the real CLI entry point (`ssmbench.cli.main`) in this process. Every case must end in
a clear `error: ...` message and exit status 2, or validate (then training, patched out, is where it stops).
Command lines of every command get junk positional values and options the same way (the expensive step of each
command patched out). Also: corrupt MNIST IDX files and data paths outside the allowed data roots. The data
files of every adapter are fuzzed in test_data_fuzz.py."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from killpoint import cli_run
from ssmbench.errors import DataError, RecipeError
from ssmbench.paths import DATA_ROOT_ENV
from ssmbench.recipe import load_recipe, validate_recipe
from ssmbench.train import engine

VALID = {
    "name": "fuzz", "seed": 1, "tags": {"variant": "a"},
    "data": {"name": "smnist", "permute": False, "val_fraction": 0.1, "root": "data"},
    "model": {"kind": "s4d", "d_model": 16, "n_layers": 2, "dropout": 0.1, "norm": "batch", "pool": "mean",
              "ssm": {"d_state": 8, "dt_min": 0.001, "dt_max": 0.1, "discretization": "zoh", "lr": 0.001}},
    "init": {"name": "s4d-lin", "alpha": 1.0},
    "train": {"epochs": 1, "max_steps": 5, "batch_size": 8, "lr": 0.01, "weight_decay": 0.05, "warmup_steps": 1,
              "grad_clip": 1.0, "precision": "fp32", "device": "cpu", "on_nonfinite": "stop"},
}
COUNTS: Counter = Counter()
# Examples per fuzzer: a quick pass in the fast suite, a long one under `make test-slow`.
EXAMPLES = [40, pytest.param(600, marks=pytest.mark.slow)]


def fuzz(examples: int, strategy, body) -> None:
    """Run `body(example)` on `examples` deterministic draws of `strategy`; print how many ran and were valid."""
    before = dict(COUNTS)

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(strategy)
    def run(example):
        body(example)

    run()
    print({k: v - before.get(k, 0) for k, v in COUNTS.items() if v != before.get(k, 0)}, "tracebacks: 0")


class ReachedTraining(SystemExit):
    """The recipe validated; the test stops here (exit status "valid") instead of training."""


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise ReachedTraining("valid")

    monkeypatch.setattr(engine, "train", refuse)


def check(kind: str, code, text: str, source: str | None = None) -> None:
    COUNTS[kind] += 1
    assert "Traceback" not in text, text
    if code == "valid":
        COUNTS[kind + " (valid)"] += 1
        return
    assert code == 2, f"exit {code}: {text}"
    assert text.startswith("error:") or "Error" in text, text  # our message, or click's usage error
    if source is not None and text.startswith("error:"):
        assert source in text.replace("\n", ""), text


# ---- strategies -------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 2**63, 10**400, 1e308, -1e308]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["", "auto", "nfft", "s4d-lin", "smnist", "../../etc", "/etc/passwd", "cuda:9", "\x00"]),
)
junk = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                    max_leaves=12)


def paths(tree: dict, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a nested dict."""
    out = []
    for k, v in tree.items():
        out.append(prefix + (k,))
        if isinstance(v, dict):
            out += paths(v, prefix + (k,))
    return out


PATHS = paths(VALID)


@st.composite
def mutated_recipes(draw) -> dict:
    """VALID with 1-3 mutations: a value replaced by junk, a key deleted, an unknown key added, or a section
    replaced by deeply nested lists."""
    recipe = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        node = recipe
        for k in path[:-1]:
            if not isinstance(node.get(k), dict):
                break
            node = node[k]
        else:
            action = draw(st.sampled_from(["replace", "delete", "unknown", "nest"]))
            if action == "replace":
                node[path[-1]] = draw(junk)
            elif action == "delete":
                node.pop(path[-1], None)
            elif action == "unknown":
                node[draw(st.text(min_size=1, max_size=10))] = draw(scalars)
            else:
                value: object = 0
                for _ in range(draw(st.integers(10, 200))):
                    value = [value]
                node[path[-1]] = value
    return recipe


VALID_TEXT = yaml.safe_dump(VALID, sort_keys=False)


@st.composite
def broken_texts(draw) -> bytes:
    """Broken YAML, empty files, binary junk, huge numbers and deep nesting, as file bytes."""
    kind = draw(st.sampled_from(["cut", "splice", "binary", "empty", "huge", "deep", "text"]))
    if kind == "cut":
        return VALID_TEXT[:draw(st.integers(0, len(VALID_TEXT)))].encode()
    if kind == "splice":
        i = draw(st.integers(0, len(VALID_TEXT)))
        return (VALID_TEXT[:i] + draw(st.sampled_from([":", "- ", "{", "]", "\t", "&a", "*a", "!!python/object:os.system", "'", "%", "@"]))
                + VALID_TEXT[i:]).encode()
    if kind == "binary":
        return draw(st.binary(max_size=200))
    if kind == "empty":
        return draw(st.sampled_from([b"", b"\n", b"   \n", b"# only a comment\n", b"---\n", b"~\n"]))
    if kind == "huge":
        digits = draw(st.integers(300, 6000))
        key = draw(st.sampled_from(["seed", "train:\n  batch_size", "train:\n  lr", "model:\n  d_model"]))
        return (f"name: fuzz\ndata: {{name: smnist, permute: false}}\n{key}: " + "9" * digits
                + draw(st.sampled_from(["", ".5", "e999"])) + "\n").encode()
    if kind == "deep":
        n = draw(st.integers(50, 600))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}")]))
        return ("name: fuzz\ndata: " + opener * n + "1" + closer * n + "\n").encode()
    return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")


# ---- tests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("examples", EXAMPLES)
def test_fuzz_mutated_recipes(examples, tmp_path, no_training):
    path = tmp_path / "recipe.yaml"

    def body(recipe: dict) -> None:
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        code, text = cli_run("train", str(path), "--runs-dir", str(tmp_path / "runs"))
        check("mutated recipes", code, text, str(path))

    fuzz(examples, mutated_recipes(), body)


@pytest.mark.parametrize("examples", EXAMPLES)
def test_fuzz_broken_files(examples, tmp_path, no_training):
    path = tmp_path / "recipe.yaml"

    def body(data: bytes) -> None:
        path.write_bytes(data)
        code, text = cli_run("train", str(path), "--runs-dir", str(tmp_path / "runs"))
        check("broken files", code, text, str(path))

    fuzz(examples, broken_texts(), body)


override_keys = st.one_of(st.sampled_from(["seed", "train.lr", "model.ssm.d_state", "data.root", "data", "init",
                                           "train.lr.x", "name", "model.kind", "data.permute", "tags.a"]),
                          st.text(max_size=20))
override_values = st.one_of(st.text(max_size=30),
                            st.sampled_from(["1e999", "9" * 5000, "[[[[", "{a: [1, 2]}", "null", "-1", ".nan", ""]))


@pytest.mark.parametrize("examples", EXAMPLES)
def test_fuzz_overrides(examples, tmp_path, no_training):
    path = tmp_path / "recipe.yaml"
    path.write_text(VALID_TEXT)

    def body(sets: list) -> None:
        args = [a for key, value in sets for a in ("--set", f"{key}={value}")]
        code, text = cli_run("train", str(path), *args, "--runs-dir", str(tmp_path / "runs"))
        check("overrides", code, text)

    fuzz(examples, st.lists(st.tuples(override_keys, override_values), min_size=1, max_size=3), body)


def test_unmutated_recipe_is_valid(tmp_path, no_training):
    """The fuzzers start from a recipe that validates, so they test rejection, not a broken baseline."""
    path = tmp_path / "recipe.yaml"
    path.write_text(VALID_TEXT)
    assert cli_run("train", str(path))[0] == "valid"


# ---- targeted cases the fuzzers might miss ---------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("name: x\ndata: {name: smnist, permute: false}\nseed: " + "9" * 5000 + "\n", "invalid YAML: Exceeds the limit"),
    ("name: x\ndata: {name: smnist, permute: false}\nseed: 2020-13-45\n", "invalid YAML: month must be in 1..12"),
    ("name: x\ndata: " + "[" * 1000 + "\n", "invalid YAML"),
    ("a: &a [1, 2]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b]\n", "not a recipe"),
    ("name: x\ndata: !!python/object/apply:os.system ['echo pwned']\n", "invalid YAML"),
])
def test_pathological_yaml_is_a_recipe_error(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert str(path) in str(e.value) and message in str(e.value)


# ---- data paths ------------------------------------------------------------------------------------------


def recipe_with_root(root: str) -> dict:
    r = copy.deepcopy(VALID)
    r["data"]["root"] = root
    return r


@pytest.mark.parametrize("root", ["../data", "data/../../etc", "/etc", "/tmp/../etc", ""])
def test_data_root_outside_the_allowed_roots_is_refused(root, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    with pytest.raises(RecipeError) as e:
        validate_recipe(recipe_with_root(root), "r.yaml")
    assert "r.yaml: data.root:" in str(e.value)


def test_data_root_inside_allowed_roots_is_accepted(tmp_path, monkeypatch, repo_root):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    for ok in ["data", "data/sub", "./datasets", str(repo_root / "data" / "x")]:
        assert validate_recipe(recipe_with_root(ok)).data.root == ok
    with pytest.raises(RecipeError, match=DATA_ROOT_ENV):
        validate_recipe(recipe_with_root(str(tmp_path / "d")))
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert validate_recipe(recipe_with_root(str(tmp_path / "d"))).data.root == str(tmp_path / "d")
    link = tmp_path / "escape"
    link.symlink_to("/etc")
    with pytest.raises(RecipeError, match="outside the allowed roots"):  # symlinks are resolved
        validate_recipe(recipe_with_root(str(link)))


# ---- corrupt dataset files -------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (big-endian header: 0, 0, type 0x08 = uint8, ndim; then the dims as uint32; then the data)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_idx(root: Path) -> Path:
    """Random MNIST IDX files (20 train, 10 test) in `<root>/MNIST/raw/`; return that folder."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [("train", 20), ("t10k", 10)]:
        write_idx(raw / f"{name}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{name}-labels-idx1-ubyte", rng.integers(0, 10, (n,)))
    return raw


@pytest.mark.parametrize("broken", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_truncated_mnist_idx_names_the_file(tmp_path, monkeypatch, broken):
    from ssmbench.data import build_data

    raw = write_mnist_idx(tmp_path)
    data = (raw / broken).read_bytes()
    (raw / broken).write_bytes(data[:len(data) - 7])
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    raw_recipe = recipe_with_root(str(tmp_path))
    raw_recipe["data"]["source"] = "idx"
    with pytest.raises(DataError) as e:
        build_data(validate_recipe(raw_recipe).data)
    assert str(raw / broken) in str(e.value)


# ---- command-line arguments ------------------------------------------------------------------------------

SAFE_ABSOLUTE = ["/dev/null/x", "/dev/null/x.pt", "/etc/passwd", "/proc/self/status", "/"]
arg_values = st.one_of(
    st.sampled_from(["-1", "0", "1", "2", "3", "64", "9" * 30, "1e999", "nan", "banana", "", "..", "cuda:9", "auto",
                     "cpu", "s4d,stu", ",", "md", "latex", "smnist", "listops", "x.pt", "a/b", "FILE", "DIR"]),
    st.sampled_from(["RECIPE", "SWEEP"]),  # replaced by a real recipe / sweep file, so later checks are reached
    st.sampled_from(SAFE_ABSOLUTE),
    st.text(max_size=12).map(lambda s: s.lstrip("/~")),  # relative: stays inside the test's working directory
)
COMMANDS = {  # command -> options (None: a flag without a value)
    ("train",): ["--set", "--resume", "--runs-dir", "--nproc", "--quiet"],
    ("report",): ["--group-by", "--format", "--out", "--plots", "--window"],
    ("bench",): ["--lengths", "--batch", "--d-model", "--d-state", "--blocks", "--reps", "--device", "--threads",
                 "--out", "--no-memory"],
    ("init-tdi",): ["--dataset", "--recipe", "--set", "--samples", "--d-state", "--d-model", "--steps", "--out"],
    ("sweep",): ["--jobs", "--runs-dir", "--set", "--backend"],
    ("data", "list"): ["--root"],
    ("data", "prepare"): ["--source", "--root"],
    ("data", "generate", "listops"): ["--out", "--n", "--eval-n", "--seed"],
    ("data", "generate", "pathfinder"): ["--out", "--resolution", "--contour-length", "--n", "--seed"],
    ("data", "synth-speech"): ["--out", "--words", "--speakers", "--seed"],
    ("components",): [],
    ("no-such-command",): [],
}
FLAGS = {"--quiet", "--no-memory"}


@st.composite
def command_lines(draw) -> list[str]:
    """A command, 0-2 positional values and 0-4 of its options with junk values (sweeps always --dry-run)."""
    command = draw(st.sampled_from(sorted(COMMANDS)))
    first = {("train",): "RECIPE", ("sweep",): "SWEEP"}.get(command)
    args = list(command) + ([first] if first and draw(st.booleans()) else []) + draw(st.lists(arg_values, max_size=2))
    for option in draw(st.lists(st.sampled_from(COMMANDS[command] or ["--help"]), max_size=4)):
        args += [option] if option in FLAGS or option == "--help" else [option, draw(arg_values)]
    return args + (["--dry-run"] if command == ("sweep",) else [])


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Arguments are parsed and checked for real; the expensive step of each command stops the case instead."""
    import ssmbench.bench
    import ssmbench.data
    import ssmbench.data.catalog
    from ssmbench.data.generators import listops, pathfinder, speech_synth

    def refuse(*args, **kwargs):
        raise ReachedTraining("valid")

    for module, name in [(engine, "train"), (ssmbench.bench, "run_bench"), (ssmbench.data, "build_data"),
                         (ssmbench.data.catalog, "prepare"), (listops, "write_release"),
                         (pathfinder, "write_release"), (speech_synth, "write_release")]:
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "DIR").mkdir()


@pytest.mark.parametrize("examples", EXAMPLES)
def test_fuzz_command_lines(examples, no_work, repo_root):
    recipe, sweep = repo_root / "recipes" / "quickstart.yaml", repo_root / "recipes" / "sweeps" / "smnist-table.yaml"

    def body(args: list) -> None:
        args = [{"RECIPE": str(recipe), "SWEEP": str(sweep)}.get(a, a) for a in args]
        code, text = cli_run(*args)
        check("command lines", "valid" if code == 0 else code, text)

    fuzz(examples, command_lines(), body)
