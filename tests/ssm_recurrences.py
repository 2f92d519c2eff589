"""Step-by-step recurrences of the diagonal SSM layers, the independent computations their FFT paths are held to."""

import torch


def diagonal_scan(lam: torch.Tensor, v: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """x_t = lam * x_{t-1} + v_t one step at a time (x_{-1} = 0); v (B, L, P) complex; `reverse` from the end."""
    x = torch.zeros_like(v[:, 0])
    out = torch.empty_like(v)
    steps = range(v.shape[1] - 1, -1, -1) if reverse else range(v.shape[1])
    for t in steps:
        x = lam * x + v[:, t]
        out[:, t] = x
    return out


def mimo_recurrence(u, B_bar, lam, C, D, scale=1.0):
    """y_t = scale Re(C_0 x_t [+ C_1 x'_t]) + D u_t, x_t = lam x_{t-1} + B_bar u_t (x' from the end)."""
    v = torch.einsum("ph,blh->blp", B_bar, u.to(B_bar.dtype))
    y = torch.einsum("hp,blp->blh", C[0], diagonal_scan(lam, v))
    if C.shape[0] == 2:
        y = y + torch.einsum("hp,blp->blh", C[1], diagonal_scan(lam, v, reverse=True))
    return scale * y.real + u * D


def gradcheck_parameters(m, names, u):
    """torch.autograd.gradcheck of the layer's output with respect to the input and the named parameters."""
    params = [getattr(m, n).detach().clone().requires_grad_() for n in names]
    return torch.autograd.gradcheck(lambda u, *ps: torch.func.functional_call(m, dict(zip(names, ps)), (u,)),
                                    (u, *params))
