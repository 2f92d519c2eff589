"""Zero real part and dt0 = 1/sqrt(L lambda_max) (docs/methods.md §D)."""

import math

import numpy as np
import pytest
import torch

from ssmbench.data import build_data
from ssmbench.init import apply_init, ssm_layers
from ssmbench.init.zero_real import lambda_max, standardize
from ssmbench.models.backbone import SequenceModel
from ssmbench.recipe import validate_recipe


def setup(H=20, p=0.25, dt0=0.05, layers=2, length=64, seed=0, init="s4d-lin"):
    recipe = validate_recipe({
        "name": "zr", "seed": seed,
        "data": {"name": "synthetic-memory", "length": length, "n_train": 300, "n_test": 10},
        "model": {"d_model": H, "n_layers": layers, "ssm": {"d_state": 16}},
        "init": {"name": init, "zero_real_fraction": p, "dt0": dt0}})
    data = build_data(recipe.data)
    torch.manual_seed(seed)
    model = SequenceModel(recipe.model, recipe.init.name, data.io)
    torch.manual_seed(seed)
    base = SequenceModel(recipe.model, recipe.init.name, data.io)
    logs = []
    facts = apply_init(model, recipe.init, {"data": data, "recipe": recipe, "log": logs.append})
    return model, base, facts, logs


@pytest.mark.parametrize("H,p,expected", [(20, 0.25, 5), (10, 0.33, 3), (7, 1.0, 7), (9, 0.1, 0)])
def test_exact_count_of_zeroed_state_vectors(H, p, expected):
    model, base, facts, logs = setup(H=H, p=p)
    assert facts["zero_real"]["channels_per_layer"] == [expected, expected]
    for layer, ref in zip(ssm_layers(model), ssm_layers(base)):
        chosen = layer.linear_real
        assert int(chosen.sum()) == expected
        A = layer.A.detach()
        assert torch.all(A.real[chosen] == 0.0)  # the whole state vector of a chosen channel
        torch.testing.assert_close(A.imag, ref.A.imag.detach(), rtol=0, atol=0)  # Im(A) keeps the base init
        torch.testing.assert_close(A.real[~chosen], ref.A.real.detach()[~chosen], rtol=0, atol=0)
        assert torch.allclose(layer.log_dt[chosen], torch.tensor(math.log(0.05)))
        torch.testing.assert_close(layer.log_dt[~chosen], ref.log_dt[~chosen], rtol=0, atol=0)
    assert "dt0 = 0.05" in logs[0]


def test_channel_choice_is_seeded_and_differs_between_layers():
    a = [layer.linear_real.clone() for layer in ssm_layers(setup(H=40, p=0.5, seed=3)[0])]
    b = [layer.linear_real.clone() for layer in ssm_layers(setup(H=40, p=0.5, seed=3)[0])]
    c = [layer.linear_real.clone() for layer in ssm_layers(setup(H=40, p=0.5, seed=4)[0])]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], c[0])


def recurrence_kernel(A: np.ndarray, B_bar: np.ndarray, C: np.ndarray, dt: float, L: int) -> np.ndarray:
    """Impulse response of x_k = exp(dt A) x_{k-1} + B_bar u_k, y_k = 2 Re(C x_k), in float64."""
    x, out = np.zeros_like(A), np.empty(L)
    for k in range(L):
        x = np.exp(dt * A) * x + (B_bar if k == 0 else 0)
        out[k] = 2 * np.real(C @ x)
    return out


