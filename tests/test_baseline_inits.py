"""Initialization methods on the diagonal baselines (docs/methods.md §I.6): alpha scales the frequencies (LRU: the
phase), the zero real part puts chosen modes on the imaginary axis (LRU: on the unit circle), and what has no
meaning is refused with one line."""

import copy
import math

import pytest
import torch

from ssmbench.errors import RecipeError
from ssmbench.init import apply_init, ssm_layers
from ssmbench.init.tdi import stored_modes
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
    ("s4", {"name": "tdi"}, {}, "the s4 layer has a low-rank part"),
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


# --------------------------------------------------------------------------------------------------
# TDI's F.1 placement on the layers whose modes are shared by the channels (docs/methods.md §I.6)


def impulse_peaks(layer, mode, L):
    """Brute force: the layer with only `mode` kept (its W column for DSS, its B row for S5/LRU), fed an impulse
    in input channel 0 (every channel for DSS, which is SISO per channel); argmax_k |rfft(y - D u)| per output
    channel (one-sided bins of the impulse response, i.e. of the kernel)."""
    layer = copy.deepcopy(layer)
    with torch.no_grad():
        keep = torch.zeros(stored_modes(layer), dtype=torch.bool)
        keep[mode] = True
        if isinstance(layer, DSS):
            layer.W[:, :, ~keep] = 0
        else:
            layer.B[~keep] = 0
        u = torch.zeros(1, L, layer.d_model, dtype=torch.float64)
        u[0, 0, :] = 1.0 if isinstance(layer, DSS) else 0.0
        u[0, 0, 0] = 1.0
        y = layer.ssm(u) - u * layer.D
    return torch.fft.rfft(y[0], dim=0).abs().argmax(0)


def placement_layers():
    torch.manual_seed(1)
    return {"dss": DSS(3, d_state=4).double(), "dss-exp": DSS(3, d_state=4, version="exp").double(),
            "dss-one-dt": DSS(3, d_state=4, sep_dt_re_im=False).double(),
            "s5": S5(3, d_state=8, blocks=1).double(), "s5-no-conj": S5(3, d_state=4, blocks=1, conj_sym=False).double(),
            "lru": LRU(3, d_state=4, r_min=0.95, r_max=0.99).double()}


@pytest.mark.parametrize("kind", ["dss", "dss-exp", "dss-one-dt", "s5", "s5-no-conj", "lru"])
def test_f1_placement_puts_each_shared_mode_peak_on_its_bin(kind):
    """SPEC §C check 1 per mode, through the layer's own forward: mode n peaks at bin k_n in every channel."""
    L, bins = 256, torch.tensor([5, 40, 100, 70])
    layer = placement_layers()[kind]
    real = (layer.log_lambda if kind == "lru" else layer.Lambda).real.clone()
    layer.place_frequencies(2 * math.pi * bins.double() / L, dt_ref=0.01)
    for n, k in enumerate(bins.tolist()):
        assert impulse_peaks(layer, n, L).tolist() == [k] * 3, (kind, n)
    torch.testing.assert_close((layer.log_lambda if kind == "lru" else layer.Lambda).real, real)  # decay kept


def tdi_recipe(kind, model=None, **init):
    return {"name": "t", "data": {"name": "synthetic-frequency", "pattern": "high", "inputs": "white", "length": 256,
                                  "n_train": 400, "n_test": 8},
            "model": {"kind": kind, "d_model": 2, "n_layers": 2, "pool": "mean", "ssm": {"d_state": 8}, **(model or {})},
            "init": {"name": "tdi", "samples": 300, **init},
            "train": {"max_steps": 3, "batch_size": 8, "eval_every": 3, "max_eval_batches": 1, "loggers": []}}


@pytest.mark.parametrize("kind", ["dss", "s5", "lru"])
def test_tdi_recipe_places_the_first_layer_on_the_task_bins_and_trains(kind, tmp_path, monkeypatch):
    """The planted frequencies (bins 125-127) are among the first layer's placed bins; only the first layer's
    frequencies (and DSS's dt_im) change; the recipe validates and trains."""
    from ssmbench.data import build_data
    from ssmbench.models.backbone import SequenceModel
    from ssmbench.paths import DATA_ROOT_ENV
    from ssmbench.train.engine import train

    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    recipe = validate_recipe(tdi_recipe(kind, model={"s5": {"blocks": 2}} if kind == "s5" else None))
    data = build_data(recipe.data)

    def build():
        torch.manual_seed(0)
        return SequenceModel(recipe.model, recipe.init.name, data.io)

    model, plain, logs = build(), build(), []
    facts = apply_init(model, recipe.init, {"data": data, "recipe": recipe, "log": logs.append})["tdi"]
    first = ssm_layers(model)[0]
    assert facts["placement"] == "F.1" and len(facts["bins"]) == stored_modes(first) and "F.1 placement" in logs[0]
    assert {125, 126, 127} <= set(facts["bins"]) and facts["L"] == 256 and facts["samples"] == 300
    omega = 2 * math.pi * torch.tensor(facts["bins"], dtype=torch.float64) / 256
    if kind == "lru":
        placed = first.log_lambda.imag.double()
    elif kind == "s5":
        placed = first.Lambda.imag.double() * torch.exp(first.log_dt.double())
    else:
        placed = first.Lambda.imag.double() * torch.exp(first.log_dt[:, 1].double())[:, None]
    torch.testing.assert_close(placed, omega.expand_as(placed), rtol=1e-6, atol=1e-6)
    sm, sp = model.state_dict(), plain.state_dict()
    changed = {k for k in sm if not torch.equal(sm[k], sp[k])}
    assert changed == {"blocks.0.layer." + n for n in {"dss": ["Lambda_im", "log_dt"], "s5": ["Lambda_im"],
                                                       "lru": ["theta_log"]}[kind]}
    results = train(recipe, runs_root=tmp_path / "runs", quiet=True, log=lambda *_: None)
    assert results["steps"] == 3


@pytest.mark.parametrize("kind,init,model,message", [
    ("dss", {"artifact": "x.pt"}, {}, "init.artifact: holds Algorithm 1's fit of S4D channels; on the dss layer"),
    ("lru", {"base": "s4d-inv"}, {}, "init.base: s4d-inv initializes s4d layers"),
])
def test_tdi_options_of_s4d_only_are_refused_on_shared_modes(kind, init, model, message):
    with pytest.raises(RecipeError, match=message) as e:
        validate_recipe(recipe(kind, init={"name": "tdi", **init}, model=model))
    assert len(e.value.problems) == 1


def test_init_tdi_command_refuses_the_baseline_recipes(tmp_path):
    from io import StringIO

    import yaml
    from rich.console import Console

    from ssmbench.errors import SSMBenchError
    from ssmbench.init_tdi import init_tdi

    for kind, message in (("s5", "places its first layer's modes at the start of the run"), ("s4", "low-rank part")):
        path = tmp_path / f"{kind}.yaml"
        path.write_text(yaml.safe_dump(recipe(kind)))
        with pytest.raises(SSMBenchError, match=message):
            init_tdi(None, path, [], None, None, None, None, None, Console(file=StringIO()))
