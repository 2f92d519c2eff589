"""The one-pole example (ssmbench/one_pole.py, docs/methods.md §B.1): its loss and gradient against independent
computations (adaptive quadrature of the continuous integral, finite differences, the closed form of the
Lorentzian inner products), and the gradient flow's end points on both sides of the noise band."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from ssmbench.one_pole import NOISE_BAND, STRONG, WEAK, Grid, Problem, local_minima, model, target, train, where

POINTS = [(1.0, -20.0), (0.3, 3.0), (4.0, 48.5), (0.2, -51.0)]


def quad_loss_and_grad(beta: float, xi: float, w: float, half_width: float) -> tuple[float, np.ndarray]:
    """The continuous integrals of the loss and of its derivatives by scipy's adaptive quadrature, split at every
    kink and peak (the noise band's ends, the two modes, the model's pole)."""
    cuts = sorted({-half_width, -NOISE_BAND, NOISE_BAND, -STRONG[1], -WEAK[1], -w, 0.0, half_width})
    cuts = [c for c in cuts if -half_width <= c <= half_width]

    def integrate(f) -> float:
        return sum(quad(f, a, b, limit=400, epsabs=1e-14, epsrel=1e-12)[0] for a, b in zip(cuts, cuts[1:]))

    def rho(s):
        return (1 + abs(s)) ** (2 * beta)

    def resid(s):
        return xi / (1 + (s + w) ** 2) - float(target(np.array(s)))

    loss = integrate(lambda s: rho(s) * resid(s) ** 2)
    d_xi = integrate(lambda s: 2 * rho(s) * resid(s) / (1 + (s + w) ** 2))
    d_w = integrate(lambda s: 2 * rho(s) * resid(s) * (-2 * xi * (s + w)) / (1 + (s + w) ** 2) ** 2)
    return loss, np.array([d_xi, d_w])


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_loss_and_gradient_match_adaptive_quadrature(beta: float) -> None:
    grid = Grid(half_width=80.0, h=0.05)
    problem = Problem(beta, grid)
    for xi, w in POINTS:
        loss, grad = quad_loss_and_grad(beta, xi, w, grid.half_width)
        assert problem.loss(xi, w) == pytest.approx(loss, rel=1e-6)
        # the trapezoid rule is O(h^2) at the noise band's kinks (s = +-2pi), hence 1e-4 on the gradient
        assert problem.grad(xi, w) == pytest.approx(grad, rel=1e-4, abs=1e-9 * max(1.0, abs(loss)))


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_gradient_matches_finite_differences(beta: float) -> None:
    problem = Problem(beta)
    for xi, w in POINTS:
        eps = 1e-5
        fd = [(problem.loss(xi + eps, w) - problem.loss(xi - eps, w)) / (2 * eps),
              (problem.loss(xi, w + eps) - problem.loss(xi, w - eps)) / (2 * eps)]
        assert problem.grad(xi, w) == pytest.approx(fd, rel=1e-5, abs=1e-10)


def test_noise_free_loss_and_gradient_match_the_closed_form() -> None:
    """Without the noise band and beta = 0 the loss is a sum of Lorentzian inner products on the whole line:
    int 1/(1 + (s + a)^2) 1/(1 + (s + b)^2) ds = 2 pi / (4 + (a - b)^2)."""
    problem = Problem(0.0, Grid(half_width=2000.0, h=0.05))
    problem.f = target(problem.s) - 0.01 * np.cos(2.25 * problem.s) * (np.abs(problem.s) <= NOISE_BAND)

    def inner(a: float, b: float) -> float:
        return 2 * math.pi / (4 + (a - b) ** 2)

    modes = [STRONG, WEAK]
    for xi, w in POINTS:
        closed = (xi ** 2 * inner(w, w) - 2 * xi * sum(c * inner(w, m) for c, m in modes)
                  + sum(c1 * c2 * inner(m1, m2) for c1, m1 in modes for c2, m2 in modes))
        d_xi = 2 * xi * inner(w, w) - 2 * sum(c * inner(w, m) for c, m in modes)
        d_w = -2 * xi * sum(c * 2 * math.pi * (-2 * (w - m)) / (4 + (w - m) ** 2) ** 2 for c, m in modes)
        assert problem.loss(xi, w) == pytest.approx(closed, rel=1e-6, abs=1e-9)
        assert problem.grad(xi, w) == pytest.approx([d_xi, d_w], rel=1e-6, abs=1e-9)


def test_the_model_matches_each_mode_and_the_loss_profile_has_the_noise_wells() -> None:
    s = np.linspace(-100, 100, 2001)
    assert np.allclose(model(s, *STRONG), 5 / (1 + (s + 50) ** 2))
    assert where(50.2) == "strong mode" and where(-49.5) == "weak mode" and where(-5.7) == "noise band"
    assert where(20.0) == "elsewhere"
    minima = local_minima(Problem(0.0), step=0.25)
    assert any(abs(m - 50) < 0.3 for m in minima) and any(abs(m + 50) < 0.3 for m in minima)
    assert sum(abs(m) <= NOISE_BAND for m in minima) >= 3  # the noise band's wells


def test_gradient_flow_ends_at_the_mode_on_its_side_or_in_the_noise_band() -> None:
    problem = Problem(0.0)
    right = train(problem, 30.0)
    assert right["stationary"] and right["ended"] == "strong mode" and right["xi"] == pytest.approx(5.0, abs=1e-3)
    left = train(problem, -35.0)
    assert left["ended"] == "weak mode" and left["xi"] == pytest.approx(0.2, abs=0.01)
    across = train(problem, -15.0)
    assert across["stationary"] and across["ended"] == "noise band" and across["loss"] < across["loss0"]
