"""Pathfinder generator (docs/methods.md §G "Pathfinder generator"), a clean-room version of the published procedure.

An image holds two target paths and some distractor paths, each a chain of dashes ("paddles") of
`paddle_length` x `thickness`. A path starts at a random point and heading; each next dash starts
`paddle_length + 2 * margin` ahead along the current heading, in a new heading drawn among the free directions
(24 offsets) with weight max(cos(min(continuity * |dtheta|, pi/2)), 0)^2. The two target paths start
`seed_distance` apart; distractors have contour_length // 3 dashes, round(distractor_budget / that) of them.
Everything is drawn at `scale` x the resolution and block-averaged down; lengths in the parameter table are in
units of that drawing grid (the dash step at resolution 32 is then 2 output pixels, so a 14-dash path fits).
Marker discs sit at the start of one
target path and at the far end of the same path (label 1) or of the other path (label 0).

Connectivity is kept checkable on the output pixels (this is stricter than "overlaps against a mask dilated by
the margin" and is what makes the label provable): with reach r = ceil(2 * margin / scale) output pixels, consecutive dashes of one
path are within Chebyshev pixel distance r of each other, and pixels of different paths (markers included) are
more than r apart. So flood fill over lit pixels with reach r joins the markers iff label = 1.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HEADING_OFFSETS = np.linspace(-np.pi, np.pi, 24, endpoint=False) + np.pi / 24  # symmetric, no exact reversal
DIFFICULTY = {6: "curv_baseline", 9: "curv_contour_length_9", 14: "curv_contour_length_14"}


@dataclass(frozen=True)
class Params:
    resolution: int
    paddle_length: float
    thickness: float
    margin: float
    marker_radius: float
    seed_distance: float
    continuity: float
    distractor_budget: int
    contrast: float  # snake contrast x paddle contrast, clipped to 1
    contour_length: int = 14
    padding: float = 1.0
    scale: int = 2

    @property
    def reach(self) -> int:
        """Output-pixel distance that bridges the gap between consecutive dashes (and that paths must exceed)."""
        return max(1, math.ceil(2 * self.margin / self.scale))

    def out(self, length: float) -> float:
        """A drawing-grid length in output pixels."""
        return length / self.scale


PRESETS = {  # docs/methods.md §G parameter table
    32: Params(32, paddle_length=2, thickness=0.5, margin=1, marker_radius=1.5, seed_distance=7, continuity=1.0,
               distractor_budget=20, contrast=2 * 0.75),
    64: Params(64, paddle_length=5, thickness=1, margin=1, marker_radius=2.5, seed_distance=12, continuity=1.8,
               distractor_budget=22, contrast=0.8 * 1),
    128: Params(128, paddle_length=5, thickness=1.5, margin=2, marker_radius=3, seed_distance=20, continuity=1.8,
                distractor_budget=35, contrast=0.9 * 1),
}


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1) x (2r+1) square (separable max filter)."""
    out = mask.copy()
    for axis in (0, 1):
        src, out = out, out.copy()
        n = src.shape[axis]
        for k in range(1, r + 1):
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(0, n - k), slice(k, n)
            out[tuple(lo)] |= src[tuple(hi)]
            out[tuple(hi)] |= src[tuple(lo)]
    return out


