"""The fast S4D path vs the straightforward path vs independent computations, in float64 (docs/methods.md §A, §B, §F).

- blocked Vandermonde kernel vs powers by repeated multiplication, and vs the materialized Vandermonde (values and
  gradients);
- FFT convolution at the chosen FFT size vs a direct double loop, causal and bidirectional;
- the whole layer: fast path vs direct path (outputs and every gradient) and vs the recurrence;
- the overflow guard for Re(A) > 0.
"""

import math

import pytest
import torch

from ssmbench.models.kernels import (bidirectional_kernel, blocked_vandermonde_kernel, discretize, fft_conv,
                                     fft_conv_direct, fft_size, limit_growth, vandermonde_kernel)
from ssmbench.models.s4d import S4D


def random_modes(H=3, M=5, c=1, seed=0, max_dt=0.5):
    g = torch.Generator().manual_seed(seed)
    A = torch.complex(-torch.rand(H, M, generator=g, dtype=torch.float64),
                      4 * torch.randn(H, M, generator=g, dtype=torch.float64))
    B = torch.randn(H, M, generator=g, dtype=torch.complex128)
    C = torch.randn(c, H, M, generator=g, dtype=torch.complex128)
    dt = torch.rand(H, generator=g, dtype=torch.float64) * max_dt
    log_A_bar, B_bar = discretize(A, B, dt, "zoh")
    return C * B_bar, log_A_bar


def kernel_by_powers(W, log_A_bar, L, conjugate_pairs=True):
    """K_l = s Re sum_n W_n A_bar_n^l, A_bar^l by repeated multiplication (independent of exp(l log A_bar))."""
    A_bar = torch.exp(log_A_bar)
    power = torch.ones_like(A_bar)
    K = []
    for _ in range(L):
        K.append((W * power).sum(-1).real)
        power = power * A_bar
    K = torch.stack(K, dim=-1)
    return 2 * K if conjugate_pairs else K


