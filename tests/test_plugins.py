"""Bring your own component: a plugin package installed (a dist-info with entry points on sys.path, as pip leaves
it) adds a dataset; `ssmbench --import` adds an initializer; both are then trained from a recipe by the CLI."""

import math
import os
import textwrap

import pytest
import torch
import yaml

from killpoint import TINY, cli_run, one_thread, run_dir  # noqa: F401 (fixture)
from ssmbench.registry import IMPORT_ENV
from ssmbench.train import checkpoint

PLUGIN = '''
"""A tiny dataset adapter: the class of a sequence is the sign of its sum."""
import torch
from torch.utils.data import TensorDataset

from ssmbench.data.base import Adapter, DataBundle
from ssmbench.contracts import ModelIO


class SignOfSum(Adapter):
    description = "sign of the sum of Gaussian noise (a plugin)"

    def build(self, cfg, options):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(96, 16, 1, generator=g)
        y = (x.sum(dim=(1, 2)) > 0).long()
        parts = [TensorDataset(x[a:b], y[a:b]) for a, b in ((0, 64), (64, 80), (80, 96))]
        return DataBundle(*parts, io=ModelIO(d_input=1, input_kind="real", n_outputs=2), seq_len=16,
                          task="classification", source="synthetic", provenance="plugin: sign of sum")
'''

INIT = '''
"""An initializer registered by decorator: A_n = -1/2 + 2 pi i n."""
import math
import os

import torch

from ssmbench.init.hippo import DiagonalInit
from ssmbench.registry import INITIALIZERS


@INITIALIZERS.register("double-lin")
def double_lin(N):
    n = torch.arange(N // 2, dtype=torch.float64)
    A = torch.complex(torch.full_like(n, -0.5), 2 * math.pi * n)
    return DiagonalInit(A, torch.ones_like(A))
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """Package `ssmb_sign_plugin` with entry point ssmbench.datasets: sign-of-sum = ssmb_sign_plugin:SignOfSum,
    installed into a fresh site folder on sys.path."""
    site = tmp_path / "site"
    (site / "ssmb_sign_plugin").mkdir(parents=True)
    (site / "ssmb_sign_plugin" / "__init__.py").write_text(PLUGIN)
    info = site / "ssmb_sign_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ssmb-sign-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ssmbench.datasets]\nsign-of-sum = ssmb_sign_plugin:SignOfSum\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv(IMPORT_ENV, "")  # restored after the test (the CLI's --import writes it)
    return site


def recipe(tmp_path, **sections):
    raw = {"name": "plugin", "data": {"name": "sign-of-sum"}, "model": {"d_model": 4, "n_layers": 1, "ssm": {"d_state": 4}},
           "train": {"max_steps": 6, "batch_size": 16, "device": "cpu", "eval_every": 3}, **sections}
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_installed_entry_point_dataset_and_imported_initializer_train(installed_plugin, tmp_path, monkeypatch, one_thread):
    (tmp_path / "my_inits.py").write_text(textwrap.dedent(INIT))
    monkeypatch.chdir(tmp_path)
    code, out = cli_run("--import", "my_inits", "components")
    assert code == 0 and "sign-of-sum" in out and "double-lin" in out, out

    path = recipe(tmp_path, init={"name": "double-lin"})
    code, out = cli_run("--import", "my_inits", "train", str(path), "--runs-dir", str(tmp_path / "runs"))
    assert code == 0, out
    run = run_dir(tmp_path / "runs")
    results = yaml.safe_load((run / "results.json").read_text())
    assert results["status"] == "finished" and results["data_source"] == "synthetic"
    init = checkpoint.load(run / "checkpoints" / "init.pt")["model"]
    a_im = next(v for k, v in init.items() if k.endswith("A_im"))
    assert torch.allclose(a_im[0].double(), 2 * math.pi * torch.arange(2, dtype=torch.float64))
    assert "my_inits" in os.environ[IMPORT_ENV]  # inherited by sweep workers and torchrun ranks


def test_plugin_import_errors_are_one_line(installed_plugin, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = cli_run("--import", "no_such_plugin_module", "components")
    assert code == 2 and "--import no_such_plugin_module: cannot import it (ModuleNotFoundError" in out, out
    assert "Traceback" not in out
    (installed_plugin / "ssmb_sign_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[ssmbench.layers]\nbroken = ssmb_sign_plugin:Missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # a changed sys.path: entry points are looked up again
    code, out = cli_run("components")
    assert code == 2 and "plugin 'broken' (ssmbench.layers, from ssmb-sign-plugin) cannot be loaded" in out, out
