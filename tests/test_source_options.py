"""The options that make a recipe follow state-spaces/s4 and FreqBiasSSM: each against an independent computation.

dt_transform (softplus vs exp), n_ssm (shared (A, B) == per-channel copies with tied values and summed gradients),
tie_dropout / dropout_before_gelu (mask constant over L; the block recomputed by hand with the same RNG draws),
per-group SSM learning rates / weight decays and the weight-decay exemptions (group contents listed by hand),
and the defaults: an old recipe.yaml resolves to the old model, states every new field and still resumes.
"""


import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from ssmbench import runs
from ssmbench.contracts import ModelIO
from ssmbench.errors import RecipeError
from ssmbench.models.backbone import SequenceModel
from ssmbench.models.dropout import TiedDropout
from ssmbench.models.s4d import S4D
from ssmbench.recipe import ModelConfig, load_recipe, validate_recipe
from ssmbench.train import checkpoint
from ssmbench.train.engine import train
from ssmbench.train.optim import build_optimizer


def test_softplus_dt_matches_exp_dt_and_its_inverse():
    torch.manual_seed(0)
    exp_layer = S4D(8, d_state=8, dt_min=1e-3, dt_max=0.5).double()
    torch.manual_seed(0)
    soft = S4D(8, d_state=8, dt_min=1e-3, dt_max=0.5, dt_transform="softplus").double()
    dt = np.exp(exp_layer.log_dt.detach().numpy())
    # the same log-uniform draw, stored as softplus^-1(dt) = log(exp(dt) - 1)
    np.testing.assert_allclose(soft.log_dt.detach().numpy(), np.log(np.expm1(dt)), rtol=1e-6)
    np.testing.assert_allclose(soft.dt.detach().numpy(), dt, rtol=1e-6)
    np.testing.assert_allclose(soft.dt.detach().numpy(), np.log1p(np.exp(soft.log_dt.detach().numpy())), rtol=1e-12)
    with torch.no_grad():
        for name in ("A_re", "A_im", "B", "C", "D"):
            getattr(soft, name).copy_(getattr(exp_layer, name))
    soft.set_dt(exp_layer.dt.detach())  # the float32 draws agree to 1e-6 only; the same dt in float64
    torch.testing.assert_close(soft.kernel(64), exp_layer.kernel(64), rtol=1e-9, atol=1e-12)
    # d dt / d param: exp -> dt, softplus -> sigmoid(param) = 1 - exp(-dt)
    soft.dt.sum().backward()
    np.testing.assert_allclose(soft.log_dt.grad.numpy(), -np.expm1(-exp_layer.dt.detach().numpy()), rtol=1e-9)
    soft.set_dt(0.05, torch.tensor([2, 5]))
    np.testing.assert_allclose(soft.dt.detach().numpy()[[2, 5]], 0.05, rtol=1e-12)


