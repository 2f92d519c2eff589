"""`synthetic-lds`: input/output pairs of a random marginally stable linear dynamical system (STU paper §3.1, App. C.1).

    x_t = A x_{t-1} + B u_t,   y_t = C x_t + D u_t,   x_0 = 0,   t = 1..L

B (d_state x d_in) and C (d_out x d_state) have iid N(0, 1) entries, D is diagonal with iid N(0, 1) entries
(d_out = d_in), and A is diagonal with A_ii = rho * s_i, s_i a random sign: eigenvalues at +-rho, so with
rho = 0.9999 the system forgets on a time scale of 10^4 steps, far beyond L. The inputs u_t are iid N(0, I).
The task is per-step regression of y from u with the l2 loss. The seed text lost the sizes; the defaults
(d_in = d_out = 3, d_state = 4, rho = 0.9999) are those of the published paper's App. C.1 as best recovered,
and every one is an option.

The system and the sequences are a pure function of `system_seed`. With `standardize: true` the targets are
divided by one scalar, the root mean square of the training targets (kept in the run record's data facts), so
losses are O(1) and comparable across sizes.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import TensorDataset

from ssmbench.contracts import ModelIO
from ssmbench.data.base import Adapter, DataBundle, split_indices
from ssmbench.registry import DATASETS


class LDSOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq_len: int = Field(256, ge=2, le=1_000_000, description="sequence length L")
    n_train: int = Field(2000, ge=2, le=10_000_000, description="training sequences (validation is carved from them by data.val_fraction)")
    n_test: int = Field(200, ge=1, le=10_000_000, description="test sequences")
    d_in: int = Field(3, ge=1, le=1024, description="input (and output) dimension")
    d_state: int = Field(4, ge=1, le=4096, description="hidden state dimension")
    rho: float = Field(0.9999, gt=0.0, le=1.0, description="|eigenvalue| of the diagonal A (each with a random sign)")
    system_seed: int = Field(0, ge=0, lt=2**32, description="seed of the system matrices and of the input sequences")
    standardize: bool = Field(True, description="divide the targets by the RMS of the training targets")


class LDS:
    """The system matrices (float64): A (d_state,) diagonal, B (d_state, d_in), C (d_out, d_state), D (d_out,) diagonal."""

    def __init__(self, d_in: int, d_state: int, rho: float, generator: torch.Generator):
        g = generator
        sign = torch.randint(0, 2, (d_state,), generator=g, dtype=torch.float64) * 2 - 1
        self.A = rho * sign
        self.B = torch.randn(d_state, d_in, generator=g, dtype=torch.float64)
        self.C = torch.randn(d_in, d_state, generator=g, dtype=torch.float64)
        self.D = torch.randn(d_in, generator=g, dtype=torch.float64)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """Outputs y (S, L, d_out) for inputs u (S, L, d_in) by the recurrence, in float64."""
        Bu = u @ self.B.T  # (S, L, d_state)
        x = torch.zeros_like(Bu[:, 0])
        states = []
        for t in range(u.shape[1]):
            x = self.A * x + Bu[:, t]
            states.append(x)
        return torch.stack(states, dim=1) @ self.C.T + u * self.D


@DATASETS.register("synthetic-lds")
class SyntheticLDS(Adapter):
    Options = LDSOptions
    description = "marginally stable random LDS (STU paper §3.1): per-step regression of y from u"

    def build(self, cfg, options: LDSOptions) -> DataBundle:
        o = options
        g = torch.Generator().manual_seed(o.system_seed)
        system = LDS(o.d_in, o.d_state, o.rho, g)
        u = torch.randn(o.n_train + o.n_test, o.seq_len, o.d_in, generator=g, dtype=torch.float64)
        y = system(u)
        u_train, y_train, u_test, y_test = u[:o.n_train], y[:o.n_train], u[o.n_train:], y[o.n_train:]
        scale = y_train.pow(2).mean().sqrt().item() if o.standardize else 1.0
        keep, held = split_indices(o.n_train, cfg.val_fraction, cfg.split_seed)

        def pair(inputs: torch.Tensor, targets: torch.Tensor) -> TensorDataset:
            return TensorDataset(inputs.float(), (targets / scale).float())

        return DataBundle(
            train=pair(u_train[keep], y_train[keep]), val=pair(u_train[held], y_train[held]), test=pair(u_test, y_test),
            io=ModelIO(d_input=o.d_in, input_kind="real", n_outputs=o.d_in, per_step=True),
            seq_len=o.seq_len, task="regression", source="synthetic",
            provenance=(f"random LDS (STU paper §3.1): d_in = d_out = {o.d_in}, d_state = {o.d_state}, A = diag(+-{o.rho}), "
                        f"u ~ N(0, I), system_seed {o.system_seed}" + (f"; targets / {scale:.4g}" if o.standardize else "")),
            facts={"lds": {"rho": o.rho, "eigenvalues": system.A.tolist(), "target_scale": scale}},
        )
