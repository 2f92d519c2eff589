"""LRU (docs/methods.md §I.4): FFT path vs its step-by-step recurrence, causality, gradients, the paper's init."""

import math

import pytest
import torch

from ssm_recurrences import gradcheck_parameters, mimo_recurrence
from ssmbench.models.kernels import diagonal_recurrence
from ssmbench.models.lru import LRU
from ssmbench.recipe import validate_recipe
from ssmbench.train.optim import param_groups
from ssmbench.errors import RecipeError


def lru(H=4, N=6, **kw):
    torch.manual_seed(0)
    return LRU(H, d_state=N, r_min=0.5, r_max=0.95, **kw).double()


def recurrence(m, u):
    lam = torch.exp(m.log_lambda)
    B = torch.exp(m.gamma_log)[:, None] * torch.view_as_complex(m.B)
    return mimo_recurrence(u, B, lam, torch.view_as_complex(m.C), m.D)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_convolution_equals_recurrence_float64(bidirectional):
    m = lru(bidirectional=bidirectional)
    u = torch.randn(3, 37, 4, dtype=torch.float64)
    torch.testing.assert_close(m.ssm(u), recurrence(m, u), rtol=1e-10, atol=1e-10)


def test_recurrence_fft_with_a_given_size_and_reverse():
    torch.manual_seed(1)
    v = torch.randn(2, 20, 3, dtype=torch.complex128)
    log_lam = torch.complex(-torch.rand(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64))
    lam = torch.exp(log_lam)
    for reverse in (False, True):
        x = torch.zeros(2, 3, dtype=torch.complex128)
        ref = torch.empty_like(v)
        for t in (range(19, -1, -1) if reverse else range(20)):
            x = lam * x + v[:, t]
            ref[:, t] = x
        torch.testing.assert_close(diagonal_recurrence(v, log_lam, n_fft=48, reverse=reverse), ref)


def test_causal():
    m = lru()
    u = torch.randn(1, 30, 4, dtype=torch.float64)
    w = u.clone()
    w[:, 17] += 1.0
    y, z = m(u), m(w)
    torch.testing.assert_close(y[:, :17], z[:, :17], rtol=0, atol=1e-12)
    assert (y[:, 17:] - z[:, 17:]).abs().max() > 1e-3


def test_gradcheck():
    m = lru(H=2, N=3)
    u = torch.randn(1, 6, 2, dtype=torch.float64, requires_grad=True)
    names = ["nu_log", "theta_log", "gamma_log", "B", "C", "D"]
    assert gradcheck_parameters(m, names, u)


def test_ring_init_matches_the_paper():
    torch.manual_seed(0)
    r_min, r_max, phase, N, H = 0.4, 0.9, math.pi / 2, 20000, 16
    m = LRU(H, d_state=N, r_min=r_min, r_max=r_max, max_phase=phase).double()
    lam = torch.exp(m.log_lambda)
    mod2 = lam.abs() ** 2
    assert mod2.min() >= r_min ** 2 - 1e-6 and mod2.max() <= r_max ** 2 + 1e-6
    # |lambda|^2 uniform on [r_min^2, r_max^2]: mean and variance of the uniform law
    a, b = r_min ** 2, r_max ** 2
    assert abs(mod2.mean() - (a + b) / 2) < 0.01 and abs(mod2.var() - (b - a) ** 2 / 12) < 0.005
    arg = torch.angle(lam)
    assert arg.min() >= 0 and arg.max() <= phase + 1e-6 and abs(arg.mean() - phase / 2) < 0.02
    torch.testing.assert_close(torch.exp(m.gamma_log), torch.sqrt(1 - mod2), rtol=1e-5, atol=1e-6)
    B, C = m.B.detach(), m.C.detach()  # real and imaginary parts: N(0, 1/(2H)) and N(0, 1/N)
    assert abs(B.var() * 2 * H - 1) < 0.02 and abs(C.var() * N - 1) < 0.05
    assert abs(m.D.var() - 1) < 0.6  # D ~ N(0, 1), H entries


def test_lambda_stays_inside_the_unit_disc_whatever_the_parameters():
    m = lru()
    with torch.no_grad():
        m.nu_log.uniform_(-30, 5)
        m.theta_log.uniform_(-5, 5)
    assert (torch.exp(m.log_lambda).abs() < 1).all()


def test_optimizer_groups_follow_the_recipe():
    m = LRU(4, d_state=6, lr={"A": 5e-4, "B": 2e-4, "C": None}, weight_decay={"A": 0.0, "B": 0.0, "C": None})
    groups = {tuple(sorted(g["names"])): (g["lr"], g["weight_decay"]) for g in param_groups(m, 1e-3, 0.1)}
    assert groups[("nu_log", "theta_log")] == (5e-4, 0.0)
    assert groups[("B", "gamma_log")] == (2e-4, 0.0)
    rest = [k for k, v in groups.items() if v == (1e-3, 0.1)]
    assert rest and "C" in rest[0] and "D" in rest[0]


def recipe(**model):
    return {"name": "t", "data": {"name": "synthetic-lds", "seq_len": 16, "n_train": 8, "n_test": 4},
            "model": {"kind": "lru", "d_model": 8, "n_layers": 1, "pool": "none", **model}}


def test_recipe_builds_the_layer_and_refuses_bad_rings_and_s4d_options():
    r = validate_recipe(recipe(lru={"r_min": 0.9, "r_max": 0.999, "max_phase": 0.3}))
    assert r.model.lru.r_max == 0.999
    with pytest.raises(RecipeError, match="r_min .* must be below r_max"):
        validate_recipe(recipe(lru={"r_min": 0.9, "r_max": 0.5}))
    with pytest.raises(RecipeError, match="ssm.beta: an option of the s4d layer"):
        validate_recipe(recipe(ssm={"beta": 1.0}))
    raw = recipe()
    raw["init"] = {"name": "s4d-inv"}
    with pytest.raises(RecipeError, match="has its own initialization"):
        validate_recipe(raw)
