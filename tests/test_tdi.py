"""TDI, power-spectrum matching (docs/methods.md §C): spectra, loss, F.1 init, Algorithm 1, artifacts, recipe use."""

import json
import math

import numpy as np
import pytest
import torch

from ssmbench.data import build_data
from ssmbench.errors import CheckpointError, SSMBenchError
from ssmbench.init import apply_init, ssm_layers, tdi
from ssmbench.models.backbone import SequenceModel
from ssmbench.models.kernels import discretize, vandermonde_kernel
from ssmbench.paths import DATA_ROOT_ENV
from ssmbench.recipe import validate_recipe


def random_params(H, M, seed=0):
    g = torch.Generator().manual_seed(seed)
    a_re = torch.randn(H, M, generator=g, dtype=torch.float64)
    A_im = torch.rand(H, M, generator=g, dtype=torch.float64) * 300
    C = torch.randn(H, M, generator=g, dtype=torch.complex128)
    log_dt = torch.rand(H, generator=g, dtype=torch.float64) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    return a_re, A_im, C, log_dt


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_model_spectrum_closed_form_equals_rfft_of_the_materialized_kernel(method):
    a_re, A_im, C, log_dt = random_params(3, 8)
    L = 200
    A = torch.complex(-torch.exp(a_re), A_im)
    log_A_bar, B_bar = discretize(A, torch.ones_like(A), torch.exp(log_dt), method)
    K = vandermonde_kernel((C * B_bar)[None], log_A_bar, L)[0]
    ref = torch.fft.rfft(K).abs() ** 2
    torch.testing.assert_close(tdi.model_spectrum(a_re, A_im, C, log_dt, L, method), ref, rtol=1e-9, atol=1e-12 * ref.max())


@pytest.mark.parametrize("k0", [5, 40, 100])
@pytest.mark.parametrize("dt", [1e-3, 1e-2])
def test_f1_places_a_single_mode_peak_on_its_bin(k0, dt):
    L = 256
    log_dt = torch.tensor([math.log(dt)], dtype=torch.float64)
    A_im = tdi.f1_imag(torch.tensor([k0]), log_dt, L)
    P = tdi.model_spectrum(torch.full((1, 1), math.log(0.5), dtype=torch.float64), A_im,
                           torch.ones(1, 1, dtype=torch.complex128), log_dt, L)
    assert int(P[0].argmax()) == k0


def test_cross_covariance_and_task_spectrum_against_numpy():
    g = np.random.default_rng(0)
    X, Y = g.standard_normal((50, 16, 2)), g.standard_normal((50, 3))
    batches = [(torch.from_numpy(X[i:i + 7]), torch.from_numpy(Y[i:i + 7])) for i in range(0, 50, 7)]
    sigma = tdi.cross_covariance(batches).numpy()
    for c in range(2):
        ref = np.cov(X[:, :, c].T, Y.T)[:16, 16:]
        np.testing.assert_allclose(sigma[c], ref, rtol=1e-12, atol=1e-14)
    dft = np.exp(-2j * np.pi * np.outer(np.arange(9), np.arange(16)) / 16)  # explicit one-sided DFT
    mags = np.abs(np.einsum("kl,cld->ckd", dft, sigma))
    np.testing.assert_allclose(tdi.task_spectrum(torch.from_numpy(sigma)).numpy(), mags.mean((0, 2)), rtol=1e-12)
    np.testing.assert_allclose(tdi.task_spectrum(torch.from_numpy(sigma), "squared").numpy(), (mags ** 2).mean((0, 2)), rtol=1e-12)


def test_l2_loss_is_two_minus_two_cosine():
    g = torch.Generator().manual_seed(1)
    P, T = torch.rand(4, 30, generator=g, dtype=torch.float64), torch.rand(30, generator=g, dtype=torch.float64)
    cos = (P @ T) / (P.norm(dim=1) * T.norm())
    torch.testing.assert_close(tdi.psm_loss(P, T), (2 - 2 * cos).mean())
    manual = ((P / P.sum(1, keepdim=True) - T / T.sum()) ** 2).sum(1).mean()
    torch.testing.assert_close(tdi.psm_loss(P, T, "sum"), manual)


