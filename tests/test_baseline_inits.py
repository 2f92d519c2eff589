"""Initialization methods on the diagonal baselines (docs/methods.md §I.6): alpha scales the frequencies (LRU: the
phase), the zero real part puts chosen modes on the imaginary axis (LRU: on the unit circle), and what has no
meaning is refused with one line."""

import math

import pytest
import torch

from ssmbench.errors import RecipeError
from ssmbench.init import apply_init, ssm_layers
from ssmbench.init.zero_real import zero_real_part
from ssmbench.models.dss import DSS
from ssmbench.models.lru import LRU
from ssmbench.models.s4 import S4
from ssmbench.models.s5 import S5
from ssmbench.recipe import validate_recipe


def layers():
    torch.manual_seed(0)
    return {"dss": DSS(4, d_state=8).double(), "s5": S5(4, d_state=16, blocks=2).double(),
            "lru": LRU(4, d_state=8, r_min=0.5, r_max=0.9, max_phase=1.0).double()}


def frequencies(layer):
    """Im of the continuous eigenvalues (DSS, S5) or the phase of lambda (LRU)."""
    return layer.log_lambda.imag if isinstance(layer, LRU) else layer.Lambda.imag


@pytest.mark.parametrize("kind", ["dss", "s5", "lru"])
def test_alpha_scales_only_the_frequencies(kind):
    layer = layers()[kind]
    before, real = frequencies(layer).clone(), (layer.log_lambda if kind == "lru" else layer.Lambda).real.clone()
    cfg = validate_recipe(recipe(kind, init={"alpha": 2.5})).init
    apply_init(torch.nn.Sequential(layer), cfg, {})
    torch.testing.assert_close(frequencies(layer), 2.5 * before)
    torch.testing.assert_close((layer.log_lambda if kind == "lru" else layer.Lambda).real, real)


@pytest.mark.parametrize("kind", ["dss", "s5", "lru"])
def test_zero_real_part_on_the_chosen_fraction_of_modes(kind):
    layer = layers()[kind]
    counts = zero_real_part([layer], 0.5, dt0=0.01, seed=3)
    eig = layer.log_lambda if kind == "lru" else layer.Lambda
    zero = eig.real == 0
    assert counts == [math.floor(0.5 * eig.shape[0])] == [int(zero.sum())]
    assert (eig.real[~zero] < 0).all()
    if kind == "s5":  # dt per state: the chosen ones get dt0
        torch.testing.assert_close(torch.exp(layer.log_dt[zero]), torch.full((int(zero.sum()),), 0.01,
                                   dtype=torch.float64))
    if kind == "lru":  # |lambda| = 1: the kernel does not decay; gamma = 1 keeps the mode's input
        assert torch.allclose(torch.exp(eig[zero]).abs(), torch.ones(int(zero.sum()), dtype=torch.float64))
        assert torch.equal(layer.gamma_log[zero], torch.zeros(int(zero.sum()), dtype=torch.float64))
        u = torch.randn(1, 50, 4, dtype=torch.float64)
        assert torch.isfinite(layer(u)).all()
        layer.nu_log.grad = None
        layer.ssm(u).sum().backward()
        assert torch.isfinite(layer.nu_log.grad).all() and layer.nu_log.grad[zero].abs().sum() > 0


def test_ssm_layers_find_the_baselines_but_not_s4():
    model = torch.nn.Sequential(*layers().values(), S4(4, d_state=4))
    assert [type(m).__name__ for m in ssm_layers(model)] == ["DSS", "S5", "LRU"]


def recipe(kind, **sections):
    return {"name": "t", "data": {"name": "synthetic-lds", "seq_len": 16, "n_train": 8, "n_test": 4},
            "model": {"kind": kind, "d_model": 8, "n_layers": 1, "pool": "none", "ssm": {"d_state": 16},
                      **sections.pop("model", {})}, **sections}


@pytest.mark.parametrize("kind,init,model,message", [
    ("s4", {"alpha": 2.0}, {}, "no meaning for s4, whose low-rank part"),
    ("s4", {"zero_real_fraction": 0.5}, {}, "no meaning for s4"),
    ("s4", {"name": "tdi"}, {}, "s4 layer has a low-rank part"),
    ("s5", {"name": "tdi"}, {}, "shares its modes across channels"),
    ("dss", {"zero_real_fraction": 0.5}, {"dss": {"version": "exp"}}, "DSS-exp keeps Re"),
])
def test_meaningless_methods_are_refused_with_one_line(kind, init, model, message):
    with pytest.raises(RecipeError, match=message) as e:
        validate_recipe(recipe(kind, init=init, model=model))
    assert len(e.value.problems) == 1


def test_methods_with_a_meaning_are_accepted():
    for kind in ("dss", "s5", "lru"):
        r = validate_recipe(recipe(kind, init={"alpha": 3.0, "zero_real_fraction": 0.25}))
        assert r.init.alpha == 3.0
