"""Plugins that would break the process (issue 28, case 11): a plugin file named like a real module never
replaces it, a plugin reusing a built-in name is a one-line error in every command, and a plugin that calls
sys.exit while imported is an error, not a silent exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssmbench import registry
from ssmbench.errors import SSMBenchError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_plugins(monkeypatch):
    monkeypatch.setattr(registry, "_loaded", set())
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(registry.PLUGIN_PACKAGE):
            del sys.modules[name]


def test_a_plugin_named_datasets_does_not_replace_hugging_face_datasets(tmp_path: Path, fresh_plugins) -> None:
    import datasets

    (tmp_path / "datasets.py").write_text("PLUGIN = True\n")
    registry.import_module(str(tmp_path / "datasets.py"))
    assert sys.modules["datasets"] is datasets and not hasattr(sys.modules["datasets"], "PLUGIN")
    (plugin,) = [m for n, m in sys.modules.items() if n.startswith(registry.PLUGIN_PACKAGE + "datasets_")]
    assert plugin.PLUGIN


def test_a_plugin_that_exits_while_imported_is_an_error(tmp_path: Path, fresh_plugins) -> None:
    (tmp_path / "leave.py").write_text("import sys\nsys.exit(0)\n")
    with pytest.raises(SSMBenchError, match=r"--import .*leave.py: cannot import it \(SystemExit: 0\)"):
        registry.import_module(str(tmp_path / "leave.py"))


@pytest.mark.parametrize("command", [["components"], ["data", "show", "smnist"]])
def test_a_plugin_reusing_a_built_in_name_is_a_one_line_error(tmp_path: Path, command) -> None:
    (tmp_path / "dup.py").write_text("from ssmbench.registry import DATASETS\n\n\n@DATASETS.register('smnist')\n"
                                     "class Mine:\n    pass\n")
    proc = subprocess.run([sys.executable, "-m", "ssmbench", "--import", "dup.py", *command], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"dataset 'smnist' is registered twice: by {tmp_path / 'dup.py'} and by ssmbench.data.mnist" in \
        proc.stdout + proc.stderr
