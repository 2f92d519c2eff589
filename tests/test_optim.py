"""Optimizer groups: SSM parameters (dt, A, B, beta) get their own lr and zero weight decay; the rest the base lr/wd."""

import math

import torch

from ssmbench.contracts import ModelIO
from ssmbench.models.backbone import SequenceModel
from ssmbench.recipe import ModelConfig, SSMConfig
from ssmbench.train.optim import build_optimizer, cosine_with_warmup


def test_param_groups():
    cfg = ModelConfig(d_model=8, n_layers=2, ssm=SSMConfig(d_state=4, lr=1e-3, beta=0.0, beta_lr=0.02))
    model = SequenceModel(cfg, "s4d-lin", ModelIO(1, "real", 3))
    opt = build_optimizer(model, lr=0.01, weight_decay=0.05)
    by_name = {n: (g["lr"], g["weight_decay"]) for g in opt.param_groups for n in g["names"]}
    for name, (lr, wd) in by_name.items():
        leaf = name.split(".")[-1]
        if leaf in ("log_dt", "A_re", "A_im", "B"):
            assert (lr, wd) == (1e-3, 0.0), name
        elif leaf == "beta":
            assert (lr, wd) == (0.02, 0.0), name
        else:
            assert (lr, wd) == (0.01, 0.05), name
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert any(n.endswith("layer.C") for n in by_name) and any(n.endswith("layer.D") for n in by_name)


def test_cosine_with_warmup_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = cosine_with_warmup(opt, warmup_steps=4, total_steps=14)
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert abs(lrs[9] - 0.5 * (1 + math.cos(math.pi * 5 / 10))) < 1e-12
    assert lrs[-1] < lrs[5]
