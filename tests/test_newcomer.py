"""What a newcomer tripped over (issue 27): errors in one style, YAML 1.1 quirks, bounds on dt, file content never
echoed, W&B without a login, `--import` forgotten on resume, help metavars, plurals."""

import json
import os
from pathlib import Path

import pytest
import yaml

from killpoint import TINY, cli_run, one_thread  # noqa: F401 (fixture)
from ssmbench.errors import RecipeError, Stopped
from ssmbench.progress import plural
from ssmbench.recipe import data_shorthand, load_recipe, load_yaml
from ssmbench.train.engine import missing_imports
from ssmbench.train.loggers import check_wandb_login


def write(tmp_path: Path, obj, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else yaml.safe_dump(obj, sort_keys=False))
    return path


@pytest.mark.parametrize("args, words", [
    (["train", "--nproc", "0", "x.yaml"], "error: ssmbench train: Invalid value for '--nproc'"),
    (["trian"], "error: ssmbench: No such command 'trian'"),
    (["report", "--window", "-1"], "error: ssmbench report: Invalid value for '--window'"),
    (["data", "show"], "error: ssmbench data show: Missing argument"),
])
def test_usage_errors_are_one_line_like_every_other_error(args, words):
    code, out = cli_run(*args)
    assert code == 2 and out.startswith(words) and out.count("\n") == 1, out
    assert "╭" not in out and "--help" in out


def test_help_names_values_readably():
    for args in (["train", "--help"], ["report", "--help"], ["--help"], ["data", "prepare", "--help"]):
        code, out = cli_run(*args)
        assert code == 0 and "<bool>" not in out and "<list[str]>" not in out and "<int range>" not in out, out
    assert "KEY=VALUE" in cli_run("train", "--help")[1] and "PATH" in cli_run("train", "--help")[1]


def test_no_arguments_print_the_help():
    code, out = cli_run()
    assert code == 0 and "Usage: ssmbench" in out and "train" in out


def test_a_stop_by_a_signal_is_not_an_error(monkeypatch):
    import ssmbench.data.catalog as catalog

    def stopped(root):
        raise Stopped("SIGTERM received before any work started; run the command again")

    monkeypatch.setattr(catalog, "list_text", stopped)
    code, out = cli_run("data", "list")
    assert code == 75 and out.startswith("stopped: SIGTERM received") and "error" not in out, out


@pytest.mark.parametrize("text, words", [
    ("seed: yes", "'yes' is a boolean only in YAML 1.1; write true or false"),
    ("permute: no", "'no' is a boolean only in YAML 1.1"),
    ("on: 1", "'on' is a boolean only in YAML 1.1"),
    ("seed: 1\nname: x\nseed: 2", "line 3, column 1: key 'seed' given twice (first at line 1)"),
    ("a: {b: 1, b: 2}", "key 'b' given twice"),
])
def test_yaml_11_booleans_and_duplicate_keys_are_refused(text, words):
    with pytest.raises(RecipeError, match="f.yaml: invalid YAML") as e:
        load_yaml(text, "f.yaml")
    assert words in str(e.value)


def test_yaml_12_booleans_quoted_words_and_merge_keys_still_load():
    assert load_yaml("a: true\nb: False\nc: 'no'\nd: y") == {"a": True, "b": False, "c": "no", "d": "y"}
    assert load_yaml("b: &x {a: 1}\nc: {<<: *x, a: 2}")["c"] == {"a": 2}


def test_set_values_follow_the_same_yaml_rules(tmp_path):
    path = write(tmp_path, TINY)
    code, out = cli_run("train", str(path), "--set", "seed=yes", "--print-config")
    assert code == 2 and "'seed=yes'" in out and "YAML 1.1" in out, out
    dup = write(tmp_path, "name: a\n" + yaml.safe_dump(TINY, sort_keys=False), "dup.yaml")
    code, out = cli_run("train", str(dup), "--print-config")
    assert code == 2 and f"{dup}: invalid YAML at line 2" in out and "key 'name' given twice" in out, out


@pytest.mark.parametrize("field, value", [("model.ssm.dt_max", "1e300"), ("model.ssm.dt_min", "11"),
                                          ("init.dt0", "1e300"), ("model.ssm.dt_max", ".inf")])
def test_step_sizes_have_a_bound(tmp_path, field, value):
    with pytest.raises(RecipeError, match=field.split(".", 1)[-1] if field == "init.dt0" else field):
        load_recipe(write(tmp_path, TINY), [f"{field}={value}"])


def test_dt_min_above_dt_max_is_refused_and_equal_is_allowed(tmp_path):
    with pytest.raises(RecipeError, match="larger than dt_max"):
        load_recipe(write(tmp_path, TINY), ["model.ssm.dt_min=0.2", "model.ssm.dt_max=0.1"])
    assert load_recipe(write(tmp_path, TINY), ["model.ssm.dt_min=0.1", "model.ssm.dt_max=0.1"]).model.ssm.dt_max == 0.1


