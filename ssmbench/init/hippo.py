"""The four diagonal initializations of S4D (docs/methods.md §A "Initializations").

Each returns the eigenvalues A (and input vector B) of one SSM copy; the layer repeats them over channels.
Convention: stored imaginary parts are >= 0. The state-spaces code keeps Im <= 0 for LegS; flipping the sign
of A together with B (and C, which is drawn from a conjugation-symmetric distribution) leaves the kernel
2*Re(sum C B A^l) unchanged (docs/methods.md §A "Pitfalls").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ssmbench.models.hippo import hippo_legs, legs_normal_eig
from ssmbench.registry import INITIALIZERS


@dataclass
class DiagonalInit:
    """Eigenvalues `A` (M,) and input vector `B` (M,), complex128.

    `conjugate_pairs=True`: the M modes stand for M conjugate pairs (N = 2M real state dimensions) and the
    kernel is 2*Re(sum ...). `False`: M = N real modes, kernel Re(sum ...) with no conjugates (S4D-Real).
    """

    A: torch.Tensor
    B: torch.Tensor
    conjugate_pairs: bool = True


def _pairs(N: int) -> int:
    if N < 2 or N % 2:
        raise ValueError(f"d_state must be an even number >= 2 for complex-pair initializations, got {N}")
    return N // 2


@INITIALIZERS.register("s4d-lin")
def s4d_lin(N: int) -> DiagonalInit:
    """S4D-Lin: A_n = -1/2 + i*pi*n, n = 0..N/2-1; B = 1."""
    n = torch.arange(_pairs(N), dtype=torch.float64)
    A = torch.complex(torch.full_like(n, -0.5), math.pi * n)
    return DiagonalInit(A, torch.ones_like(A))


@INITIALIZERS.register("s4d-inv")
def s4d_inv(N: int) -> DiagonalInit:
    """S4D-Inv: A_n = -1/2 + i*(N/pi)*(N/(2n+1) - 1), N the full state size; B = 1."""
    n = torch.arange(_pairs(N), dtype=torch.float64)
    A = torch.complex(torch.full_like(n, -0.5), (N / math.pi) * (N / (2 * n + 1) - 1))
    return DiagonalInit(A, torch.ones_like(A))


@INITIALIZERS.register("s4d-legs")
def s4d_legs(N: int) -> DiagonalInit:
    """S4D-LegS: eigenvalues of the normal part of HiPPO-LegS.

    A + P P^T = -I/2 + S with S skew; eigh of (A + P P^T)(-i) gives S's eigenvalues i*mu, so A_n = -1/2 + i*mu_n.
    Keep one of each conjugate pair, B~ = V^* B with Im(B~) clipped to [-2, 2] (state-spaces `dplr.py`).
    """
    M = _pairs(N)
    _, B, _ = hippo_legs(N)
    Lambda, V = legs_normal_eig(N)
    # eigh sorts mu ascending: the first M are the Im <= 0 halves of the conjugate pairs (state-spaces keeps
    # these); store the conjugate (Im >= 0) of both A and B, which leaves the kernel unchanged.
    A_diag, V = Lambda[:M], V[:, :M]
    B_t = V.conj().T @ B.to(torch.complex128)
    B_t = torch.complex(B_t.real, B_t.imag.clamp(-2.0, 2.0))
    order = torch.argsort(-A_diag.imag)  # Im ascending after conjugation
    return DiagonalInit(A_diag.conj()[order], B_t.conj()[order])


@INITIALIZERS.register("s4d-real")
def s4d_real(N: int) -> DiagonalInit:
    """S4D-Real: N real modes A_n = -(n+1), n = 0..N-1; B = 1; kernel without conjugate pairs."""
    n = torch.arange(N, dtype=torch.float64)
    A = torch.complex(-(n + 1), torch.zeros_like(n))
    return DiagonalInit(A, torch.ones_like(A), conjugate_pairs=False)
