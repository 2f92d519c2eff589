"""The frequency-bias paper's one-pole example (Yu et al., ICLR 2025, "a synthetic example"; docs/methods.md §B.1):
where does the imaginary part w of a single trained pole end, depending on where it starts?

    python -m ssmbench.one_pole --out benchmarks/results/one-pole   # every init and beta; writes one_pole.json

Target (two modes and a band of low-frequency noise), for real s:

    F(s) = Re( 5/(is - (-1 - 50i)) + 0.2/(is - (-1 + 50i)) + 0.01 cos(9s/4) 1_[-2pi, 2pi](s) )
         = 5/(1 + (s + 50)^2) + 0.2/(1 + (s - 50)^2) + 0.01 cos(9s/4) 1_[-2pi, 2pi](s)

Model (one pole, Re a = -1 fixed, zeta = 0), trainable xi and w:

    G(s) = Re( xi/(is - (-1 - wi)) ) = xi/(1 + (s + w)^2)

so G matches the strong mode at (xi, w) = (5, 50), the weak one at (0.2, -50), and the noise band is |w| <= 2pi.
Loss, with the Sobolev weight of the paper's filter (1 + |s|)^beta applied to both transfer functions:

    L(xi, w) = int (1 + |s|)^(2 beta) (G(s) - F(s))^2 ds,   s in [-S, S], trapezoid rule with step h
    dL/dxi = 2 int rho (G - F) / (1 + (s + w)^2) ds,  dL/dw = -4 xi int rho (G - F) (s + w) / (1 + (s + w)^2)^2 ds

Training is gradient flow d(xi, w)/dt = -grad L (gradient descent in the limit of small steps), integrated by
scipy's LSODA until |grad L| < `tol` (1 + L) (a stationary point) or t = `t_max`. Plain fixed-step descent is not usable
here: far from the modes dL/dw is 1e-7..1e-4 (the O(|s - w|^-2) kernel of the paper's gradient formula), while the
curvature at the strong mode is ~40, so a stable step would need ~1e8 iterations. Deterministic: no random draw.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

STRONG, WEAK = (5.0, 50.0), (0.2, -50.0)  # (amplitude xi, the w at which the model's pole -1 - wi matches it)
NOISE_AMPLITUDE, NOISE_FREQUENCY, NOISE_BAND = 0.01, 9.0 / 4.0, 2.0 * math.pi
# Three inits per group stand in for seeds (the experiment is deterministic); xi starts at XI0 for every init.
GROUPS = {
    "left, near the weak mode": (-40.0, -35.0, -30.0),
    "left, pulled across the band": (-20.0, -15.0, -10.0),
    "right of the band": (10.0, 20.0, 30.0),
}
BETAS = (0.0, 0.5, 1.0)
XI0 = 1.0
RESULTS = "one_pole.json"


@dataclass(frozen=True)
class Grid:
    """The quadrature of the frequency integral: s in [-half_width, half_width] with step h (trapezoid rule)."""

    half_width: float = 200.0
    h: float = 0.05

    def nodes(self) -> tuple[np.ndarray, np.ndarray]:
        n = int(round(2 * self.half_width / self.h))
        s = np.linspace(-self.half_width, self.half_width, n + 1)
        q = np.full_like(s, self.h)
        q[0] = q[-1] = self.h / 2
        return s, q


def target(s: np.ndarray) -> np.ndarray:
    """F(s): the two modes plus the noise band (module docstring)."""
    noise = NOISE_AMPLITUDE * np.cos(NOISE_FREQUENCY * s) * (np.abs(s) <= NOISE_BAND)
    return STRONG[0] / (1 + (s + STRONG[1]) ** 2) + WEAK[0] / (1 + (s + WEAK[1]) ** 2) + noise


def model(s: np.ndarray, xi: float, w: float) -> np.ndarray:
    """G(s) = Re(xi/(is - (-1 - wi)))."""
    return xi / (1 + (s + w) ** 2)


class Problem:
    """The loss of one beta on one grid, and its gradient (closed-form derivative of the quadrature sum)."""

    def __init__(self, beta: float, grid: Grid = Grid()):
        self.beta = beta
        self.s, q = grid.nodes()
        self.rho = q * (1 + np.abs(self.s)) ** (2 * beta)
        self.f = target(self.s)

    def loss(self, xi: float, w: float) -> float:
        return float(np.sum(self.rho * (model(self.s, xi, w) - self.f) ** 2))

    def grad(self, xi: float, w: float) -> np.ndarray:
        lorentz = 1 / (1 + (self.s + w) ** 2)
        r = self.rho * (xi * lorentz - self.f)
        return np.array([2 * np.sum(r * lorentz), -4 * xi * np.sum(r * (self.s + w) * lorentz ** 2)])


def where(w: float, tol: float = 1.0) -> str:
    """Where a final w lies: at a mode (within tol), in the noise band (|w| <= 2pi + tol), or elsewhere."""
    if abs(w - STRONG[1]) <= tol:
        return "strong mode"
    if abs(w - WEAK[1]) <= tol:
        return "weak mode"
    if abs(w) <= NOISE_BAND + tol:
        return "noise band"
    return "elsewhere"


def train(problem: Problem, w0: float, xi0: float = XI0, tol: float = 1e-9, t_max: float = 1e9) -> dict:
    """Gradient flow from (xi0, w0) to a stationary point (|grad L| < tol (1 + L), relative to the loss, whose scale
    grows with beta) or t_max; the end point and its cost."""
    from scipy.integrate import solve_ivp

    def stationary(_t, p):
        return float(np.linalg.norm(problem.grad(*p))) - tol * (1 + problem.loss(*p))

    stationary.terminal = True
    sol = solve_ivp(lambda _t, p: -problem.grad(*p), (0.0, t_max), [xi0, w0], method="LSODA", rtol=1e-8,
                    atol=1e-10, events=stationary)
    xi, w = (float(v) for v in sol.y[:, -1])
    return {"w0": w0, "xi0": xi0, "beta": problem.beta, "w": w, "xi": xi, "loss": problem.loss(xi, w),
            "loss0": problem.loss(xi0, w0), "grad_norm": float(np.linalg.norm(problem.grad(xi, w))),
            "t": float(sol.t[-1]), "stationary": bool(sol.status == 1), "evaluations": int(sol.nfev),
            "ended": where(w)}


def local_minima(problem: Problem, lo: float = -60.0, hi: float = 60.0, step: float = 0.05) -> list[float]:
    """The local minima in w of the loss minimized over xi (xi* = <G1, F>/<G1, G1>, G1 = model(s, 1, w))."""
    ws = np.arange(lo, hi + step / 2, step)
    f2 = float(np.sum(problem.rho * problem.f ** 2))
    profile = []
    for w in ws:
        g = model(problem.s, 1.0, w)
        profile.append(f2 - float(np.sum(problem.rho * g * problem.f)) ** 2 / float(np.sum(problem.rho * g * g)))
    return [round(float(ws[i]), 2) for i in range(1, len(ws) - 1)
            if profile[i] < profile[i - 1] and profile[i] < profile[i + 1]]


def run(betas=BETAS, groups=GROUPS, grid: Grid = Grid()) -> dict:
    """Every init of every group under every beta; with the loss profile's minima and the provenance."""
    from ssmbench import runs

    start = time.perf_counter()
    trajectories, minima = [], {}
    for beta in betas:
        problem = Problem(beta, grid)
        minima[f"{beta:g}"] = local_minima(problem)
        for group, inits in groups.items():
            for w0 in inits:
                trajectories.append({"group": group, **train(problem, w0)})
    import scipy

    return {"experiment": "one-pole", "grid": asdict(grid), "betas": list(betas), "groups": {k: list(v) for k, v in
                                                                                              groups.items()},
            "trajectories": trajectories, "local_minima": minima,
            "env": {"code_version": runs.code_version(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                    "platform": platform.machine(), "wall_seconds": round(time.perf_counter() - start, 1)}}


def main(argv: list[str] | None = None) -> None:
    from ssmbench import runs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/one-pole"), help="folder for one_pole.json")
    args = parser.parse_args(argv)
    result = run()
    args.out.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_json(args.out / RESULTS, result)
    for t in result["trajectories"]:
        print(f"beta {t['beta']:g}  w0 {t['w0']:+6.1f} -> w {t['w']:+8.3f}  xi {t['xi']:.4f}  ({t['ended']})")
    print(f"{args.out / RESULTS}: {len(result['trajectories'])} trajectories in {result['env']['wall_seconds']} s",
          file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