def test_shared_ssm_equals_per_channel_copies_with_tied_values():
    H, S, N, L = 6, 2, 8, 40
    torch.manual_seed(1)
    shared = S4D(H, d_state=N, n_ssm=S, init="s4d-inv").double()
    assert shared.A_re.shape == (S, N // 2) and shared.B.shape == (S, N // 2, 2)
    torch.manual_seed(2)
    full = S4D(H, d_state=N, init="s4d-inv").double()
    with torch.no_grad():
        rows = [h % S for h in range(H)]  # channel h uses copy h mod n_ssm
        for name in ("A_re", "A_im", "B"):
            getattr(full, name).copy_(getattr(shared, name)[rows])
        for name in ("log_dt", "C", "D"):
            getattr(full, name).copy_(getattr(shared, name))
        full.output_linear.load_state_dict(shared.output_linear.state_dict())
    with torch.no_grad():
        shared.A_re.add_(torch.randn_like(shared.A_re) * 0.1)  # make the copies different from each other
        full.A_re.copy_(shared.A_re[rows])
    u = torch.randn(3, L, H, dtype=torch.float64)
    y_shared, y_full = shared(u), full(u)
    torch.testing.assert_close(y_shared, y_full, rtol=1e-10, atol=1e-12)
    y_shared.square().sum().backward()
    y_full.square().sum().backward()
    for name in ("A_re", "A_im", "B"):
        g_full = getattr(full, name).grad
        summed = torch.stack([g_full[[h for h in range(H) if h % S == s]].sum(0) for s in range(S)])
        torch.testing.assert_close(getattr(shared, name).grad, summed, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="n_ssm"):
        shared.set_A(torch.complex(-torch.rand(H, N // 2), torch.rand(H, N // 2)))  # rows that do not repeat


def test_tied_dropout_mask_is_constant_over_the_sequence():
    torch.manual_seed(3)
    drop = TiedDropout(0.3).train()
    y = drop(torch.ones(64, 50, 16))
    assert torch.equal(y, y[:, :1].expand_as(y))  # constant over L
    assert all(v == 0.0 or v == pytest.approx(1 / 0.7) for v in torch.unique(y).tolist())
    assert abs((y[:, 0] == 0).float().mean().item() - 0.3) < 0.05
    assert torch.equal(drop.eval()(torch.arange(6.0).view(1, 2, 3)), torch.arange(6.0).view(1, 2, 3))


@pytest.mark.parametrize("tie,before", [(False, False), (True, False), (True, True), (False, True)])
def test_s4d_block_dropout_order_against_a_hand_computation(tie, before):
    p, H = 0.25, 4
    layer = S4D(H, d_state=8, dropout=p, tie_dropout=tie, dropout_before_gelu=before).train()
    u = torch.randn(2, 30, H)

    def mask(x):  # the draw TiedDropout / nn.Dropout make: same RNG stream, same shapes
        if tie:
            return (torch.rand(x.shape[0], 1, x.shape[2]) >= p).float() / (1 - p)
        return nn.functional.dropout(torch.ones_like(x), p, training=True)

    torch.manual_seed(4)
    y = layer(u)
    torch.manual_seed(4)
    z = layer.ssm(u)
    if before:
        z = z * mask(z)
    z = nn.functional.gelu(z)
    z = z * mask(z)
    expected = nn.functional.glu(layer.output_linear(z), dim=-1)
    torch.testing.assert_close(y, expected)


def groups_by_name(opt):
    return {n: (g["lr"], g["weight_decay"]) for g in opt.param_groups for n in g["names"]}


def test_param_groups_follow_the_s4_grouping_and_per_group_ssm_values():
    cfg = ModelConfig(d_model=8, n_layers=2, norm="layer", prenorm=True,
                      ssm={"d_state": 4, "lr": {"dt": None, "A": 0.004, "B": 0.002, "C": 0.001},
                           "weight_decay": {"dt": 0.0, "A": 0.0, "B": 0.1, "C": None}})
    model = SequenceModel(cfg, "s4d-lin", ModelIO(20, "tokens", 3))
    opt = build_optimizer(model, lr=0.01, weight_decay=0.05, no_weight_decay=["bias", "norm", "embedding"])
    got = groups_by_name(opt)
    expected = {}
    for name, _ in model.named_parameters():
        leaf = name.split(".")[-1]
        if leaf == "log_dt":
            expected[name] = (0.01, 0.0)
        elif leaf in ("A_re", "A_im"):
            expected[name] = (0.004, 0.0)
        elif leaf == "B":
            expected[name] = (0.002, 0.1)
        elif leaf == "C":
            expected[name] = (0.001, 0.05)
        elif leaf == "bias" or ".norm." in name or name.startswith(("final_norm", "encoder")):
            expected[name] = (0.01, 0.0)  # biases, LayerNorm weights, the embedding
        else:  # Linear weights, D
            expected[name] = (0.01, 0.05)
    assert got == expected
    assert got["encoder.weight"] == (0.01, 0.0) and got["blocks.0.norm.norm.weight"] == (0.01, 0.0)
    assert got["blocks.0.layer.D"] == (0.01, 0.05) and got["blocks.0.layer.output_linear.weight"] == (0.01, 0.05)
    decay_all = groups_by_name(build_optimizer(model, lr=0.01, weight_decay=0.05))
    assert decay_all["encoder.weight"] == decay_all["blocks.0.layer.output_linear.bias"] == (0.01, 0.05)


def old_recipe(tmp_path):
    """A recipe as written before the source options existed (float SSM lr, no new fields)."""
    raw = {"name": "old", "data": {"name": "smnist", "permute": False, "source": "embedded", "val_fraction": 0.02},
           "model": {"d_model": 16, "n_layers": 2, "dropout": 0.1, "ssm": {"d_state": 8, "lr": 0.002}},
           "train": {"max_steps": 6, "batch_size": 32, "max_eval_batches": 1, "eval_every": 3, "threads": 1}}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_defaults_keep_the_old_model_and_the_resolved_recipe_states_every_field(tmp_path):
    r = load_recipe(old_recipe(tmp_path))
    s = r.model.ssm
    assert s.lr.model_dump() == {"dt": 0.002, "A": 0.002, "B": 0.002, "C": None}
    assert s.weight_decay.model_dump() == {"dt": 0.0, "A": 0.0, "B": 0.0, "C": None}
    assert (s.dt_transform, s.n_ssm, r.model.tie_dropout, r.model.dropout_before_gelu, r.train.no_weight_decay) == \
        ("exp", None, False, False, [])
    resolved = yaml.safe_load(r.to_yaml())
    for section, keys in (("model", ["tie_dropout", "dropout_before_gelu"]), ("train", ["no_weight_decay"])):
        assert all(k in resolved[section] for k in keys)
    assert {"dt_transform", "n_ssm", "lr", "weight_decay"} <= set(resolved["model"]["ssm"])
    assert validate_recipe(resolved) == r  # the resolved recipe reads back to itself
    # the old grouping: dt/A/B at the SSM lr with wd 0, C and everything else at the global lr and wd
    model = SequenceModel(r.model, r.init.name, ModelIO(1, "real", 10))
    opt = build_optimizer(model, r.train.lr, r.train.weight_decay, r.train.no_weight_decay)
    assert [len(g["params"]) for g in opt.param_groups] == [len(list(model.parameters())) - 8, 4 * 2]
    assert all(type(m) is nn.Dropout for m in model.modules() if "Dropout" in type(m).__name__)


def test_old_run_directory_resumes(tmp_path):
    first = train(load_recipe(old_recipe(tmp_path), ["train.max_steps=3"]), runs_root=tmp_path / "runs", quiet=True,
                  log=lambda *_: None)
    run_dir = tmp_path / "runs" / next(p.name for p in (tmp_path / "runs").iterdir())
    raw = yaml.safe_load((run_dir / runs.RECIPE).read_text())
    raw["train"]["max_steps"] = 6
    for key in ("tie_dropout", "dropout_before_gelu"):  # as an old run directory wrote it
        del raw["model"][key]
    for key in ("dt_transform", "n_ssm", "weight_decay"):
        del raw["model"]["ssm"][key]
    raw["model"]["ssm"]["lr"] = 0.002
    del raw["train"]["no_weight_decay"]
    (run_dir / runs.RECIPE).write_text(yaml.safe_dump(raw))
    (run_dir / runs.RESULTS).unlink()
    last = run_dir / "checkpoints" / "last.pt"  # an old run's checkpoint holds no recipe hash
    state = checkpoint.load(last)
    del state["recipe_sha256"]
    checkpoint.save(last, state)
    assert first["steps"] == 3
    resumed = train(resume=run_dir, quiet=True, log=lambda *_: None)
    assert resumed["status"] == "finished" and resumed["steps"] == 6


@pytest.mark.parametrize("sets,message", [
    (["model.ssm.n_ssm=3"], "does not divide d_model"),
    (["model.ssm.n_ssm=2", "init.zero_real_fraction=0.1"], "sets A per channel"),
    (["model.kind=stu", "model.tie_dropout=true"], "options of the s4d layer"),
    (["train.no_weight_decay=[bias, weights]"], "train.no_weight_decay.1"),
    (["model.ssm.lr.E=0.1"], "model.ssm.lr.E: unknown key"),
])
def test_bad_source_options_are_one_line_errors(tmp_path, sets, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(old_recipe(tmp_path), sets)


def test_report_reads_shared_ssm_parameters():
    from ssmbench.report.records import ssm_parameters

    model = SequenceModel(ModelConfig(d_model=6, n_layers=1, ssm={"d_state": 8, "n_ssm": 2}), "s4d-inv",
                          ModelIO(1, "real", 3))
    layer = model.blocks[0].layer
    got = ssm_parameters(model.state_dict())
    B = torch.view_as_complex(layer.B.detach().double())
    expected = torch.view_as_complex(layer.C.detach().double()) * B[[h % 2 for h in range(6)]]
    np.testing.assert_allclose(got["B*C"], expected.numpy().ravel())
    assert got["Re(A)"].shape == (2 * 4,)  # the shared rows, counted once
