"""`ssmbench doctor` (ssmbench/doctor.py) on this CPU machine, with a fake nvidia-smi and with mocked CUDA devices."""

import os
import subprocess
import sys

import pytest
import torch

from ssmbench import doctor
from ssmbench.models import backend
from tests.test_nvidia import ROOT, fake_smi, gpu

ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # torch 2.11 cu130's list


def text(lines):
    return "\n".join(f"{status} {line}" for status, line in lines)


@pytest.fixture
def no_compile(monkeypatch):
    """The Triton compile line without compiling (the CPU-machine test compiles for real)."""
    monkeypatch.setattr(doctor, "triton_compile_line", lambda cc: (doctor.OK, f"Triton: compiled for sm_{cc}"))


def test_cpu_machine_says_no_gpu_and_compiles_the_fused_kernel(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    lines, unusable = doctor.diagnose()
    report = text(lines)
    assert not unusable
    assert "info no GPU: nvidia-smi not found; training runs on the CPU" in report
    assert f"torch {torch.__version__} (CUDA {torch.version.cuda} build, code for sm_75" in report
    assert "ok Triton 3" in report and "compiles the fused S4D forward for sm_90 (" in report
    assert "0 bytes spilled" in report


def test_gpu_the_driver_cannot_serve_fails(monkeypatch, tmp_path, no_compile):
    monkeypatch.setenv("PATH", str(fake_smi(tmp_path, gpu("550.54.15", "8.6", "NVIDIA RTX A6000"))))
    lines, unusable = doctor.diagnose()
    report = text(lines)
    assert unusable
    assert "FAIL CUDA unusable: nvidia-smi lists 1 GPU (NVIDIA RTX A6000, driver 550.54.15), older than torch" in report
    assert "ok GPU 0 NVIDIA RTX A6000: native bf16" in report and "80,000 MiB free of 81,559 MiB" in report
    assert "Triton: compiled for sm_86" in report


def mock_cuda(monkeypatch, capabilities, archs=ARCHS):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: capabilities[i])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (30 * 2**30, 40 * 2**30))
    monkeypatch.setattr(doctor, "wheel_archs", lambda: archs)


def test_a_gpu_without_code_in_the_wheel_fails_and_bf16_is_judged_by_capability(monkeypatch, tmp_path, no_compile):
    monkeypatch.setenv("PATH", str(fake_smi(tmp_path, gpu("590.44.01", "7.0", "Tesla V100-SXM2-32GB"),
                                            gpu("590.44.01", "7.5", "Tesla T4", 1))))
    mock_cuda(monkeypatch, [(7, 0), (7, 5)])
    monkeypatch.setattr(backend, "self_check", lambda device: None)
    lines, unusable = doctor.diagnose()
    report = text(lines)
    assert unusable
    assert ("FAIL GPU 0 Tesla V100-SXM2-32GB (compute capability 7.0): torch " + torch.__version__ +
            " has no code for it; make clean install") in report
    assert "ok GPU 1 Tesla T4 (compute capability 7.5): runs the wheel's sm_75" in report
    assert "warn GPU 1 Tesla T4: no native bf16 (capability < 8.0; emulated, slow)" in report  # T4: emulated bf16
    assert "GPU 1 Tesla T4: 30,720 MiB free of 40,960 MiB" in report
    assert "ok cuda:1: fused S4D kernel self-check passed" in report


def test_usable_gpus_pass_and_a_failed_self_check_warns(monkeypatch, tmp_path, no_compile):
    monkeypatch.setenv("PATH", str(fake_smi(tmp_path, gpu("590.44.01", "8.9", "NVIDIA L40S"))))
    mock_cuda(monkeypatch, [(8, 9)])
    monkeypatch.setattr(backend, "self_check", lambda device: "Triton cannot compile or launch the fused kernel (x)")
    lines, unusable = doctor.diagnose()
    report = text(lines)
    assert not unusable and "FAIL" not in report
    assert "ok CUDA usable: 1 device(s)" in report
    assert "ok GPU 0 NVIDIA L40S (compute capability 8.9): runs the wheel's sm_86" in report
    assert "ok GPU 0 NVIDIA L40S: native bf16" in report
    assert ("warn cuda:0: fused S4D kernel self-check failed: Triton cannot compile or launch the fused kernel (x); "
            "model.ssm.backend: auto uses the PyTorch path") in report


@pytest.mark.parametrize("capability, archs, code", [
    (8.9, ["sm_80", "sm_86", "sm_90"], "sm_86"), (9.0, ARCHS, "sm_90"), (12.1, ARCHS, "sm_120"),
    (7.0, ARCHS, None), (12.1, ["sm_90", "compute_120"], "compute_120 (PTX, compiled at first use)"),
    (10.3, ["sm_90", "compute_90"], "compute_90 (PTX, compiled at first use)"), (8.0, ["sm_86"], None),
])
def test_which_code_a_gpu_runs(capability, archs, code):
    assert doctor.runs_on(capability, archs) == code


def test_cli_exit_status(tmp_path):
    env = {**os.environ, "PATH": f"{fake_smi(tmp_path, gpu('550.54.15', '9.0'))}:{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "ssmbench", "doctor"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "FAIL  CUDA unusable: nvidia-smi lists 1 GPU" in proc.stdout, proc.stdout
