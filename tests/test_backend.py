"""model.ssm.backend (models/backend.py): the fused kernel's self-check, the fallback of `auto` with one warning
line, the loud failure of `triton`, `torch` never touching Triton, and env.json's record of the choice.

The CPU stands in for a CUDA device (`TRITON_INTERPRETED` set in the modules that read it), so the self-check runs
here: against the real Triton (which cannot launch without a GPU driver), a Triton whose launch raises, and fused
kernels that return wrong numbers or wrong gradients. The self-check passing on the real kernels in Triton's
interpreter is tests/test_vandermonde_triton.py."""

import json

import pytest
import torch

from ssmbench.errors import SSMBenchError
from ssmbench.models import backend, s4d, vandermonde_triton
from ssmbench.recipe import load_recipe
from ssmbench.train.engine import train

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """Empty caches (the check runs once per process and device), and the CPU treated as a device of the fused
    kernel."""
    monkeypatch.setattr(backend, "_CHECKED", {})
    monkeypatch.setattr(backend, "_CHOICES", {})
    monkeypatch.setattr(backend, "TRITON_INTERPRETED", True)
    monkeypatch.setattr(s4d, "TRITON_INTERPRETED", True)


def c_compiler_missing(kernel, grid, *args, **meta):
    raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.\nmore text")


def off_by_one_percent(*params_and_shape):
    return backend._torch_filter(*params_and_shape) * 1.01


def wrong_gradient_of_C(A_re, A_im, log_dt, B, C, D, L, n_fft):
    """The right filter, but dLoss/dC scaled by 1.01 (same value: C + 0.01 (C - C))."""
    return backend._torch_filter(A_re, A_im, log_dt, B, C + 0.01 * (C - C.detach()), D, L, n_fft)


def test_self_check_passes_for_a_kernel_that_agrees(monkeypatch):
    monkeypatch.setattr(backend, "_fused_filter", backend._torch_filter)
    choice = backend.choose("auto", CPU)
    assert choice.backend == "triton" and choice.reason.startswith("self-check passed on cpu")


@pytest.mark.parametrize("patch, cause", [
    (None, "Triton cannot compile or launch the fused kernel"),  # the real Triton: no GPU driver here
    ((vandermonde_triton, "_launch", c_compiler_missing),
     "Triton cannot compile or launch the fused kernel (RuntimeError: Failed to find C compiler. Please specify via "
     "CC environment variable.)"),
    ((backend, "_fused_filter", off_by_one_percent),
     "the fused kernel disagrees with the PyTorch path: the kernel off by 1.0e-02 of its largest value"),
    ((backend, "_fused_filter", wrong_gradient_of_C),
     "the fused kernel disagrees with the PyTorch path: the gradient of C off by 1.0e-02 of its largest value"),
])
def test_auto_falls_back_with_one_warning_line_and_triton_stops(monkeypatch, capsys, patch, cause):
    if patch:
        monkeypatch.setattr(*patch)
    layer = s4d.S4D(4, d_state=8)
    reference = s4d.S4D(4, d_state=8, backend="torch")
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(2, 50, 4)
    assert torch.equal(layer(x), reference(x))  # auto fell back: the PyTorch path's output, bit for bit
    layer(x), backend.choose("auto", CPU)  # later forwards and look-ups: no second check, no second warning
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith(f"warning: the S4D layers use the PyTorch path on cpu: {cause}")
    assert backend.choose("auto", CPU).facts() == {"backend": "torch", "reason": warning[0].split("on cpu: ")[1]}
    with pytest.raises(SSMBenchError) as e:
        backend.choose("triton", CPU)
    assert str(e.value) == (f"model.ssm.backend: triton: {warning[0].split('on cpu: ')[1]}; set model.ssm.backend: "
                            f"auto (falls back to PyTorch) or torch")


def test_torch_never_checks_and_cpu_runs_skip_the_check(monkeypatch, capsys):
    monkeypatch.setattr(backend, "self_check", lambda device: pytest.fail("the self-check ran"))
    assert backend.choose("torch", CPU).facts() == {"backend": "torch", "reason": "model.ssm.backend: torch"}
    layer = s4d.S4D(4, d_state=8, backend="torch")
    assert not layer.fused()
    monkeypatch.setattr(backend, "TRITON_INTERPRETED", False)
    assert backend.choose("auto", CPU).reason == "the fused Triton kernel runs on CUDA; this run is on cpu"
    assert capsys.readouterr().err == ""  # a CPU run is no fallback: nothing to warn about


def test_env_json_records_the_backend_and_triton_refuses_a_cpu_run(repo_root, tmp_path, monkeypatch):
    monkeypatch.setattr(backend, "TRITON_INTERPRETED", False)
    monkeypatch.setattr(s4d, "TRITON_INTERPRETED", False)
    tiny = ["model.d_model=8", "model.n_layers=1", "model.ssm.d_state=4", "train.max_steps=1",
            "train.max_eval_batches=1", "train.max_test_batches=1"]
    train(load_recipe(repo_root / "recipes" / "quickstart.yaml", tiny), runs_root=tmp_path / "a", quiet=True)
    env = json.loads(next((tmp_path / "a").glob("*/env.json")).read_text())
    assert env["ssm_backend"] == {"backend": "torch", "reason": "the fused Triton kernel runs on CUDA; this run is on cpu"}
    with pytest.raises(SSMBenchError, match="^model.ssm.backend: triton: the fused Triton kernel runs on CUDA; this "
                                            "run is on cpu; set model.ssm.backend: auto"):
        train(load_recipe(repo_root / "recipes" / "quickstart.yaml", tiny + ["model.ssm.backend=triton"]),
              runs_root=tmp_path / "b", quiet=True)
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())  # stopped before any run directory
