"""The package layering of ARCHITECTURE.md, held by import-linter (`[tool.importlinter]` in pyproject.toml),
and the registry catalogue in ssmbench/registry.py (the one place that says which modules fill each registry)."""

import importlib
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ssmbench
from ssmbench.registry import DATASETS, INITIALIZERS, LAYERS

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the venv's `lint-imports` on the `ssmbench` package under `root` with the project's contracts."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is missing: install the dev extra (pip install -e '.[dev]')")
    return subprocess.run([exe, "--no-cache", "--config", str(ROOT / "pyproject.toml"), *args], cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300)


def copy_package(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "ssmbench", tmp_path / "ssmbench", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "ssmbench"


def test_the_package_keeps_its_layers():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("module, bad_import, contract", [
    ("models/s4d.py", "import ssmbench.init", "layers"),  # the tie that closed the old import cycle
    ("registry.py", "import ssmbench.data", "layers"),
    ("data/base.py", "from ssmbench.models.backbone import SequenceModel", "data-models"),
    ("sweep.py", "from ssmbench.report import tables", "commands"),
    ("models/kernels.py", "from ssmbench.models import s4d", "models"),
])
def test_an_import_against_the_layers_breaks_its_contract(tmp_path, module, bad_import, contract):
    path = copy_package(tmp_path) / module
    path.write_text(path.read_text() + f"\n{bad_import}\n")
    done = lint_imports(tmp_path, "--contract", contract)
    assert done.returncode == 1 and "BROKEN" in done.stdout, done.stdout + done.stderr


def test_a_new_top_level_module_must_be_placed_in_a_layer(tmp_path):
    (copy_package(tmp_path) / "newcomer.py").write_text('"""Not yet in [tool.importlinter]."""\n')
    done = lint_imports(tmp_path, "--contract", "layers")
    assert done.returncode == 1 and "ssmbench.newcomer" in done.stdout, done.stdout + done.stderr


PLUGIN_MODULES = {"ssmb_sign_plugin", "my_inits"}  # registered by tests/test_plugins.py, when it ran first


def test_the_registry_catalogue_lists_exactly_the_registering_modules():
    """After importing every module, each component was registered by a module its registry lists, and each listed
    module registers something: a component in an unlisted module would be missing from a fresh process."""
    for info in pkgutil.walk_packages(ssmbench.__path__, "ssmbench."):
        if info.name != "ssmbench.__main__":  # runs the CLI
            importlib.import_module(info.name)
    for registry in (DATASETS, INITIALIZERS, LAYERS):
        registering = {registry.get(name).__module__ for name in registry.names()} - PLUGIN_MODULES
        assert registering == set(registry.modules), registry.kind


def test_a_lookup_loads_the_components_itself():
    """Building an S4D layer needs the initializer registry, which models/s4d.py does not import."""
    code = ("import sys; from ssmbench.models.s4d import S4D; S4D(4, d_state=8, init='s4d-legs'); "
            "print('ssmbench.init.hippo' in sys.modules, 'ssmbench.data' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["True", "False"], done.stdout + done.stderr
