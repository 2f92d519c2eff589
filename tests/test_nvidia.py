"""The install on the user's driver and `train.device: auto` (ssmbench/nvidia.py), with a fake `nvidia-smi` on PATH.

This machine reaches only PyPI, so the tests check the pip arguments `make install` runs (through a stand-in for
the virtualenv's python that logs them), not a download."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssmbench import nvidia
from ssmbench.errors import SSMBenchError
from ssmbench.train.engine import resolve_device

ROOT = Path(__file__).resolve().parents[1]
PINS = nvidia.torch_pins(ROOT / "constraints.txt")
INDEX = "https://download.pytorch.org/whl/"


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def fake_smi(tmp_path: Path, *gpus: str, rc: int = 0) -> Path:
    """A folder holding an `nvidia-smi` that prints `gpus` (CSV rows of nvidia.QUERY) and exits with `rc`."""
    rows = "".join(f"printf '%s\\n' '{row}'\n" for row in gpus)  # shell builtins only: PATH may hold nothing else
    executable(tmp_path / "bin" / "nvidia-smi", f"#!/bin/sh\n{rows}exit {rc}\n")
    return tmp_path / "bin"


def gpu(driver: str, cap: str = "9.0", name: str = "NVIDIA H100 80GB HBM3", index: int = 0) -> str:
    return f"{index}, {name}, {driver}, {cap}, 80000, 81559"


def pip_args(path: str, cuda: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path}
    return subprocess.run([sys.executable, "-m", "ssmbench.nvidia", "pip-args", "--cuda", cuda], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("gpus, build", [
    ([gpu("590.44.01")], None),  # the default wheel (cu130) runs: nothing to add
    ([gpu("580.65.06", "12.0", "NVIDIA GeForce RTX 5090")], None),
    ([gpu("575.57.08", "8.0", "NVIDIA A100-SXM4-80GB")], "cu128"),
    ([gpu("550.54.15", "8.6", "NVIDIA RTX A6000")], "cu126"),
    ([gpu("535.183.01", "7.5", "Tesla T4")], "cu126"),
    ([gpu("590.44.01"), gpu("590.44.01", "7.0", "Tesla V100-SXM2-32GB", 1)], "cu126"),  # no sm_70 in cu128/cu130
    ([gpu("560.35.03", "[N/A]")], "cu126"),  # an nvidia-smi too old to report the capability
])
def test_make_install_picks_the_build_the_driver_runs(tmp_path, gpus, build):
    proc = pip_args(str(fake_smi(tmp_path, *gpus)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ([] if build is None else [*PINS, "--index-url", INDEX + build])


def test_stated_cuda_and_drivers_no_build_runs(tmp_path):
    smi = str(fake_smi(tmp_path, gpu("590.44.01")))
    assert pip_args(smi, "12.6").stdout.split() == [*PINS, "--index-url", INDEX + "cu126"]
    assert pip_args(smi, "13.0").stdout.split() == [*PINS, "--index-url", INDEX + "cu130"]
    assert pip_args("/nonexistent", "cpu").stdout.split() == [*PINS, "--index-url", INDEX + "cpu"]
    bad = pip_args(smi, "11.8")
    assert bad.returncode == 2 and bad.stderr == "error: CUDA=11.8: torch 2.11 is built for CUDA 13.0, 12.8, 12.6, cpu; pick one of those\n"
    old = pip_args(str(fake_smi(tmp_path / "old", gpu("470.256.02", "7.0"))))
    assert old.returncode == 2 and "driver 470.256.02 is older than every CUDA build" in old.stderr
    assert "make install CUDA=cpu" in old.stderr


@pytest.mark.parametrize("smi", ["none", "failing", "empty"])
def test_no_usable_nvidia_smi_keeps_todays_install(tmp_path, smi):
    path = {"none": str(tmp_path / "empty"), "failing": str(fake_smi(tmp_path, rc=9)),
            "empty": str(fake_smi(tmp_path))}[smi]
    proc = pip_args(path)
    assert proc.returncode == 0 and proc.stdout.strip() == ""


def make_install(tmp_path: Path, path: str, *make_args: str) -> list[str]:
    """The commands `make install` gives the virtualenv's python, logged by a stand-in that runs only
    `-m ssmbench.nvidia` for real."""
    log = tmp_path / "python.log"
    venv = tmp_path / "venv"
    executable(venv / "bin" / "python", f"#!/bin/sh\necho \"$*\" >> {log}\n"
                                        f"if [ \"$1 $2\" = \"-m ssmbench.nvidia\" ]; then exec {sys.executable} \"$@\"; fi\n")
    proc = subprocess.run(["make", "-s", "install", f"VENV={venv}", *make_args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PATH": f"{path}:/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return log.read_text().splitlines()


def test_make_install_runs_the_chosen_pip_commands(tmp_path):
    project = "-m pip install -q -c constraints.txt -e .[dev,slurm,wandb,bench,postgres]"
    upgrade, detect = "-m pip install -q --upgrade pip", "-m ssmbench.nvidia pip-args --cuda "
    assert make_install(tmp_path / "a", str(tmp_path / "none")) == [upgrade, detect, project]  # today's install
    old_driver = fake_smi(tmp_path / "b", gpu("550.54.15", "8.6"))
    assert make_install(tmp_path / "b", str(old_driver)) == [
        upgrade, detect, "-m pip install -q " + " ".join([*PINS, "--index-url", INDEX + "cu126"]), project]
    assert make_install(tmp_path / "c", str(tmp_path / "none"), "CUDA=12.8")[2] == (
        "-m pip install -q " + " ".join([*PINS, "--index-url", INDEX + "cu128"]))


def test_device_auto_stops_where_nvidia_smi_lists_a_gpu_torch_cannot_use(tmp_path, monkeypatch):
    assert not torch.cuda.is_available()  # this machine: a CUDA 13.0 build of torch, no GPU
    monkeypatch.setenv("PATH", str(fake_smi(tmp_path, gpu("550.54.15", "8.6", "NVIDIA RTX A6000"))))
    with pytest.raises(SSMBenchError) as e:
        resolve_device("auto")
    assert str(e.value) == (f"train.device: auto: nvidia-smi lists 1 GPU (NVIDIA RTX A6000, driver 550.54.15), older "
                            f"than torch {torch.__version__} (CUDA {torch.version.cuda}) needs (>= 580.65.06); make "
                            f"clean install (installs cu126 for it); or train on the CPU with train.device: cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("PATH", str(fake_smi(tmp_path / "new", gpu("590.44.01"))))  # a driver new enough: torch's reason
    with pytest.raises(SSMBenchError, match=r"^train.device: auto: nvidia-smi lists 1 GPU \(NVIDIA H100 80GB HBM3, "
                                            r"driver 590.44.01\) but CUDA does not initialize: .+; or train on the CPU"):
        resolve_device("auto")
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(SSMBenchError, match="is a CPU build; install a CUDA build: make clean install"):
        resolve_device("auto")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no nvidia-smi: a CPU machine trains on the CPU
    assert resolve_device("auto") == torch.device("cpu")


def test_cli_train_stops_with_one_line(tmp_path, repo_root):
    env = {**os.environ, "PATH": f"{fake_smi(tmp_path, gpu('550.54.15', '8.6'))}:{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "ssmbench", "train", str(repo_root / "recipes" / "quickstart.yaml"),
                           "--set", "train.max_steps=1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "older than torch" in proc.stderr and "train.device: cpu" in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
