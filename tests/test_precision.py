"""Mixed precision and torch.compile of the S4D block.

Policy (ssmbench/models/s4d.py): under autocast the position-wise Linear runs in the autocast dtype (bf16/fp16),
while the kernel, the FFTs and the spectrum product run in float32 (half-precision FFTs are unsafe).
Stated tolerances of the block output against float32, relative to max |y| (unit roundoff 2^-8 for bf16,
2^-11 for fp16; measured 4-5e-3 and 5-7e-4 on these shapes): bf16 2e-2, fp16 4e-3.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ssmbench.models.s4d import S4D

FFT_OPS = ("_fft_r2c", "_fft_c2r", "_fft_c2c")


class DtypeLog(TorchDispatchMode):
    """Records (op name, dtypes of tensor arguments, dtype of the first output) of every aten op."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        first = out[0] if isinstance(out, (tuple, list)) else out
        self.calls.append((func.__name__.split(".")[0], [a.dtype for a in args if isinstance(a, torch.Tensor)],
                           getattr(first, "dtype", None)))
        return out


def block(seed=0, **kw) -> S4D:
    torch.manual_seed(seed)
    return S4D(16, d_state=16, **kw)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_autocast_dtype_policy(dtype, bidirectional):
    layer = block(bidirectional=bidirectional, beta=0.3)
    u = torch.randn(2, 40, 16, requires_grad=True)
    seen = {}
    layer.output_linear.register_forward_hook(lambda m, i, o: seen.update(linear_in=i[0].dtype, linear_out=o.dtype))
    log = DtypeLog()
    with torch.autocast("cpu", dtype=dtype), log:
        y_ssm = layer.ssm(u.to(dtype))  # a half-precision input from an earlier layer is promoted
        y = layer(u)
    assert y_ssm.dtype == torch.float32
    assert seen == {"linear_in": torch.float32, "linear_out": dtype}  # GELU output in fp32; Linear in half
    assert y.dtype == dtype
    ffts = [c for c in log.calls if c[0] in FFT_OPS]
    assert len(ffts) >= 4  # kernel rfft, input rfft, output irfft, per call
    for name, args, out in ffts:
        assert all(a in (torch.float32, torch.complex64) for a in args), (name, args)
        assert out in (torch.float32, torch.complex64), (name, out)
    mm = [c for c in log.calls if c[0] in ("addmm", "mm", "linear")]
    assert any(out == dtype for _, _, out in mm)  # the position-wise linear did run in half precision
    y.float().square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad.dtype == p.dtype == torch.float32 and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 4e-3)])
def test_autocast_output_within_tolerance_of_float32(dtype, tol):
    layer = block(seed=1)
    u = torch.randn(4, 128, 16)
    with torch.no_grad():
        y32 = layer(u)
        with torch.autocast("cpu", dtype=dtype):
            y = layer(u).float()
    err = (y - y32).abs().max() / y32.abs().max()
    assert err < tol, f"{dtype}: relative error {err:.2e}"
    assert err > 0  # autocast did change the computation (the linear ran in half precision)


@pytest.mark.slow
def test_compiled_block_matches_eager():
    """torch.compile of the block (the `train.compile` recipe flag): same outputs and gradients as eager."""
    eager, compiled = block(seed=2), block(seed=2)
    compiled.compile()
    u = torch.randn(2, 48, 16)
    g = torch.randn(2, 48, 16)
    results = []
    for layer in (eager, compiled):
        x = u.clone().requires_grad_()
        y = layer(x)
        (y * g).sum().backward()
        results.append([y.detach(), x.grad] + [p.grad for p in layer.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_compile_flag_compiles_every_block(tmp_path, monkeypatch):
    """`train.compile: true` compiles each residual block in place, keeping the state-dict keys."""
    from ssmbench import runs
    from ssmbench.models.backbone import ResidualBlock
    from ssmbench.recipe import validate_recipe
    from ssmbench.train.engine import Trainer

    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    raw = {"name": "c", "data": {"name": "smnist", "permute": False},
           "model": {"d_model": 8, "n_layers": 2, "ssm": {"d_state": 4}},
           "train": {"compile": True, "max_steps": 1, "batch_size": 4}}
    recipe = validate_recipe(raw)
    trainer = Trainer(recipe, runs.create_run_dir(tmp_path, recipe.name), quiet=True, log=lambda *a: None)
    assert len(compiled) == 2 and all(isinstance(m, ResidualBlock) for m in compiled)
    assert all(m in compiled for m in trainer.model.blocks)
    raw["train"]["compile"] = False
    compiled.clear()
    recipe = validate_recipe(raw)
    Trainer(recipe, runs.create_run_dir(tmp_path, recipe.name), quiet=True, log=lambda *a: None)
    assert compiled == []
