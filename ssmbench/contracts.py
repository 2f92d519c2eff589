"""The contract between the data and the model packages, owned by neither.

A dataset adapter (`ssmbench.data`) says what its samples look like in a ModelIO; the backbone
(`ssmbench.models.backbone.SequenceModel`) builds its encoder and decoder from one. Neither package imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelIO:
    """What the data says about the model's ends (from the dataset adapter)."""

    d_input: int  # input channels for real-valued inputs, vocabulary size for tokens
    input_kind: str  # "real" | "tokens"
    n_outputs: int  # classes, or regression targets
    per_step: bool = False  # a target at every time step (no pooling)
    pair: bool = False  # x is (batch, 2, length): two documents, classified by a matching head (LRA Retrieval)
