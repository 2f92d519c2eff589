"""The deep sequence model: encoder -> n_layers x [norm, sequence layer, dropout, residual] -> pool -> decoder.

The sequence layer is built by name from the LAYERS registry (`model.kind`), so S4D and STU share this file.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ssmbench.contracts import ModelIO
from ssmbench.models.dropout import sequence_dropout
from ssmbench.registry import LAYERS


class SequenceNorm(nn.Module):
    """BatchNorm1d or LayerNorm over the feature axis of (batch, length, features)."""

    def __init__(self, kind: str, d: int):
        super().__init__()
        self.kind = kind
        self.norm = {"batch": nn.BatchNorm1d(d), "layer": nn.LayerNorm(d), "none": nn.Identity()}[kind]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "batch":
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)


class ResidualBlock(nn.Module):
    """x + dropout(layer(norm(x))) (pre-norm) or norm(x + dropout(layer(x))) (post-norm)."""

    def __init__(self, layer: nn.Module, d_model: int, norm: str, prenorm: bool, dropout: float,
                 tie_dropout: bool = False):
        super().__init__()
        self.layer, self.prenorm = layer, prenorm
        self.norm = SequenceNorm(norm, d_model)
        self.dropout = sequence_dropout(dropout, tie_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x) if self.prenorm else x
        x = x + self.dropout(self.layer(z))
        return x if self.prenorm else self.norm(x)


class SequenceModel(nn.Module):
    def __init__(self, cfg, init_name: str, io: ModelIO):
        super().__init__()
        H = cfg.d_model
        self.pool = "none" if io.per_step else cfg.pool
        self.encoder = nn.Embedding(io.d_input, H) if io.input_kind == "tokens" else nn.Linear(io.d_input, H)
        build_layer = LAYERS.get(cfg.kind)
        self.blocks = nn.ModuleList(
            ResidualBlock(build_layer(cfg, init_name), H, cfg.norm, cfg.prenorm, cfg.dropout, cfg.tie_dropout)
            for _ in range(cfg.n_layers)
        )
        self.final_norm = SequenceNorm(cfg.norm, H) if cfg.prenorm else nn.Identity()
        self.pair = io.pair
        if io.pair and self.pool == "none":
            raise ValueError("a two-document (pair) task needs model.pool mean or last")
        # Pair head (LRA Retrieval): MLP on [z1, z2, z1 * z2, z1 - z2] of the two pooled encodings.
        self.decoder = (nn.Sequential(nn.Linear(4 * H, H), nn.GELU(), nn.Linear(H, io.n_outputs)) if io.pair
                        else nn.Linear(H, io.n_outputs))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder, residual blocks, final norm and pooling: (batch, length[, d_input]) -> (batch[, length], H)."""
        x = self.encoder(x)
        for block in self.blocks:
            x = block(x)
        x = self.final_norm(x)
        if self.pool == "mean":
            x = x.mean(dim=1)
        elif self.pool == "last":
            x = x[:, -1]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pair:  # both documents through the same encoder in one batch of 2B sequences
            z = self.encode(x.flatten(0, 1)).unflatten(0, (x.shape[0], 2))
            z1, z2 = z[:, 0], z[:, 1]
            return self.decoder(torch.cat([z1, z2, z1 * z2, z1 - z2], dim=-1))
        return self.decoder(self.encode(x))


@LAYERS.register("s4d")
def build_s4d(cfg, init_name: str) -> nn.Module:
    from ssmbench.models.s4d import S4D

    s = cfg.ssm
    return S4D(cfg.d_model, d_state=s.d_state, init=init_name, dropout=cfg.dropout, bidirectional=cfg.bidirectional,
               dt_min=s.dt_min, dt_max=s.dt_max, discretization=s.discretization, real_transform=s.real_transform,
               lr=s.lr.model_dump(), beta=s.beta, beta_lr=s.beta_lr, kappa=s.kappa, path=s.path,
               weight_decay=s.weight_decay.model_dump(), dt_transform=s.dt_transform, n_ssm=s.n_ssm,
               tie_dropout=cfg.tie_dropout, dropout_before_gelu=cfg.dropout_before_gelu, backend=s.backend)