def test_encoder_route_equals_raw_route_for_one_input_channel():
    torch.manual_seed(0)
    x, y = torch.randn(64, 32, 1), torch.randn(64, 2)
    enc = torch.nn.Linear(1, 5)
    with torch.no_grad():
        raw = tdi.task_spectrum(tdi.cross_covariance([(x, y)]))
        via = tdi.task_spectrum(tdi.cross_covariance([(enc(x), y)]))
    torch.testing.assert_close(tdi.normalize(via), tdi.normalize(raw), rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def matched():
    recipe = validate_recipe({"name": "m", "data": {"name": "synthetic-frequency", "pattern": "high", "inputs": "white",
                                                     "length": 256, "n_train": 4000, "n_test": 10},
                              "model": {"d_model": 2, "ssm": {"d_state": 32}}, "init": {"name": "tdi", "tdi": {"steps": 200}}})
    data = build_data(recipe.data)
    return tdi.compute(recipe, data, None, H=2, M=16)


def test_matching_moves_the_spectrum_to_the_planted_high_frequency(matched):
    """White X, f at bins L/2-3..L/2-1 = 125..127: the task's top bins, and after matching the model's."""
    result, meta = matched
    planted = {125, 126, 127}
    assert set(torch.topk(result.task_spectrum, 3).indices.tolist()) == planted
    assert meta["peak_bin_before"] not in planted  # channel mean at the F.1 init is dominated by the floor bins
    assert set(torch.topk(result.model_spectrum_after, 3).indices.tolist()) == planted
    assert meta["loss_before"] / meta["loss_after"] > 10
    assert meta["samples"] == 3600 and meta["route"] == "raw" and meta["L"] == 256


def test_artifact_round_trips(matched, tmp_path):
    result, meta = matched
    path = tmp_path / "a" / "x.pt"
    written = tdi.save_artifact(path, result, meta)
    assert all(p.is_file() for p in written) and written[2].read_bytes()[:4] == b"\x89PNG"
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"A", "C", "log_dt"}
    tensors, meta2 = tdi.load_artifact(path)
    assert torch.equal(tensors["A"], result.A) and torch.equal(tensors["C"], result.C)
    assert torch.equal(tensors["log_dt"], result.log_dt)
    assert meta2 == json.loads(json.dumps(meta))
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable TDI artifact"):
        tdi.load_artifact(path)


def build(recipe, data):
    torch.manual_seed(recipe.seed)
    return SequenceModel(recipe.model, recipe.init.name, data.io)


def test_recipe_with_artifact_changes_only_the_first_layer(matched, tmp_path, monkeypatch):
    result, meta = matched
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))  # init.artifact obeys the containment rule
    path = tmp_path / "m.pt"
    tdi.save_artifact(path, result, meta)
    recipe = validate_recipe({"name": "r", "data": {"name": "synthetic-memory", "length": 32, "n_train": 20, "n_test": 5},
                              "model": {"d_model": 2, "n_layers": 3, "ssm": {"d_state": 32}},
                              "init": {"name": "tdi", "artifact": str(path)}})
    data = build_data(recipe.data)
    model, plain = build(recipe, data), build(recipe, data)
    facts = apply_init(model, recipe.init, {"data": data, "recipe": recipe, "log": lambda *_: None})
    assert facts["tdi"]["artifact"] == str(path) and facts["tdi"]["loss_after"] == meta["loss_after"]
    assert len(facts["tdi"]["model_spectrum_after"]) == 129
    first = ssm_layers(model)[0]
    torch.testing.assert_close(first.A.detach(), result.A.to(torch.complex64))
    torch.testing.assert_close(torch.view_as_complex(first.C)[0].detach(), result.C.to(torch.complex64))
    sm, sp = model.state_dict(), plain.state_dict()
    changed = {k for k in sm if not torch.equal(sm[k], sp[k])}
    assert changed == {"blocks.0.layer.log_dt", "blocks.0.layer.A_re", "blocks.0.layer.A_im", "blocks.0.layer.C"}

    wrong = recipe.model_copy(update={"model": recipe.model.model_copy(update={"d_model": 3})})
    with pytest.raises(SSMBenchError, match="H = 2 channels"):
        apply_init(build(wrong, data), wrong.init, {"data": data, "recipe": wrong, "log": lambda *_: None})


def test_missing_artifact_is_computed_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    path = tmp_path / "cache" / "t.pt"
    recipe = validate_recipe({"name": "r", "data": {"name": "synthetic-memory", "length": 32, "n_train": 50, "n_test": 5},
                              "model": {"d_model": 2, "n_layers": 2, "ssm": {"d_state": 8}},
                              "init": {"name": "tdi", "base": "s4d-inv", "artifact": str(path), "tdi": {"steps": 5}}})
    data = build_data(recipe.data)
    logs = []
    model = build(recipe, data)
    apply_init(model, recipe.init, {"data": data, "recipe": recipe, "log": logs.append})
    assert path.is_file() and path.with_suffix(".json").is_file() and "not found" in logs[0]
    # the other layers got the base init
    from ssmbench.init.hippo import s4d_inv
    torch.testing.assert_close(ssm_layers(model)[1].A.detach(), s4d_inv(8).A.to(torch.complex64).expand(2, 4))
    again = build(recipe, data)
    apply_init(again, recipe.init, {"data": data, "recipe": recipe, "log": logs.append})
    assert "loaded" in logs[-1]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_init_tdi_command_writes_the_artifact(tmp_path):
    from io import StringIO

    from rich.console import Console

    from ssmbench.init_tdi import init_tdi

    out = StringIO()
    path = tmp_path / "art.pt"
    meta = init_tdi("synthetic-memory", None, ["data.length=32", "data.n_train=40", "data.n_test=4"], 30, 4, 2, 3,
                    path, Console(file=out, width=200))
    assert meta["samples"] == 30 and meta["H"] == 2 and meta["M"] == 2 and meta["steps"] == 3
    assert path.is_file() and path.with_suffix(".png").is_file()
    assert f"loss {meta['loss_before']:.4g} -> {meta['loss_after']:.4g}" in out.getvalue()
    with pytest.raises(SSMBenchError, match="no data given; name a dataset adapter with --dataset NAME"):
        init_tdi(None, None, [], None, None, None, None, None, Console(file=out))