class Canvas:
    """A hi-res drawing grid (resolution * scale) whose strokes also report their footprint at output resolution."""

    def __init__(self, p: Params):
        self.p = p
        n = p.resolution * p.scale
        c = (np.arange(n) + 0.5) / p.scale  # hi-res pixel centres in output-pixel coordinates
        self.cy, self.cx = np.meshgrid(c, c, indexing="ij")

    def footprint(self, ink: np.ndarray) -> np.ndarray:
        r, s = self.p.resolution, self.p.scale
        return ink.reshape(r, s, r, s).any(axis=(1, 3))

    def segment(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Hi-res pixels within thickness/2 (at least half a hi-res pixel) of the segment a-b; points are (x, y)."""
        d = b - a
        t = np.clip(((self.cx - a[0]) * d[0] + (self.cy - a[1]) * d[1]) / max(d @ d, 1e-12), 0, 1)
        dist2 = (self.cx - a[0] - t * d[0]) ** 2 + (self.cy - a[1] - t * d[1]) ** 2
        return dist2 <= self.p.out(self.p.thickness / 2 + 0.5) ** 2

    def disc(self, c: np.ndarray, radius: float) -> np.ndarray:
        """Hi-res pixels within `radius` (drawing units, plus half a pixel) of c."""
        return (self.cx - c[0]) ** 2 + (self.cy - c[1]) ** 2 <= self.p.out(radius + 0.5) ** 2


@dataclass
class Path_:
    start: np.ndarray
    end: np.ndarray
    ink: np.ndarray  # hi-res bool
    fp: np.ndarray  # output-res bool


def inside(p: Params, *points: np.ndarray) -> bool:
    lo, hi = p.out(p.padding), p.resolution - p.out(p.padding)
    return all(lo <= q[0] <= hi and lo <= q[1] <= hi for q in points)


def grow_path(rng: np.random.Generator, canvas: Canvas, n_dashes: int, start: np.ndarray, blocked: np.ndarray) -> Path_ | None:
    """A chain of n_dashes dashes from `start` avoiding `blocked` output pixels, or None if it gets stuck."""
    p = canvas.p
    if not inside(p, start):
        return None
    theta = rng.uniform(0, 2 * np.pi)
    pos = start
    ink = np.zeros_like(canvas.cx, dtype=bool)
    old_fp = np.zeros((p.resolution,) * 2, dtype=bool)
    prev_fp = None
    first_weights = np.ones(len(HEADING_OFFSETS))
    turn_weights = np.maximum(np.cos(np.minimum(p.continuity * np.abs(HEADING_OFFSETS), np.pi / 2)), 0) ** 2
    for i in range(n_dashes):
        w = first_weights if i == 0 else turn_weights
        nz = np.flatnonzero(w > 1e-12)
        order = rng.choice(nz, size=len(nz), replace=False, p=w[nz] / w[nz].sum())
        for k in order:
            heading = theta + HEADING_OFFSETS[k]
            u = np.array([np.cos(heading), np.sin(heading)])
            end = pos + p.out(p.paddle_length) * u
            if not inside(p, end):
                continue
            dash = canvas.segment(pos, end)
            fp = canvas.footprint(dash)
            if (fp & (blocked | old_fp)).any():
                continue
            if prev_fp is not None and not (fp & dilate(prev_fp, p.reach)).any():
                continue
            break
        else:
            return None
        ink |= dash
        if prev_fp is not None:
            old_fp |= prev_fp
        prev_fp, theta, last_end = fp, heading, end
        pos = pos + p.out(p.paddle_length + 2 * p.margin) * u
    return Path_(start=start, end=last_end, ink=ink, fp=old_fp | prev_fp)


def random_point(rng: np.random.Generator, p: Params) -> np.ndarray:
    return rng.uniform(p.out(p.padding), p.resolution - p.out(p.padding), size=2)


def sample_image(rng: np.random.Generator, p: Params, label: int, max_tries: int = 200) -> tuple[np.ndarray, dict]:
    """One image (uint8 resolution x resolution) with the given label, and its marker centres (x, y)."""
    canvas = Canvas(p)
    r = p.reach
    for _ in range(max_tries):
        a = grow_path(rng, canvas, p.contour_length, random_point(rng, p), np.zeros((p.resolution,) * 2, bool))
        if a is None:
            continue
        phi = rng.uniform(0, 2 * np.pi)
        b = grow_path(rng, canvas, p.contour_length, a.start + p.out(p.seed_distance) * np.array([np.cos(phi), np.sin(phi)]),
                      dilate(a.fp, r))
        if b is None:
            continue
        if rng.random() < 0.5:
            a, b = b, a
        m1 = canvas.disc(a.start, p.marker_radius)
        m2 = canvas.disc(a.end if label else b.end, p.marker_radius)
        ink_a, ink_b = (a.ink | m1 | m2, b.ink) if label else (a.ink | m1, b.ink | m2)
        fp_a, fp_b = canvas.footprint(ink_a), canvas.footprint(ink_b)
        if (fp_b & dilate(fp_a, r)).any():
            continue
        targets = fp_a | fp_b
        distractor_ink = np.zeros_like(ink_a)
        distractor_fp = np.zeros_like(targets)
        n_dash = max(1, p.contour_length // 3)
        for _ in range(round(p.distractor_budget / n_dash)):
            for _attempt in range(5):
                d = grow_path(rng, canvas, n_dash, random_point(rng, p), dilate(targets, r) | distractor_fp)
                if d is not None:
                    distractor_ink |= d.ink
                    distractor_fp |= d.fp
                    break
        paths = (a.ink | b.ink | distractor_ink) * min(p.contrast, 1.0)
        hi = np.maximum(paths, (m1 | m2).astype(float))
        s = p.scale
        image = np.rint(hi.reshape(p.resolution, s, p.resolution, s).mean(axis=(1, 3)) * 255).astype(np.uint8)
        ends = (a.start, a.end if label else b.end)
        return image, {"markers": [float(v) for e in ends for v in e]}
    raise RuntimeError(f"pathfinder: could not place two paths in {max_tries} tries; the parameters leave no room")


def write_release(out_root: Path, resolution: int, contour_length: int, n: int, seed: int, batch_size: int = 1000,
                  progress=lambda done, total: None) -> dict:
    """Write `pathfinder<res>/<difficulty>/{imgs/<batch>/sample_<i>.png, metadata/<batch>.npy}` (release layout);
    `progress(done, n)` is called after every image.

    Metadata lines (text, despite `.npy`): `imgs/<batch> sample_<i>.png <i> <label> <x1> <y1> <x2> <y2>` with the
    marker centres appended after the release's first four fields. Labels are balanced by coin flip.
    """
    from PIL import Image

    from ssmbench.data.layout import write_marker

    if resolution not in PRESETS:
        raise ValueError(f"resolution must be one of {sorted(PRESETS)}")
    if contour_length not in DIFFICULTY:
        raise ValueError(f"contour_length must be one of {sorted(DIFFICULTY)}")
    p = Params(**{**asdict(PRESETS[resolution]), "contour_length": contour_length})
    folder = Path(out_root) / f"pathfinder{resolution}" / DIFFICULTY[contour_length]
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    labels = []
    for batch_start in range(0, n, batch_size):
        batch = batch_start // batch_size
        (folder / "imgs" / str(batch)).mkdir(parents=True, exist_ok=True)
        (folder / "metadata").mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(batch_start, min(n, batch_start + batch_size)):
            label = int(rng.integers(0, 2))
            image, info = sample_image(rng, p, label)
            Image.fromarray(image, mode="L").save(folder / "imgs" / str(batch) / f"sample_{i}.png")
            lines.append(" ".join([f"imgs/{batch}", f"sample_{i}.png", str(i), str(label)]
                                  + [f"{v:.3f}" for v in info["markers"]]))
            labels.append(label)
            progress(i + 1, n)
        tmp = folder / "metadata" / f".{batch}.npy.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(folder / "metadata" / f"{batch}.npy")
    write_marker(folder, "generated", f"Pathfinder-{resolution} generated by ssmbench (clean-room procedure)",
                 seed=seed, n=n, **asdict(p))
    return {"folder": str(folder), "n": n, "positive_fraction": float(np.mean(labels)),
            "seconds": round(time.perf_counter() - t0, 2)}