def test_a_file_that_is_no_recipe_is_named_but_never_quoted(tmp_path):
    secret = write(tmp_path, "root:$6$secrethash:20228:0:99999:7:::\nalice:$6$otherhash:1:0:::::\n", "shadow")
    code, out = cli_run("train", str(secret))
    assert code == 2 and f"error: {secret}: not a recipe" in out and "secrethash" not in out and "alice" not in out, out
    odd = write(tmp_path, {**TINY, "x:$6$secrethash": 1}, "odd.yaml")
    code, out = cli_run("train", str(odd))
    assert code == 2 and "unknown key" in out and "secrethash" not in out, out


def test_init_tdi_takes_the_short_form_of_a_data_option():
    assert data_shorthand("permute=false") == "data.permute=false"
    assert data_shorthand("data.permute=false") == "data.permute=false"
    assert data_shorthand("train.lr=0.1") == "train.lr=0.1" and data_shorthand("seed=3") == "seed=3"


def test_wandb_without_a_login_is_refused_before_a_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="W&B is the optional extra ssmbench[wandb]")
    env = {"NETRC": str(tmp_path / "netrc")}
    with pytest.raises(Exception, match="WANDB_MODE=offline"):
        check_wandb_login(env)
    check_wandb_login({**env, "WANDB_MODE": "offline"})
    check_wandb_login({**env, "WANDB_API_KEY": "x" * 40})
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    (tmp_path / "netrc").chmod(0o600)
    check_wandb_login(env)
    for k in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    code, out = cli_run("train", str(write(tmp_path, TINY)), "--set", "train.loggers=[wandb]",
                        "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and out.count("\n") == 1 and "wandb login" in out and "Traceback" not in out, out
    assert not (tmp_path / "runs").exists()


def test_resuming_without_the_import_of_the_first_command_says_so(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "env.json").write_text(json.dumps({"argv": ["ssmbench", "--import", "my_data", "train", "my.yaml"]}))
    monkeypatch.setenv("SSMBENCH_IMPORT", "")
    assert missing_imports(run) == ["my_data"]
    monkeypatch.setenv("SSMBENCH_IMPORT", os.pathsep.join(["other", "my_data"]))
    assert missing_imports(run) == []
    monkeypatch.delenv("SSMBENCH_IMPORT")
    (run / "recipe.yaml").write_text(yaml.safe_dump({**TINY, "data": {"name": "sign-of-sum"}}))
    code, out = cli_run("train", "--resume", str(run))
    assert code == 2 and "'sign-of-sum' is not a registered dataset" in out, out
    assert f"started with --import my_data (argv in env.json); resume it with `ssmbench --import my_data train --resume {run}`" in out


def test_plurals():
    assert plural(1, "epoch") == "1 epoch" and plural(3, "epoch") == "3 epochs" and plural(1000, "step") == "1,000 steps"


def test_the_backend_install_hint_keeps_the_pinned_versions(monkeypatch):
    import importlib

    from ssmbench import backends
    from ssmbench.errors import SSMBenchError

    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: (_ for _ in ()).throw(ImportError(name))
                        if name == "ray" else real(name, *a))
    with pytest.raises(SSMBenchError, match=r"pip install -c constraints.txt -e '\.\[ray\]'"):
        backends.require("ray", "ray")


def test_a_crowded_report_figure_is_saved_without_a_layout_warning(tmp_path):
    import warnings

    import matplotlib.pyplot as plt

    from ssmbench.report import plots

    fig, ax = plt.subplots(figsize=(0.3, 0.3))  # no layout fits: matplotlib would warn with its file and line
    ax.set_title("x" * 50)
    ax.set_ylabel("y" * 80)
    fig.set_layout_engine("constrained")
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots._save(fig, tmp_path / "crowded.png", written)
    assert written == [tmp_path / "crowded.png"] and written[0].stat().st_size > 0


def test_off_a_terminal_each_phase_says_what_it_does_before_the_progress_lines(tmp_path, one_thread):
    code, out = cli_run("train", str(write(tmp_path, TINY)), "--runs-dir", str(tmp_path / "runs"),
                        "--set", "train.log_every=6")
    assert code == 0, out
    lines = out.splitlines()
    order = [" tiny: reading the data (smnist", " tiny: data ready in ", " tiny: building the model (s4d, 1 layer of width 8)",
             " tiny: training 12 steps on cpu (a line every 6 steps", " tiny: step 1 done (", "tiny step 6/12 epoch 0: loss"]
    at = [next(i for i, ln in enumerate(lines) if words in ln) for words in order]
    assert at == sorted(at), out
    assert "12 steps, 0 epochs" in out
