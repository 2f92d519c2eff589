"""PNG figures from run records (matplotlib, Agg backend), sized to be read at paper column width.

- `learning-<task>.png`: validation accuracy (or loss) vs optimizer step: per table row (variant) and training
  fraction the mean over seeds with a band of ± one sample std (at the steps every seed evaluated); colour = row,
  line style and marker = fraction.
- `efficiency-<task>.png`: median over seeds of the test loss (and accuracy) vs `data.train_fraction`.
- `poles-<task>-<variant>.png`: eigenvalues of A (all S4D layers) in the complex plane, at init and at the end.
- `tdi-spectrum-<task>-<variant>.png`: task vs model power spectrum (env.json init.tdi), normalized to unit l2.

Each `*_figure` function returns the Figure so tests can compare the plotted points with the run record.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ssmbench.report.cells import cell_runs  # noqa: E402
from ssmbench.report.records import RunRecord, parameters_at_init_and_end  # noqa: E402
from ssmbench.report.tables import (TASK_ORDER, VARIANT_ORDER, efficiency_value, finished_rows, group_runs,  # noqa: E402
                                    ordered)

STYLE = {"figure.figsize": (5.0, 3.4), "figure.dpi": 150, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
         "legend.fontsize": 8, "legend.frameon": False}


def colours(labels: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {v: cmap(i % 10) for i, v in enumerate(ordered(labels, VARIANT_ORDER))}


FRACTION_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1)), "v"), ((0, (1, 3)), "P")]


def mean_band(curves: list[tuple[list[int], list[float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, sample std) over runs at the steps every run evaluated (std 0 for a single run)."""
    common = sorted(set.intersection(*(set(steps) for steps, _ in curves)))
    values = np.array([[dict(zip(steps, vals))[s] for s in common] for steps, vals in curves], dtype=float)
    std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(len(common))
    return np.asarray(common), values.mean(axis=0), std


def learning_curves_figure(records: list[RunRecord], task: str, group_by: str = "variant") -> Optional[Figure]:
    """Validation accuracy (%) for classification, else validation loss, vs step; mean ± std over seeds per table
    row and training fraction (one run per seed, as in the tables)."""
    rows = finished_rows(records, group_by)
    runs_ = [r for r in records if r.finished and r.test and r.task == task]
    key = "accuracy" if all(r.kind == "classification" for r in runs_) else "loss"
    runs_ = [r for r in runs_ if r.curve("val", key)[0]]
    if not runs_:
        return None
    cells = cell_runs(runs_, lambda r: (rows.of(r), r.train_fraction))
    col = colours([row for row, _ in cells])
    fractions = sorted({f for _, f in cells}, reverse=True)
    scale = 100 if key == "accuracy" else 1
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for row in col:
            for f in fractions:
                if (row, f) not in cells:
                    continue
                group = cells[(row, f)].runs
                steps, mean, std = mean_band([r.curve("val", key) for r in group])
                ls, marker = FRACTION_STYLES[fractions.index(f) % len(FRACTION_STYLES)]
                label = row + (f", {100 * f:g}% of train" if len(fractions) > 1 else "") + f" (n={len(group)})"
                ax.plot(steps, mean * scale, ls=ls, marker=marker, ms=3, lw=1.3, color=col[row], label=label)
                if len(group) > 1:
                    ax.fill_between(steps, (mean - std) * scale, (mean + std) * scale, color=col[row], alpha=0.18, lw=0)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("validation accuracy (%)" if key == "accuracy" else "validation loss")
        ax.set_title(f"{task}: validation {key}, mean ± std over seeds")
        ax.legend(title=group_by, fontsize=7)
        fig.set_layout_engine("constrained")  # never the "tight_layout not applied" warning
    return fig


def efficiency_figure(records: list[RunRecord], task: str, group_by: str = "variant", window: int = 0) -> Optional[Figure]:
    """Median over seeds of the test loss (left) and accuracy (right, classification) vs training fraction."""
    rows = finished_rows(records, group_by)
    runs_ = [r for r in records if r.finished and r.test and r.task == task]
    if len({r.train_fraction for r in runs_}) < 2:
        return None
    keys = ["loss"] + (["accuracy"] if all(r.kind == "classification" for r in runs_) else [])
    col = colours([rows.of(r) for r in runs_])
    groups = group_runs(runs_, rows.of)
    what = f"last-{window}-eval mean val" if window > 0 else "test"
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
        for ax, key in zip(axes[0], keys):
            for label in ordered(groups, VARIANT_ORDER):
                by_frac = cell_runs(groups[label], lambda r: r.train_fraction)
                xs, ys = [], []
                for f in sorted(by_frac):
                    vals = [v for v in (efficiency_value(r, key, window) for r in by_frac[f].runs) if v is not None]
                    if vals:
                        xs.append(f)
                        ys.append(float(np.median(vals)) * (100 if key == "accuracy" else 1))
                ax.plot(xs, ys, marker="o", color=col[label], label=label)
            ax.set_xscale("log")
            fractions = sorted({r.train_fraction for r in runs_})
            ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
            ax.minorticks_off()
            ax.set_xlabel("fraction of the training set")
            ax.set_ylabel(f"median {what} " + ("accuracy (%)" if key == "accuracy" else "loss"))
        axes[0][0].legend(title=group_by)
        budgets = {r.tags.get("budget") for r in runs_}
        rule = {"epochs": "; same epochs at every fraction", "steps": "; same optimizer steps at every fraction"}
        fig.suptitle(f"{task}: data efficiency (median over seeds"
                     + (rule.get(budgets.pop(), "") if len(budgets) == 1 else "") + ")")
        fig.set_layout_engine("constrained")  # never the "tight_layout not applied" warning
    return fig


