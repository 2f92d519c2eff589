"""The synthetic adapters: synthetic-memory (Liu & Li) and synthetic-frequency (TDI App. D.2)."""

import numpy as np
import pytest
import torch

from ssmbench.data import build_data
from ssmbench.data.synthetic import planted_filter
from ssmbench.errors import RecipeError
from ssmbench.init import tdi
from ssmbench.recipe import validate_recipe


def bundle(**data):
    return build_data(validate_recipe({"name": "s", "data": data}).data)


def stack(ds):
    xs, ys = zip(*[ds[i] for i in range(len(ds))])
    return torch.stack(xs), torch.stack(ys)


def test_memory_task_target_is_first_plus_last_input():
    b = bundle(name="synthetic-memory", length=40, n_train=100, n_test=30, seed=1)
    assert b.task == "regression" and b.source == "synthetic" and b.seq_len == 40
    assert b.sizes() == {"train": 90, "val": 10, "test": 30}
    assert (b.io.d_input, b.io.input_kind, b.io.n_outputs) == (1, "real", 1)
    for split in (b.train, b.val, b.test):
        x, y = stack(split)
        assert x.shape[1:] == (40, 1) and y.shape[1:] == (1,)
        torch.testing.assert_close(y[:, 0], x[:, 0, 0] + x[:, -1, 0], rtol=0, atol=0)
    x, _ = stack(b.train)
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05


def test_memory_task_is_seeded():
    a, b, c = (stack(bundle(name="synthetic-memory", length=16, n_train=20, n_test=5, seed=s).test)[0] for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("pattern,L,bins", [("low", 784, [1, 2, 3]), ("high", 784, [389, 390, 391]), ("high", 256, [125, 126, 127])])
def test_planted_filter_has_unit_norm_and_only_the_planted_bins(pattern, L, bins):
    f = planted_filter(L, pattern)
    assert np.linalg.norm(f) == pytest.approx(1.0)
    spectrum = np.abs(np.fft.rfft(f))
    assert sorted(np.flatnonzero(spectrum > 1e-9 * spectrum.max()).tolist()) == bins


def test_frequency_task_on_mnist():
    b = bundle(name="synthetic-frequency", pattern="high", noise=0.0)
    assert b.seq_len == 784 and b.task == "regression" and b.sizes() == {"train": 9000, "val": 1000, "test": 2000}
    x, y = stack(b.train)
    full_x = torch.cat([x, stack(b.val)[0]])
    assert full_x.mean(0).abs().max() < 1e-5  # mean-centered with the training mean
    f = torch.from_numpy(planted_filter(784, "high")).float()
    torch.testing.assert_close(y[:, 0], x[:, :, 0] @ f, rtol=1e-4, atol=1e-4)
    # MNIST's covariance colours the cross spectrum (row period 28 gives bins 28, 56, ...): with all 9000
    # training images its peak is within 3 bins of the planted 390
    P = tdi.task_spectrum(tdi.cross_covariance([(x, y)]))
    assert abs(int(P.argmax()) - 390) <= 3


def test_frequency_task_white_inputs_noise_level():
    b = bundle(name="synthetic-frequency", pattern="low", inputs="white", length=64, n_train=3000, n_test=10, noise=0.5)
    x, y = stack(b.train)
    resid = y[:, 0] - x[:, :, 0] @ torch.from_numpy(planted_filter(64, "low")).float()
    assert abs(float(resid.std()) - 0.5) < 0.03
    P = tdi.task_spectrum(tdi.cross_covariance([(x, y)]))
    assert set(torch.topk(P, 3).indices.tolist()) == {1, 2, 3}


def test_frequency_options_are_validated():
    with pytest.raises(RecipeError, match="data.pattern"):
        validate_recipe({"name": "s", "data": {"name": "synthetic-frequency"}})
    with pytest.raises(RecipeError, match="data.noise"):
        validate_recipe({"name": "s", "data": {"name": "synthetic-frequency", "pattern": "low", "noise": -1}})