@pytest.mark.parametrize("L", [1, 2, 7, 64, 97, 300])
@pytest.mark.parametrize("conjugate_pairs", [True, False])
def test_blocked_kernel_equals_powers(L, conjugate_pairs):
    W, log_A_bar = random_modes(c=2)
    K = blocked_vandermonde_kernel(W, log_A_bar, L, conjugate_pairs)
    assert K.shape == (2, 3, L)
    torch.testing.assert_close(K, kernel_by_powers(W, log_A_bar, L, conjugate_pairs), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("block", [None, 1, 5, 300])
def test_blocked_kernel_equals_vandermonde_values_and_gradients(block):
    W, log_A_bar = random_modes(H=4, M=6, c=2, seed=1)
    L = 123
    G = torch.randn(2, 4, L, dtype=torch.float64)
    results = []
    for fn in (vandermonde_kernel, lambda *a: blocked_vandermonde_kernel(*a, block=block)):
        w, x = W.clone().requires_grad_(), log_A_bar.clone().requires_grad_()
        K = fn(w, x, L)
        (K * G).sum().backward()
        results.append((K.detach(), w.grad, x.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_blocked_kernel_saves_no_length_sized_complex_tensor():
    """Autograd keeps O(H M sqrt L) numbers for the blocked kernel, against H M L for the materialized one."""
    W, log_A_bar = random_modes(H=8, M=16, seed=2)
    L = 4096
    for fn, bound in ((blocked_vandermonde_kernel, 8 * 16 * 2 * 2 * 64), (vandermonde_kernel, None)):
        saved = []
        w, x = W.clone().requires_grad_(), log_A_bar.clone().requires_grad_()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            fn(w, x, L)
        if bound is None:
            assert max(saved) >= 8 * 16 * L  # the straightforward path does keep the Vandermonde matrix
        else:
            assert max(saved) <= bound, max(saved)


def test_fft_size_is_minimal_7_smooth_at_least_2L():
    def smooth(n):
        for p in (2, 3, 5, 7):
            while n % p == 0:
                n //= p
        return n == 1

    for L in range(1, 400):
        n = fft_size(L)
        assert n >= 2 * L and smooth(n) and not any(smooth(m) for m in range(2 * L, n))
    assert [fft_size(L) for L in (784, 1024, 4096, 16384, 16000)] == [1568, 2048, 8192, 32768, 32000]
    assert fft_size(37) == 75  # 74 = 2 * 37 is not 7-smooth


def direct_convolution(u, K_fwd, K_bwd=None):
    """y_t = sum_{j<=t} K_fwd[j] u_{t-j} (+ sum_{j>=1} K_bwd[j-1] u_{t+j}); u (B, L, H), K (H, L); a double loop."""
    Bsz, L, H = u.shape
    y = torch.zeros_like(u)
    for t in range(L):
        for s in range(L):
            if s <= t:
                y[:, t] += K_fwd[:, t - s] * u[:, s]
            elif K_bwd is not None:
                y[:, t] += K_bwd[:, s - t - 1] * u[:, s]
    return y


@pytest.mark.parametrize("L", [16, 37])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fft_conv_equals_direct_convolution(L, bidirectional):
    torch.manual_seed(3)
    H = 3
    u = torch.randn(2, L, H, dtype=torch.float64)
    k = torch.randn(2, H, L, dtype=torch.float64)
    n = fft_size(L)
    kk = bidirectional_kernel(k, L, n) if bidirectional else k[0]
    expected = direct_convolution(u, k[0], k[1] if bidirectional else None)
    y = fft_conv(u, torch.fft.rfft(kk, n=n), n)
    assert y.shape == u.shape and y.dtype == torch.float64
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    kk2 = bidirectional_kernel(k, L) if bidirectional else k[0]
    y2 = fft_conv_direct(u, torch.fft.rfft(kk2, n=2 * L), 2 * L)
    torch.testing.assert_close(y2, expected, rtol=1e-12, atol=1e-12)


def layer_pair(seed=0, H=4, N=16, **kw):
    """Two float64 S4D layers with identical (generic, non-init) parameters: fast path and direct path."""
    torch.manual_seed(seed)
    fast = S4D(H, d_state=N, path="fast", **kw).double()
    with torch.no_grad():
        fast.log_dt.copy_(torch.empty(H).uniform_(math.log(1e-2), math.log(0.5)))
        fast.A_im.add_(torch.randn_like(fast.A_im))
        fast.A_re.add_(0.3 * torch.randn_like(fast.A_re))
        fast.B.copy_(torch.randn_like(fast.B))
        if fast.beta is not None:
            fast.beta.copy_(torch.randn_like(fast.beta))
    direct = S4D(H, d_state=N, path="direct", **kw).double()
    direct.load_state_dict(fast.state_dict())
    return fast, direct


CASES = [
    dict(init="s4d-lin"),
    dict(init="s4d-inv", discretization="bilinear"),
    dict(init="s4d-legs"),
    dict(init="s4d-real"),
    dict(init="s4d-lin", bidirectional=True),
    dict(init="s4d-lin", beta=0.5),
    dict(init="s4d-lin", beta=0.5, kappa=100.0, bidirectional=True),
]


# L = 37 makes the fast path's FFT size 75, not 2L = 74. The Sobolev filter is sampled on the k/n_fft grid, so the
# beta cases are compared at L = 32, where both paths use n_fft = 2L.
PAIRS = [(kw, L) for kw in CASES for L in ([32] if "beta" in kw else [32, 37])]


def case_id(v) -> str:
    return "-".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else f"L={v}"


@pytest.mark.parametrize("kw,L", PAIRS, ids=case_id)
def test_fast_path_equals_direct_path_outputs_and_gradients(kw, L):
    fast, direct = layer_pair(**kw)
    u = torch.randn(3, L, 4, dtype=torch.float64)
    g = torch.randn(3, L, 4, dtype=torch.float64)
    outs = []
    for layer in (fast, direct):
        x = u.clone().requires_grad_()
        y = layer(x)
        (y * g).sum().backward()
        outs.append({"y": y.detach(), "u.grad": x.grad, **{n: p.grad for n, p in layer.named_parameters()}})
    assert outs[0].keys() == outs[1].keys()
    for name in outs[0]:
        torch.testing.assert_close(outs[0][name], outs[1][name], rtol=1e-9, atol=1e-10, msg=name)


def recurrence(layer: S4D, u: torch.Tensor) -> torch.Tensor:
    """x_k = A_bar x_{k-1} + B_bar u_k, y_k = s Re(C x_k) + D u_k in complex128, step by step (ZOH)."""
    with torch.no_grad():
        dt = torch.exp(layer.log_dt.double())[:, None]
        A = layer.A.to(torch.complex128)
        A_bar = torch.exp(dt * A)
        B_bar = (A_bar - 1) / A * torch.view_as_complex(layer.B.double())
        C = torch.view_as_complex(layer.C.double())[0]
        s = 2.0 if layer.conjugate_pairs else 1.0
        x = torch.zeros(u.shape[0], u.shape[2], A.shape[1], dtype=torch.complex128)
        ys = []
        for k in range(u.shape[1]):
            x = A_bar * x + B_bar * u[:, k, :, None]
            ys.append(s * (C * x).sum(-1).real + layer.D.double() * u[:, k])
        return torch.stack(ys, dim=1)


@pytest.mark.parametrize("init", ["s4d-lin", "s4d-legs", "s4d-real"])
def test_fast_path_equals_recurrence_float64(init):
    fast, _ = layer_pair(init=init)
    u = torch.randn(2, 37, 4, dtype=torch.float64)
    with torch.no_grad():
        y = fast.ssm(u)
    torch.testing.assert_close(y, recurrence(fast, u), rtol=1e-10, atol=1e-10)


def test_fast_path_float32_close_to_float64():
    """The production precision: float32 fast path within 1e-5 (relative to max |y|) of the float64 recurrence."""
    fast, _ = layer_pair(init="s4d-lin")
    u = torch.randn(2, 200, 4, dtype=torch.float64)
    with torch.no_grad():
        y32 = fast.float().ssm(u.float()).double()
        y64 = recurrence(fast, u)
    assert ((y32 - y64).abs().max() / y64.abs().max()) < 1e-5


def test_limit_growth_clamps_only_unstable_modes_and_passes_gradient():
    L = 100
    x = torch.complex(torch.tensor([-0.3, 0.0, 0.05, 2.0], dtype=torch.float64),
                      torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)).requires_grad_()
    y = limit_growth(x, L, max_log_growth=10.0)
    assert torch.equal(y.real.detach(), torch.tensor([-0.3, 0.0, 0.05, 0.1], dtype=torch.float64))
    assert torch.equal(y.imag.detach(), x.imag.detach())
    y.real.sum().backward()  # straight-through: d Re(y) / d Re(x) = 1 for every mode, clamped or not
    assert torch.equal(x.grad.real, torch.ones(4, dtype=torch.float64))


def test_unstable_channel_stays_finite_in_float32():
    """A raw real part (zero-real-part init) pushed to Re(A) = +5: without the guard exp(dt Re(A) L) overflows."""
    torch.manual_seed(4)
    H, L = 4, 4096
    layer = S4D(H, d_state=8)
    with torch.no_grad():
        layer.linear_real[1] = True
        layer.A_re[1] = -5.0  # Re(A) = -A_re = +5 on channel 1
        layer.log_dt.fill_(math.log(0.1))
        dt = torch.exp(layer.log_dt)
        unguarded, _ = discretize(layer.A, torch.view_as_complex(layer.B), dt, "zoh")
        assert not torch.isfinite(torch.exp(unguarded[1].real * (L - 1))).all()  # it would overflow
    u = torch.randn(2, L, H, requires_grad=True)
    y = layer(u)
    y.square().mean().backward()
    assert torch.isfinite(y).all()
    for name, p in layer.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    with torch.no_grad():  # |K_l| <= s sum_n |W_n| e^{10}: the bound the guard promises
        log_A_bar, W = layer.discrete(L)
        K = layer.kernel(L)[0]
        bound = 2 * W[0].abs().sum(-1) * math.exp(10.0)
        assert (K.abs().amax(-1) <= bound * (1 + 1e-5)).all()
        assert K[1].abs().max() > 1e3  # channel 1 does grow, to the guard's limit
        # stable channels are untouched by the guard: their kernel equals the unguarded Vandermonde kernel
        K_ref = vandermonde_kernel(W[:, [0, 2, 3]], unguarded[[0, 2, 3]], L)[0]
        torch.testing.assert_close(K[[0, 2, 3]], K_ref, rtol=1e-4, atol=1e-4)


def test_recipe_selects_the_path():
    """`model.ssm.path` reaches every S4D layer of the built model."""
    from ssmbench.contracts import ModelIO
    from ssmbench.models.backbone import SequenceModel
    from ssmbench.recipe import ModelConfig

    for path in ("fast", "direct"):
        cfg = ModelConfig(d_model=8, n_layers=2, ssm={"d_state": 4, "path": path})
        model = SequenceModel(cfg, "s4d-lin", ModelIO(d_input=1, input_kind="real", n_outputs=2))
        assert [m.path for m in model.modules() if isinstance(m, S4D)] == [path, path]


@pytest.mark.parametrize("n_extra", [0, 1])  # even and odd FFT sizes (with and without a Nyquist bin)
def test_fft_conv_gradcheck(n_extra):
    torch.manual_seed(5)
    L, n = 6, 12 + n_extra
    u = torch.randn(2, L, 3, dtype=torch.float64, requires_grad=True)
    k_f = torch.fft.rfft(torch.randn(3, L, dtype=torch.float64), n=n).requires_grad_()
    assert torch.autograd.gradcheck(lambda u, k: fft_conv(u, k, n), (u, k_f))


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("path", ["fast", "direct"])
def test_long_undamped_lags_float32_close_to_float64(path, discretization):
    """Re(A) = 0 (zero-real init), dt = 0.1, L = 16384: the phase l dt Im(A) reaches ~1e5 rad, where float32
    rounding of dt, dt Im(A) or l dt Im(A) is ~1e-2 rad (K then off by ~5e-3). The float32 kernel is computed from
    a float64 log A_bar with its phases reduced mod 2 pi before the cast (`kernels.powers`)."""
    torch.manual_seed(0)
    layer = S4D(4, d_state=64, path=path, discretization=discretization, backend="torch")
    with torch.no_grad():
        layer.linear_real.fill_(True)
        layer.A_re.zero_()
        layer.set_dt(0.1)
    L = 16384
    with torch.no_grad():
        k32 = layer.kernel(L).double()
        k64 = layer.double().kernel(L)
    assert ((k32 - k64).abs().max() / k64.abs().max()) < 1e-5