def poles_figure(init: dict, end: dict, title: str) -> Figure:
    """Eigenvalues A = Re(A) + i Im(A) of the S4D layers at initialization and at the end of training."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        ax.scatter(init["Re(A)"], init["Im(A)"], s=16, facecolors="none", edgecolors="tab:blue", lw=0.8,
                   zorder=3, label="init")
        ax.scatter(end["Re(A)"], end["Im(A)"], s=6, color="tab:red", alpha=0.6, zorder=2, label="end of training")
        ax.axvline(0.0, color="black", lw=0.6)
        ax.set_yscale("symlog", linthresh=1.0)
        im = np.concatenate([init["Im(A)"], end["Im(A)"]])
        ax.set_ylim(min(-1.0, 2 * im.min()), max(1.0, 2 * im.max()))  # symlog autoscaling clips the top row
        re = np.concatenate([init["Re(A)"], end["Re(A)"]])
        lo, hi = min(float(re.min()), 0.0), max(float(re.max()), 0.0)  # always show the stability boundary Re = 0
        pad = 0.08 * (hi - lo) or 0.5
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_xlabel("Re(A)")
        ax.set_ylabel("Im(A) (symlog)")
        ax.set_title(title)
        ax.legend()
        fig.set_layout_engine("constrained")  # never the "tight_layout not applied" warning
    return fig


def spectrum_figure(tdi: dict, title: str) -> Optional[Figure]:
    """Task and model power spectra over the one-sided frequency bins, each scaled to unit l2 norm (docs/methods.md §C)."""
    def loss(key: str) -> str:
        return f" (L_PSM {tdi[key]:.3g})" if isinstance(tdi.get(key), (int, float)) else ""

    curves = [(k, lbl) for k, lbl in (("task_spectrum", "task P_task"),
                                      ("model_spectrum_before", "model before PSM" + loss("loss_before")),
                                      ("model_spectrum_after", "model after PSM" + loss("loss_after"))) if tdi.get(k)]
    if not curves:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        for key, label in curves:
            p = np.asarray(tdi[key], dtype=float)
            ax.plot(np.arange(len(p)), p / (np.linalg.norm(p) or 1.0), lw=1.0, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("frequency bin k (ω = 2πk/L)")
        ax.set_ylabel("normalized power")
        ax.set_title(title)
        ax.legend()
        fig.set_layout_engine("constrained")  # never the "tight_layout not applied" warning
    return fig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _save(fig: Optional[Figure], path: Path, written: list[Path]) -> None:
    """Write a figure. Its layout engine (constrained) may give up on a crowded figure (many long legend labels):
    the figure is then drawn as laid out, without matplotlib's warning (an internal path and line) in the report."""
    if fig is None:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(layout not applied|Tight layout not applied)", category=UserWarning)
        fig.savefig(path)
    plt.close(fig)
    written.append(path)


def write_plots(records: list[RunRecord], out_dir: Path, group_by: str = "variant", window: int = 0) -> list[Path]:
    """Write every figure the records support into `out_dir`; return the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    done = [r for r in records if r.finished]
    rows = finished_rows(records, group_by)
    for task in ordered({r.task for r in done}, TASK_ORDER):
        _save(learning_curves_figure(done, task, group_by), out_dir / f"learning-{_slug(task)}.png", written)
        _save(efficiency_figure(done, task, group_by, window), out_dir / f"efficiency-{_slug(task)}.png", written)
        # One representative run per variant (the first by seed, then run directory) for poles and spectra.
        groups = group_runs([r for r in done if r.task == task and r.test and r.train_fraction == 1.0], rows.of)
        for label in ordered(groups, VARIANT_ORDER):
            first = min(groups[label], key=lambda r: (r.seed if r.seed is not None else 0, str(r.run_dir)))
            pair = parameters_at_init_and_end(first)
            if pair is not None:
                _save(poles_figure(*pair, f"{task}, {label} (seed {first.seed}): eigenvalues of A"),
                      out_dir / f"poles-{_slug(task)}-{_slug(label)}.png", written)
            tdi = (first.env.get("init") or {}).get("tdi")
            if isinstance(tdi, dict):
                _save(spectrum_figure(tdi, f"{task}, {label}: TDI power spectra"),
                      out_dir / f"tdi-spectrum-{_slug(task)}-{_slug(label)}.png", written)
    return written
