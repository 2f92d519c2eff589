"""Frequency-bias tuning (docs/methods.md §B): alpha scales Im(A) only; beta is the trained Sobolev filter (1 + k/n)^beta."""

import math

import numpy as np
import pytest
import torch

from ssmbench.contracts import ModelIO
from ssmbench.init import apply_init, ssm_layers
from ssmbench.models.backbone import SequenceModel
from ssmbench.models.s4d import S4D
from ssmbench.recipe import InitConfig, ModelConfig
from ssmbench.train.optim import build_optimizer

IO = ModelIO(d_input=1, input_kind="real", n_outputs=2)


def build(init: str, seed: int = 0, **ssm) -> SequenceModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=8, n_layers=2, ssm={"d_state": 16, **ssm})
    return SequenceModel(cfg, init, IO)


@pytest.mark.parametrize("init", ["s4d-lin", "s4d-inv", "s4d-legs"])
def test_alpha_scales_exactly_im_a_and_nothing_else(init):
    base, scaled = build(init), build(init)
    facts = apply_init(scaled, InitConfig(name=init, alpha=3.0))
    assert facts["alpha"] == 3.0
    sb, ss = base.state_dict(), scaled.state_dict()
    changed = [k for k in sb if not torch.equal(sb[k], ss[k])]
    assert changed and all(k.endswith("A_im") for k in changed)
    for k in changed:
        torch.testing.assert_close(ss[k], 3.0 * sb[k], rtol=0, atol=0)
    for a, b in zip(ssm_layers(base), ssm_layers(scaled)):
        torch.testing.assert_close(b.A.real, a.A.real, rtol=0, atol=0)
        torch.testing.assert_close(b.A.imag, 3.0 * a.A.imag, rtol=0, atol=0)


def test_alpha_one_is_bit_identical():
    base, same = build("s4d-legs"), build("s4d-legs")
    apply_init(same, InitConfig(name="s4d-legs", alpha=1.0))
    sb, ss = base.state_dict(), same.state_dict()
    assert all(torch.equal(sb[k], ss[k]) for k in sb)


def single_mode_layer(im: float, dt: float, L_peak: int) -> S4D:
    layer = S4D(1, d_state=2)
    with torch.no_grad():
        layer.log_dt.fill_(math.log(dt))
        layer.set_A(torch.tensor([[complex(-0.5, im)]]))
    return layer


@pytest.mark.parametrize("alpha", [2.0, 5.0])
def test_alpha_moves_the_single_mode_peak(alpha):
    """Theorem F.1: a mode peaks at omega = dt Im A, i.e. bin L dt Im A / (2 pi); alpha multiplies that bin."""
    L, dt, k0 = 512, 1e-2, 20
    layer = single_mode_layer(2 * math.pi * k0 / (L * dt), dt, L)
    apply_init(torch.nn.Sequential(layer), InitConfig(alpha=alpha))
    spectrum = torch.fft.rfft(layer.kernel(L)[0, 0].double()).abs()
    assert int(spectrum.argmax()) == round(alpha * k0)


def ssm_without_skip(layer: S4D, u: torch.Tensor) -> torch.Tensor:
    return layer.ssm(u) - u * layer.D


def test_beta_zero_equals_the_unfiltered_layer():
    torch.manual_seed(1)
    plain = S4D(6, d_state=8)
    torch.manual_seed(1)
    filtered = S4D(6, d_state=8, beta=0.0)
    u = torch.randn(3, 50, 6)
    assert torch.equal(plain.ssm(u), filtered.ssm(u))


@pytest.mark.parametrize("path", ["fast", "direct"])
@pytest.mark.parametrize("beta", [-1.0, 0.7])
def test_beta_filter_equals_circular_convolution_with_the_filter_impulse_response(beta, path):
    """Independent path: y = (u (*) K (*) g)[:L], circular convolutions of length n = 2L, g = irfft((1 + k/n)^beta).

    L = 40: 2L = 80 is 7-smooth, so both layer paths use n = 2L.
    """
    torch.manual_seed(2)
    H, L = 3, 40
    layer = S4D(H, d_state=8, beta=beta, path=path)
    u = torch.randn(1, L, H)
    y = ssm_without_skip(layer, u)[0].detach().double().numpy()
    n = 2 * L
    K = layer.kernel(L)[0].detach().double().numpy()
    g = np.fft.irfft((1 + np.arange(n // 2 + 1) / n) ** beta, n)
    for h in range(H):
        uh, Kh = np.zeros(n), np.zeros(n)
        uh[:L], Kh[:L] = u[0, :, h].double().numpy(), K[h]
        uk = np.array([sum(uh[j] * Kh[(t - j) % n] for j in range(n)) for t in range(n)])
        ref = np.array([sum(uk[j] * g[(t - j) % n] for j in range(n)) for t in range(L)])
        np.testing.assert_allclose(y[:, h], ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_beta_raises_or_lowers_the_upper_band_energy():
    torch.manual_seed(3)
    H, L = 4, 256
    u = torch.randn(8, L, H)

    def upper_share(beta):
        torch.manual_seed(4)
        layer = S4D(H, d_state=16, beta=beta, dt_min=0.05, dt_max=0.5)
        e = torch.fft.rfft(ssm_without_skip(layer, u), dim=1).abs() ** 2
        half = e.shape[1] // 2
        return float(e[:, half:].sum().detach() / e.sum().detach())

    assert upper_share(1.0) > upper_share(0.0) > upper_share(-1.0)


def test_gradient_wrt_beta_matches_finite_differences():
    torch.manual_seed(5)
    layer = S4D(3, d_state=8, beta=0.3)
    u = torch.randn(2, 32, 3)

    def loss():
        return (ssm_without_skip(layer, u) ** 2).sum()

    loss().backward()
    grad = layer.beta.grad.clone()
    eps = 1e-2
    fd = torch.empty(3)
    with torch.no_grad():
        for h in range(3):
            layer.beta[h] += eps
            up = loss().item()
            layer.beta[h] -= 2 * eps
            down = loss().item()
            layer.beta[h] += eps
            fd[h] = (up - down) / (2 * eps)
    assert grad.abs().min() > 0
    torch.testing.assert_close(grad, fd, rtol=2e-3, atol=1e-4 * fd.abs().max().item())


@pytest.mark.parametrize("beta_lr", [0.01, 0.0])
def test_beta_is_trained_with_its_own_lr_and_no_weight_decay(beta_lr):
    model = build("s4d-lin", beta=0.5, beta_lr=beta_lr)
    opt = build_optimizer(model, lr=0.01, weight_decay=0.05)
    betas = [layer.beta for layer in ssm_layers(model)]
    groups = [g for g in opt.param_groups if any(p is betas[0] for p in g["params"])]
    assert groups[0]["lr"] == beta_lr and groups[0]["weight_decay"] == 0.0
    start = [b.detach().clone() for b in betas]
    torch.manual_seed(6)
    x, y = torch.randn(4, 30, 1), torch.randint(0, 2, (4,))
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    moved = max(float((b.detach() - s).abs().max()) for b, s in zip(betas, start))
    assert (moved > 1e-4) if beta_lr > 0 else (moved == 0.0)
