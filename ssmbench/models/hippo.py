"""The HiPPO-LegS matrix and the eigendecomposition of its normal part (docs/methods.md §A "Initializations", §I).

The diagonal initializations (S4D-LegS, DSS, S5) and S4's DPLR form all start from these two functions.
"""

from __future__ import annotations

import torch


def hippo_legs(N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO-LegS (A, B) and its rank-1 correction P with A + P P^T = -I/2 + skew-symmetric.

    A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k); B_n = sqrt(2n+1); P_n = sqrt(n + 1/2).
    """
    q = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)
    A = -torch.tril(q[:, None] * q[None, :], diagonal=-1) - torch.diag(torch.arange(N, dtype=torch.float64) + 1)
    P = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)
    return A, q.clone(), P


def legs_normal_eig(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Lambda, V): the normal part A + P P^T = -I/2 + S of HiPPO-LegS (N x N) as V diag(Lambda) V^*, complex128.

    S is skew-symmetric, so -i S is Hermitian: eigh gives its real eigenvalues mu (ascending) and unitary V, and
    Lambda = -1/2 + i mu. Eigenvalues come in conjugate pairs: the first N/2 have Im <= 0, the last N/2 mirror them.
    """
    A, _, P = hippo_legs(N)
    mu, V = torch.linalg.eigh((A + P[:, None] * P[None, :]).to(torch.complex128) * -1j)
    return torch.complex(torch.full_like(mu, -0.5), mu), V
