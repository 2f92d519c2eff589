"""STU and AR-STU layers, the synthetic-lds adapter and the STU recipes (docs/methods.md §E)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssmbench.errors import RecipeError, SSMBenchError
from ssmbench.models.hankel import spectral_filters
from ssmbench.models import stu as stu_module
from ssmbench.models.stu import (ARSTU, STU, OutputAutoregression, SpectralMix, ar_scan, chunk_length, chunk_transition,
                                 lag2_cumsum)
from ssmbench.recipe import load_recipe, validate_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def randomize(layer: STU, seed: int = 0, scale: float = 0.3) -> STU:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (layer.M_u, layer.M_phi_plus, layer.M_phi_minus, layer.m_plus, layer.m_minus):
            if p is not None:
                p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


def direct_stu(layer: STU, u: torch.Tensor, y_term: str | None = None) -> torch.Tensor:
    """Eq. 4 term by term in O(L^2): X+-_{t,k} = sum_i (+-1)^i phi_k(i) u_{t-i}, then the y_{t-2} recursion
    (`y_term` "fixed") or none ("none"; None: the layer's own `y_term`).

    0-indexed time t = 0..L-1 (the paper's t - 1); u and y are 0 before the start.
    """
    B, L, H = u.shape
    y_term = y_term or layer.y_term
    sigma, phi = spectral_filters(L, layer.k, layer.hankel)
    scale = sigma ** 0.25
    X = {1: torch.zeros(B, L, layer.k, H, dtype=u.dtype), -1: torch.zeros(B, L, layer.k, H, dtype=u.dtype)}
    for t in range(L):
        for i in range(t + 1):
            for sign in (1, -1):
                X[sign][:, t] += (sign ** i) * phi[i][:, None] * u[:, t - i][:, None, :]
    y = torch.zeros(B, L, H, dtype=u.dtype)
    for t in range(L):
        acc = y[:, t - 2].clone() if t >= 2 and y_term == "fixed" else torch.zeros(B, H, dtype=u.dtype)
        for i in range(layer.k_u):  # M^u_{i+1} u_{t-i}
            if t - i >= 0:
                acc += u[:, t - i] @ layer.M_u[i].T
        if t >= 2:
            for k in range(layer.k):
                acc += scale[k] * X[1][:, t - 2, k] @ layer.M_phi_plus[k].T
                if layer.M_phi_minus is not None:
                    acc += scale[k] * X[-1][:, t - 2, k] @ layer.M_phi_minus[k].T
        y[:, t] = acc
    return y


@pytest.mark.parametrize("y_term", ["none", "fixed"])
@pytest.mark.parametrize("hankel", ["z", "l"])
@pytest.mark.parametrize("L", [23, 24])
def test_fft_path_equals_direct_sum(hankel, L, y_term):
    layer = randomize(STU(3, k=5, k_u=3, hankel=hankel, y_term=y_term).double())
    u = torch.randn(2, L, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        expected = direct_stu(layer, u, y_term)
        assert torch.allclose(layer.stu(u), expected, rtol=1e-10, atol=1e-11)
        other = direct_stu(layer, u, "fixed" if y_term == "none" else "none")
        assert (layer.stu(u) - other).abs().max() > 0.1  # the two forms differ: the test tells them apart


def test_default_stu_is_the_official_codes():
    """No fixed y term, M^phi = 0, M^u ~ N(0, 1) truncated to [-2, 2] times 1/sqrt(H) (google-deepmind/spectral_ssm
    `get_random_real_matrix`): mean 0, std 0.8796/sqrt(H) (the truncated normal's), |M^u| <= 2/sqrt(H)."""
    H = 64
    torch.manual_seed(0)
    layer = STU(H, k=6)
    assert layer.y_term == "none" and not layer.M_phi_plus.any() and not layer.M_phi_minus.any()
    m = layer.M_u.detach().double() * H ** 0.5
    assert m.abs().max() <= 2.0 and m.abs().max() > 1.9
    assert m.mean().abs() < 0.02 and m.std().item() == pytest.approx(0.8796, abs=0.01)
    assert not STU(H, k=6, m_u_init="zero").M_u.any()
    layer.double()
    u = torch.randn(1, 12, H, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(layer.stu(u), direct_stu(layer, u, "none"), atol=1e-10)
        assert layer.stu(u).abs().max() > 0.5  # M^u alone already maps u through
    ar = ARSTU(H, k=6)
    assert not ar.M_y.any() and ar.M_y._optim == {"lr": 1e-3, "weight_decay": 0.0}
    with pytest.raises(ValueError, match="unknown STU y term 'learned'"):
        STU(4, k=6, y_term="learned")


def dense_spectral(layer: STU, u: torch.Tensor) -> torch.Tensor:
    """The spectral part with the whole transfer matrix W (F, H, H) materialized, under autograd."""
    B, L, H = u.shape
    taps_f = torch.fft.rfft(layer.filters(L).to(u.dtype), n=2 * L).T  # (F, R)
    W = torch.einsum("fr,roi->fio", taps_f, layer.mixing().to(taps_f.dtype))  # sum_r taps_f(f, r) M_r^T
    y_f = torch.einsum("bfi,fio->bfo", torch.fft.rfft(u, n=2 * L, dim=1), W)
    return torch.fft.irfft(y_f, n=2 * L, dim=1)[:, :L]


@pytest.mark.parametrize("hankel,L,block_freqs", [("z", 23, 1), ("z", 24, 5), ("l", 23, 7), ("z", 24, 1000)])
def test_blocked_spectral_mix_equals_the_dense_transfer_matrix(hankel, L, block_freqs, monkeypatch):
    """Output and gradients (input and every M) of `SpectralMix` in blocks of `block_freqs` frequencies vs autograd
    through the dense W."""
    H = 3
    monkeypatch.setattr(stu_module, "MIX_BLOCK_BYTES", block_freqs * H * H * 16)  # complex128
    layer = randomize(STU(H, k=5, k_u=3, hankel=hankel).double())
    g = torch.Generator().manual_seed(2)
    u = torch.randn(2, L, H, generator=g, dtype=torch.float64, requires_grad=True)
    cotangent = torch.randn(2, L, H, generator=g, dtype=torch.float64)
    results = []
    for spectral in (layer.spectral, lambda x: dense_spectral(layer, x)):
        layer.zero_grad(set_to_none=True)
        u.grad = None
        y = spectral(u)
        y.backward(cotangent)
        results.append([y.detach(), u.grad] + [p.grad for p in (layer.M_u, layer.M_phi_plus, layer.M_phi_minus) if p is not None])
    for fast, dense in zip(*results):
        assert torch.allclose(fast, dense, rtol=1e-10, atol=1e-12)


def test_spectral_mix_gradient():
    g = torch.Generator().manual_seed(3)
    u_f = torch.randn(7, 2, 3, generator=g, dtype=torch.complex128, requires_grad=True)
    taps_f = torch.randn(7, 4, generator=g, dtype=torch.complex128)
    M = torch.randn(4, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: SpectralMix.apply(a, taps_f, b, 3), (u_f, M))


def test_stu_saves_no_transfer_matrix():
    """The layer saves nothing of the size of W (F, H, H) for the backward (the dense path saves W itself)."""
    B, L, H = 1, 64, 32
    layer = randomize(STU(H, k=4))
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    u = torch.randn(B, L, H, requires_grad=True)
    for spectral in (layer.spectral, lambda x: dense_spectral(layer, x)):
        sizes.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            spectral(u)
        if spectral == layer.spectral:
            assert max(sizes, default=0) < (L + 1) * H * H / 4, sizes
        else:
            assert max(sizes) >= (L + 1) * H * H  # the check sees W where it is saved


def test_zero_parameters_give_zero_output():
    layer = STU(4, k=6, m_u_init="zero").double()
    u = torch.randn(2, 30, 4, dtype=torch.float64)
    assert torch.equal(layer.stu(u), torch.zeros_like(u))


def lds_and_stu(L: int, hankel: str, K: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random symmetric LDS with eigenvalues in [-1, 1] and the STU set by the construction of Thm. 3.1 / B.1.

    y_t = sum_{j>=0} C A^j B u_{t-j}. For an eigenpair (a, q) of A, y_t - y_{t-2} has the lag-j coefficient
    C A^j B for j = 0, 1 (M^u_1 = CB, M^u_2 = CAB) and -(1 - a^2) a^(j-2) c b^T for j >= 2 (c = Cq, b = q^T B):
    - Z: -(1 + |a|) (sign a)^i mu(|a|)_i with mu(a) = (1-a) a^i, so M^{phi+-}_k = -sigma_k^(-1/4) sum (1+|a|)
      <mu(|a|), phi_k> c b^T over a >= 0 (+) and a < 0 (-);
    - Z_L: (a^2 - 1) a^i = mu_L(a)_i, so M^phi_k = sigma_k^(-1/4) sum <mu_L(a), phi_k> c b^T.
    """
    g = torch.Generator().manual_seed(seed)
    alphas = [1.0, 0.999, 0.9, 0.3, -0.5, -0.999, -1.0]
    n, d = len(alphas), 2
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(torch.tensor(alphas, dtype=torch.float64)) @ Q.T
    B = torch.randn(n, d, generator=g, dtype=torch.float64)
    C = torch.randn(d, n, generator=g, dtype=torch.float64)
    u = torch.randn(3, L, d, generator=g, dtype=torch.float64)
    x, ys = torch.zeros(3, n, dtype=torch.float64), []
    for t in range(L):
        x = x @ A.T + u[:, t] @ B.T
        ys.append(x @ C.T)
    y = torch.stack(ys, dim=1)

    layer = STU(d, k=K, k_u=3, hankel=hankel, y_term="fixed").double()
    sigma, phi = spectral_filters(L, K, hankel)
    i = torch.arange(L, dtype=torch.float64)
    c, b = C @ Q, Q.T @ B
    with torch.no_grad():
        layer.M_u.zero_()
        layer.M_u[0], layer.M_u[1] = C @ B, C @ A @ B
        for l, a in enumerate(alphas):
            outer = torch.outer(c[:, l], b[l])
            if hankel == "z":
                coef = -(1 + abs(a)) * (phi.T @ ((1 - abs(a)) * abs(a) ** i)) * sigma ** -0.25
                target = layer.M_phi_plus if a >= 0 else layer.M_phi_minus
            else:
                coef = (phi.T @ ((a * a - 1) * a ** i)) * sigma ** -0.25
                target = layer.M_phi_plus
            target += coef[:, None, None] * outer
        return layer.stu(u), y


@pytest.mark.parametrize("hankel,Ks,final", [("z", (4, 8, 16, 24), 1e-6), ("l", (4, 12, 24), 1e-3)])
def test_representation_of_a_marginally_stable_symmetric_lds(hankel, Ks, final):
    """Theorem 3.1 (Z) and B.1 (Z_L): the STU reproduces the LDS, with an error that falls as K grows."""
    errors = []
    for K in Ks:
        y_hat, y = lds_and_stu(256, hankel, K)
        errors.append(((y_hat - y).norm() / y.norm()).item())
    assert all(e1 > e2 for e1, e2 in zip(errors, errors[1:])), errors
    assert errors[-1] < final, errors


def test_lag2_cumsum_equals_the_recursion():
    for L in (1, 6, 7):
        z = torch.randn(2, L, 3, dtype=torch.float64)
        y = torch.zeros_like(z)
        for t in range(L):
            y[:, t] = z[:, t] + (y[:, t - 2] if t >= 2 else 0)
        assert torch.allclose(lag2_cumsum(z), y, atol=1e-14)


def naive_ar(z: torch.Tensor, M: torch.Tensor, reverse: bool) -> torch.Tensor:
    B, L, H = z.shape
    out: list = [None] * L
    for t in (range(L - 1, -1, -1) if reverse else range(L)):
        acc = z[:, t].clone()
        for i in range(1, M.shape[0] + 1):
            j = t + i if reverse else t - i
            if 0 <= j < L:
                acc = acc + out[j] @ M[i - 1].T
        out[t] = acc
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("reverse", [False, True])
def test_ar_scan_equals_naive_recursion(k, reverse):
    g = torch.Generator().manual_seed(k)
    z = torch.randn(3, 17, 4, generator=g, dtype=torch.float64)
    M = 0.3 * torch.randn(k, 4, 4, generator=g, dtype=torch.float64)
    assert torch.allclose(ar_scan(z, M, reverse), naive_ar(z, M, reverse), atol=1e-12)


@pytest.mark.parametrize("k,T", [(1, 1), (2, 2), (2, 3), (3, 5), (2, 16), (3, 17), (2, 40)])
@pytest.mark.parametrize("reverse", [False, True])
def test_chunked_scan_equals_naive_recursion(k, T, reverse):
    """Chunk lengths T from k (the carried window is the whole chunk) to >= L (one chunk), dividing L or not."""
    g = torch.Generator().manual_seed(10 * k + T)
    z = torch.randn(2, 34, 3, generator=g, dtype=torch.float64)
    M = 0.3 * torch.randn(k, 3, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(ar_scan(z, M, reverse, chunk=T), naive_ar(z, M, reverse), rtol=1e-12, atol=1e-12)


def test_chunked_scan_of_a_marginally_stable_recurrence():
    """M_2 = I (STU's y_t = y_{t-2} + z_t, outputs growing like sqrt(t)) over 2000 steps in chunks of 4 and 45:
    the carried windows go through Phi = C^T, and match the cumulative sums to rounding."""
    z = torch.randn(2, 2000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    M = torch.stack([torch.zeros(3, 3), torch.eye(3)]).double()
    for T in (4, 45):
        assert torch.allclose(ar_scan(z, M, chunk=T), lag2_cumsum(z), rtol=0, atol=1e-10)
    assert torch.allclose(chunk_transition(M, 4), torch.eye(6, dtype=torch.float64))  # C^2 swaps, C^4 = I


def test_chunk_length_and_its_limits():
    assert chunk_length(16, 4096, 256, 2) == 45  # sqrt(L / 2) sequential steps per pass
    assert chunk_length(50, 1024, 512, 32) == 1024  # a (16384, 16384) companion power would cost more: the loop
    assert chunk_length(1, 3, 4, 2) == 3  # T >= L: one chunk
    with pytest.raises(ValueError, match="at least k = 3"):
        ar_scan(torch.zeros(1, 10, 2), torch.zeros(3, 2, 2), chunk=2)
    z, M = torch.randn(1, 2, 2, dtype=torch.float64), torch.randn(3, 2, 2, dtype=torch.float64)
    assert torch.allclose(ar_scan(z, M), naive_ar(z, M, False), atol=1e-14)  # L < k: one chunk


@pytest.mark.parametrize("chunk", [None, 2, 4])
def test_chunked_output_autoregression_gradient(chunk):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 11, 3, generator=g, dtype=torch.float64, requires_grad=True)
    M = (0.3 * torch.randn(2, 3, 3, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: OutputAutoregression.apply(a, b, chunk), (z, M))


def test_output_autoregression_gradient():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    M = (0.3 * torch.randn(3, 3, 3, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(OutputAutoregression.apply, (z, M))


@pytest.mark.parametrize("ar_init,y_term", [(0.0, "none"), (1.0, "fixed")])
def test_ar_stu_equals_stu_at_initialization(ar_init, y_term):
    """M^y from zero (the official code) starts as STU without the y term; M^y_2 = I as STU with Eq. 4's term."""
    stu = randomize(STU(4, k=6, y_term=y_term).double())
    ar = ARSTU(4, k=6, ar_init=ar_init).double()
    missing, unexpected = ar.load_state_dict(stu.state_dict(), strict=False)
    assert missing == ["M_y"] and not unexpected
    assert torch.equal(ar.M_y[1], ar_init * torch.eye(4, dtype=torch.float64)) and not ar.M_y[0].any()
    u = torch.randn(2, 40, 4, dtype=torch.float64)
    assert torch.allclose(ar(u), stu(u), atol=1e-10)
    with torch.no_grad():
        assert torch.allclose(ar.stu(u), direct_stu(stu, u, y_term), atol=1e-10)
    assert ar.stu(u).abs().max() > 0.5  # not trivially zero
    stabler = ARSTU(4, k=6, ar_init=0.9)
    assert torch.allclose(stabler.M_y[1], 0.9 * torch.eye(4))


@pytest.mark.parametrize("mixing", ["full", "tensordot"])
@pytest.mark.parametrize("cls", [STU, ARSTU])
def test_layers_are_causal(cls, mixing):
    layer = randomize(cls(3, k=5, mixing=mixing).double())
    with torch.no_grad():
        layer.output_linear.weight.normal_()
    u = torch.randn(2, 32, 3, dtype=torch.float64)
    v = u.clone()
    v[:, 20:] += torch.randn(2, 12, 3, dtype=torch.float64)
    a, b = layer(u), layer(v)
    assert torch.allclose(a[:, :20], b[:, :20], rtol=0, atol=1e-12)  # FFT rounding only
    assert (a[:, 20] - b[:, 20]).abs().max() > 1e-3


def test_filters_are_buffers_outside_the_state_dict():
    layer = ARSTU(4, k=6, ar_lr=3e-4)
    layer(torch.randn(1, 50, 4))
    assert layer.taps.shape == (3 + 2 * 6, 50)
    assert all("taps" not in key for key in layer.state_dict())
    assert layer.M_y._optim == {"lr": 3e-4, "weight_decay": 0.0}
    layer(torch.randn(1, 30, 4))  # a new length rebuilds the filters
    assert layer.taps.shape == (15, 30)
    assert STU(4, k=6, hankel="l").M_phi_minus is None
    with pytest.raises(SSMBenchError, match="model.stu.k: 6 spectral filters need sequences of at least 6"):
        layer(torch.randn(1, 5, 4))


def test_float32_under_autocast():
    layer = randomize(STU(4, k=6))
    u = torch.randn(2, 40, 4)
    reference = layer.stu(u)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = layer.stu(u.bfloat16())
        out = layer(u)
    assert inside.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.allclose(inside, layer.stu(u.bfloat16().float()), atol=1e-5)
    assert reference.dtype == torch.float32


# --------------------------------------------------------------------------------------------------
# mixing: tensordot, M^{phi+-}_k = diag(m^+-_k) P


def factored(layer: STU) -> dict[str, torch.Tensor]:
    """The tensordot layer's parameters as those of an exact layer: M^{phi+-}_k = diag(m^+-_k) P (differentiable in
    P and m), the other parameters as they are."""
    params = {n: p for n, p in layer.named_parameters() if n not in ("P", "m_plus", "m_minus")}
    params["M_phi_plus"] = layer.m_plus[:, :, None] * layer.P
    if layer.m_minus is not None:
        params["M_phi_minus"] = layer.m_minus[:, :, None] * layer.P
    return params


@pytest.mark.parametrize("cls", [STU, ARSTU])
@pytest.mark.parametrize("hankel,L,k_u", [("z", 23, 3), ("z", 24, 0), ("l", 23, 2), ("l", 24, 3)])
def test_tensordot_equals_the_exact_layer_with_factored_matrices(cls, hankel, L, k_u):
    """Output and every gradient of the tensordot block equal those of the exact block (SpectralMix) whose M^phi_k
    are diag(m_k) P: the input's, the shared M^u's, the output Linear's, and P's and m's through the product."""
    H = 3
    torch.manual_seed(0)
    approx = randomize(cls(H, k=5, k_u=k_u, hankel=hankel, mixing="tensordot").double(), seed=1)
    exact = cls(H, k=5, k_u=k_u, hankel=hankel).double()
    if cls is ARSTU:
        with torch.no_grad():
            approx.M_y.add_(0.1 * torch.randn(approx.M_y.shape, dtype=torch.float64))
    missing, unexpected = exact.load_state_dict(approx.state_dict(), strict=False)
    assert sorted(missing) == sorted(n for n in ("M_phi_plus", "M_phi_minus") if getattr(exact, n) is not None)
    g = torch.Generator().manual_seed(2)
    u = torch.randn(2, L, H, generator=g, dtype=torch.float64, requires_grad=True)
    cotangent = torch.randn(2, L, H, generator=g, dtype=torch.float64)
    names = [n for n, _ in approx.named_parameters()]
    results = []
    for run in (lambda x: approx(x), lambda x: torch.func.functional_call(exact, factored(approx), (x,))):
        y = run(u)
        results.append([y.detach()] + list(torch.autograd.grad(y, [u] + list(approx.parameters()), cotangent,
                                                                  allow_unused=True, materialize_grads=True)))  # M^u: empty for k_u = 0
    for name, fast, reference in zip(["output", "input"] + names, *results):
        assert torch.allclose(fast, reference, rtol=1e-10, atol=1e-12), name
    assert results[0][0].abs().max() > 0.1  # not trivially zero


@pytest.mark.parametrize("hankel", ["z", "l"])
def test_tensordot_equals_the_direct_sum(hankel):
    """Against Eq. 4 term by term (`direct_stu`) with M^phi_k = diag(m_k) P."""
    approx = randomize(STU(3, k=5, hankel=hankel, mixing="tensordot").double())
    exact = STU(3, k=5, hankel=hankel).double()
    with torch.no_grad():
        exact.load_state_dict(factored(approx), strict=False)
        u = torch.randn(2, 23, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        assert torch.allclose(approx.stu(u), direct_stu(exact, u), rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("hankel", ["z", "l"])
def test_tensordot_gradient(hankel):
    layer = randomize(STU(2, k=3, k_u=2, hankel=hankel, mixing="tensordot").double())
    g = torch.Generator().manual_seed(4)
    u = torch.randn(1, 7, 2, generator=g, dtype=torch.float64, requires_grad=True)
    names = [n for n in ("M_u", "P", "m_plus", "m_minus") if getattr(layer, n) is not None]
    params = [getattr(layer, n).detach().clone().requires_grad_() for n in names]

    def stu(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values)), (x,), strict=False)

    assert torch.autograd.gradcheck(stu, (u, *params))


def test_tensordot_initialization_trains():
    """m = 0 and P ~ U(-1/sqrt(H), 1/sqrt(H)): the spectral term starts at 0 (like the exact layer's zero M^phi),
    m gets a gradient at once, P as soon as m moves; H^2 + 2K H instead of 2K H^2 spectral parameters."""
    H, K = 8, 6
    layer = STU(H, k=K, mixing="tensordot").double()
    assert layer.M_phi_plus is None and layer.M_phi_minus is None
    assert not layer.m_plus.any() and not layer.m_minus.any()
    assert 0 < layer.P.abs().max() <= H ** -0.5 and layer.P.std() > 0.1 * H ** -0.5
    assert sum(p.numel() for p in (layer.P, layer.m_plus, layer.m_minus)) == H * H + 2 * K * H
    assert sum(p.numel() for p in (STU(H, k=K).M_phi_plus, STU(H, k=K).M_phi_minus)) == 2 * K * H * H
    u = torch.randn(2, 30, H, dtype=torch.float64)
    with torch.no_grad():
        layer.M_u.zero_()
    y = layer.stu(u)
    assert torch.equal(y, torch.zeros_like(y))
    (y * torch.randn_like(y)).sum().backward()
    assert layer.m_plus.grad.abs().min() > 0 and layer.m_minus.grad.abs().min() > 0
    assert not layer.P.grad.any()


def test_ar_stu_with_tensordot_equals_stu_with_tensordot_at_initialization():
    stu = randomize(STU(4, k=6, mixing="tensordot", y_term="fixed").double())
    ar = ARSTU(4, k=6, mixing="tensordot", ar_init=1.0).double()
    missing, unexpected = ar.load_state_dict(stu.state_dict(), strict=False)
    assert missing == ["M_y"] and not unexpected
    u = torch.randn(2, 40, 4, dtype=torch.float64)
    assert torch.allclose(ar(u), stu(u), atol=1e-10)
    assert ar.stu(u).abs().max() > 1  # not trivially zero


def test_tensordot_float32_under_autocast():
    layer = randomize(STU(4, k=6, mixing="tensordot"))
    u = torch.randn(2, 40, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = layer.stu(u.bfloat16())
    assert inside.dtype == torch.float32
    assert torch.allclose(inside, layer.stu(u.bfloat16().float()), atol=1e-5)


# --------------------------------------------------------------------------------------------------
# synthetic-lds and the recipes


def lds_recipe(tmp_path: Path, **data) -> dict:
    return {"name": "t", "data": {"name": "synthetic-lds", "seq_len": 40, "n_train": 20, "n_test": 5, **data},
            "model": {"kind": "stu", "d_model": 8, "n_layers": 1, "norm": "none", "pool": "none", "stu": {"k": 4}}}


def test_synthetic_lds_matches_the_convolution_form(tmp_path):
    from ssmbench.data import build_data

    recipe = validate_recipe(lds_recipe(tmp_path, standardize=False))
    bundle = build_data(recipe.data)
    assert bundle.task == "regression" and bundle.source == "synthetic" and bundle.io.per_step
    assert bundle.sizes() == {"train": 18, "val": 2, "test": 5}
    from ssmbench.data.lds import LDS

    system = LDS(3, 4, 0.9999, torch.Generator().manual_seed(0))
    assert torch.allclose(system.A.abs(), torch.full((4,), 0.9999, dtype=torch.float64))
    u = torch.randn(2, 40, 3, dtype=torch.float64)
    # y_t = sum_{j=0}^{t} C A^j B u_{t-j} + D u_t, the closed form of the recurrence
    expected = torch.zeros(2, 40, 3, dtype=torch.float64)
    for t in range(40):
        for j in range(t + 1):
            expected[:, t] += u[:, t - j] @ (system.C @ torch.diag(system.A ** j) @ system.B).T
    expected += u * system.D
    assert torch.allclose(system(u), expected, atol=1e-10)
    x, y = bundle.test[0]
    assert x.shape == (40, 3) and y.shape == (40, 3)
    again = build_data(validate_recipe(lds_recipe(tmp_path, standardize=False)).data)
    assert torch.equal(again.test[0][1], y)
    other = build_data(validate_recipe(lds_recipe(tmp_path, system_seed=1)).data)
    assert not torch.equal(other.test[0][1], y)
    train_y = torch.cat([other.train.tensors[1], other.val.tensors[1]])
    assert train_y.double().pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-5)


def test_recipe_schema(tmp_path):
    recipe = validate_recipe(lds_recipe(tmp_path))
    assert recipe.model.stu.k == 4 and recipe.model.stu.k_u == 3 and recipe.model.stu.k_y == 2
    assert recipe.model.stu.cache_dir == str(Path("data") / "cache" / "stu")
    raw = lds_recipe(tmp_path)
    raw["model"]["bidirectional"] = True
    with pytest.raises(RecipeError, match="causal only"):
        validate_recipe(raw, "r.yaml")
    raw = lds_recipe(tmp_path)
    raw["model"]["stu"]["hankel"] = "x"
    with pytest.raises(RecipeError, match="model.stu.hankel"):
        validate_recipe(raw, "r.yaml")
    raw["model"]["stu"] = {"k_y": 1}
    with pytest.raises(RecipeError, match="model.stu.k_y"):
        validate_recipe(raw, "r.yaml")
    assert recipe.model.stu.mixing == "full"
    raw["model"]["stu"] = {"mixing": "tensor"}
    with pytest.raises(RecipeError, match="r.yaml: model.stu.mixing: .*'full' or 'tensordot'"):
        validate_recipe(raw, "r.yaml")
    assert load_recipe(RECIPES / "lra" / "pathx" / "stu-tensordot.yaml").model.stu.mixing == "tensordot"
    assert recipe.model.stu.y_term == "none" and recipe.model.stu.ar_init == 0.0
    assert recipe.model.stu.m_u_init == "truncated-normal"
    raw = lds_recipe(tmp_path)
    raw["model"].update(kind="ar-stu", stu={"y_term": "fixed"})
    with pytest.raises(RecipeError, match="r.yaml: model: stu.y_term: ar-stu learns its y terms"):
        validate_recipe(raw, "r.yaml")
    assert load_recipe(RECIPES / "synthetic" / "lds-stu.yaml").model.stu.y_term == "fixed"


@pytest.mark.parametrize("task", ["listops", "text", "retrieval", "image", "pathfinder", "pathx"])
def test_lra_stu_recipes_take_the_official_optimizer(task):
    """google-deepmind/spectral_ssm optimizer.py / example.py: AdamW lr 5e-4, weight decay 0.1 on every parameter,
    M^y at lr 5e-5 without decay, K = 24; the layers as the official code (no fixed y term, M^y from zero)."""
    from ssmbench.models.backbone import ModelIO, SequenceModel
    from ssmbench.train.optim import param_groups

    for name in ("stu", "ar-stu"):
        recipe = load_recipe(RECIPES / "lra" / task / f"{name}.yaml", ["model.d_model=4", "model.n_layers=1",
                                                                        "model.stu.cache_dir=null"])
        t, s = recipe.train, recipe.model.stu
        assert (t.lr, t.weight_decay, list(t.no_weight_decay), s.k) == (5e-4, 0.1, [], 24)
        assert s.y_term == "none" and s.ar_init == 0.0 and s.m_u_init == "truncated-normal"
        model = SequenceModel(recipe.model, recipe.init.name, ModelIO(d_input=1, input_kind="real", n_outputs=2))
        groups = {(g["lr"], g["weight_decay"]): g["names"] for g in param_groups(model, t.lr, t.weight_decay,
                                                                                t.no_weight_decay)}
        if name == "ar-stu":
            assert set(groups) == {(5e-4, 0.1), (5e-5, 0.0)}
            assert groups[(5e-5, 0.0)] and all(n.endswith("M_y") for n in groups[(5e-5, 0.0)])
        else:
            assert set(groups) == {(5e-4, 0.1)}


@pytest.mark.parametrize("kind", ["stu", "ar-stu"])
def test_recipe_builds_tensordot_layers(kind):
    from ssmbench.models.backbone import ModelIO, SequenceModel

    recipe = load_recipe(RECIPES / "lra" / "pathx" / "stu-tensordot.yaml",
                         [f"model.kind={kind}", "model.d_model=8", "model.n_layers=2", "model.stu.cache_dir=null"])
    model = SequenceModel(recipe.model, recipe.init.name, ModelIO(d_input=1, input_kind="real", n_outputs=2))
    layers = [m for m in model.modules() if isinstance(m, STU)]
    assert len(layers) == 2 and all(m.P is not None and m.M_phi_plus is None for m in layers)
    assert all(isinstance(m, ARSTU) for m in layers) == (kind == "ar-stu")
    assert model(torch.randn(2, 32, 1)).shape == (2, 2)


@pytest.mark.parametrize("path", ["smnist/stu.yaml", "smnist/ar-stu.yaml", "synthetic/lds-stu.yaml", "synthetic/lds-s4d.yaml"])
def test_recipes_train_a_few_steps(path, tmp_path, monkeypatch):
    from ssmbench.train.engine import train

    monkeypatch.chdir(tmp_path)  # data.root and the filter cache are relative: keep them in tmp_path
    overrides = ["train.max_steps=2", "train.max_eval_batches=1", "train.max_test_batches=1", "train.eval_every=null",
                 "train.batch_size=4", "model.d_model=8", "model.n_layers=1"]
    if "lds" in path:
        overrides += ["data.n_train=16", "data.n_test=4", "data.seq_len=64"]
    else:
        overrides += ["data.val_fraction=0.001"]
    recipe = load_recipe(RECIPES / path, overrides)
    results = train(recipe, runs_root=tmp_path / "runs", quiet=True, log=lambda *_: None)
    assert results["status"] == "finished" and results["steps"] == 2
    if recipe.model.kind != "s4d":
        assert list((tmp_path / "data" / "cache" / "stu").glob("hankel-z-L*-K*.pt"))