def test_zero_real_kernel_does_not_decay_and_matches_the_recurrence():
    model, _, _, _ = setup(H=6, p=1.0, dt0=0.1)
    layer = ssm_layers(model)[0]
    L = 2000
    K = layer.kernel(L)[0].detach().double().numpy()
    assert np.isfinite(K).all()  # S4D-Lin mode 0 is A = 0 exactly: phi1 keeps B_bar = dt
    for h in range(layer.A.shape[0]):
        A = layer.A[h].detach().numpy().astype(np.complex128)
        dt = math.exp(float(layer.log_dt[h].detach()))
        assert np.all(A.real == 0) and np.allclose(np.abs(np.exp(dt * A)), 1.0, rtol=0, atol=1e-15)
        B_bar = dt * np.where(A == 0, 1.0, np.expm1(dt * A) / np.where(A == 0, 1, dt * A))
        C = torch.view_as_complex(layer.C)[0, h].detach().numpy().astype(np.complex128)
        ref = recurrence_kernel(A, B_bar, C, dt, L)
        np.testing.assert_allclose(K[h], ref, rtol=0, atol=2e-4 * np.abs(ref).max())
        # no decay: the energy of the last quarter equals that of the first (periodic, |A_bar| = 1) ...
        assert np.sum(ref[-L // 4:] ** 2) > 0.5 * np.sum(ref[:L // 4] ** 2)
    # ... while Re(A) = -0.5 at the same dt decays by exp(-0.5 * 0.1 * 1500) in that range
    _, base, _, _ = setup(H=6, p=0.0, dt0=0.1)
    ref_layer = ssm_layers(base)[0]
    with torch.no_grad():
        ref_layer.log_dt.fill_(math.log(0.1))
    Kb = ref_layer.kernel(L)[0].detach().double().numpy()
    assert np.sum(Kb[:, -L // 4:] ** 2) < 1e-20 * np.sum(Kb[:, :L // 4] ** 2)


def test_zero_real_part_can_cross_zero_with_a_gradient():
    model, _, _, _ = setup(H=4, p=1.0)
    layer = ssm_layers(model)[0]
    layer.kernel(64).pow(2).sum().backward()
    assert layer.A_re.grad.abs().max() > 0
    with torch.no_grad():
        layer.A_re[0, 1] = -0.2
    assert layer.A[0, 1].real.item() == pytest.approx(0.2)


def ar1(S: int, L: int, rho: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(S, L, generator=g, dtype=torch.float64)
    x = torch.empty_like(e)
    x[:, 0] = e[:, 0]
    for t in range(1, L):
        x[:, t] = rho * x[:, t - 1] + math.sqrt(1 - rho ** 2) * e[:, t]
    return x


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.95])
def test_lambda_max_agrees_with_dense_eigvalsh(rho):
    X = standardize(ar1(400, 48, rho, seed=1) + 0.3)
    lam, _ = lambda_max(X, chunk=64)
    dense = torch.linalg.eigvalsh(X.T @ X / X.shape[0])[-1].item()
    assert abs(lam - dense) / dense < 1e-3


def test_lambda_max_runs_at_L_16384_without_an_L_by_L_matrix():
    """lambda_max(X^T X / S) = lambda_max(X X^T / S): the S x S Gram matrix is the dense reference."""
    X = standardize(torch.cumsum(torch.randn(24, 16384, generator=torch.Generator().manual_seed(2), dtype=torch.float64), 1))
    lam, iters = lambda_max(X, chunk=8)
    dense = torch.linalg.eigvalsh(X @ X.T / X.shape[0])[-1].item()
    assert abs(lam - dense) / dense < 1e-3 and iters < 1000


def test_auto_dt0_on_iid_data():
    """i.i.d. N(0, 1): Sigma = X^T X / S has Marchenko-Pastur edge (1 + sqrt(L/S))^2; dt0 = 1/sqrt(L lambda)."""
    model, _, facts, logs = setup(H=8, p=0.5, dt0="auto", length=64)
    z = facts["zero_real"]
    assert z["dt0_source"] == "auto" and z["L"] == 64 and z["sequences"] == 270  # 300 minus 10% validation
    assert z["dt0"] == pytest.approx(1 / math.sqrt(64 * z["lambda_max"]))
    edge = (1 + math.sqrt(64 / 270)) ** 2
    assert 0.8 * edge < z["lambda_max"] < 1.2 * edge
    layer = ssm_layers(model)[0]
    torch.testing.assert_close(layer.log_dt[layer.linear_real], torch.full((4,), math.log(z["dt0"])))
    assert "lambda_max" in logs[0]


def test_dt0_null_uses_dt_min():
    _, _, facts, _ = setup(p=0.5, dt0=None)
    assert facts["zero_real"]["dt0"] == 1e-3 and facts["zero_real"]["dt0_source"] == "model.ssm.dt_min"


@pytest.mark.parametrize("init,field", [({"dt0": 0.0}, "init.dt0"), ({"dt0": "fast"}, "init.dt0"),
                                        ({"zero_real_fraction": 1.5}, "init.zero_real_fraction"),
                                        ({"name": "tdi", "base": "s4d-real"}, "init.base")])
def test_bad_init_fields_are_named(init, field):
    from ssmbench.errors import RecipeError

    with pytest.raises(RecipeError, match=field):
        validate_recipe({"name": "x", "data": {"name": "synthetic-memory"}, "init": init})
