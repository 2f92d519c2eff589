"""The uncertainty in the report's tables (ssmbench/report/stats.py) against independent computations, and failed
seeds counted and shown in every format."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from ssmbench import runs
from ssmbench.report import build_tables, report
from ssmbench.report.records import read_runs
from ssmbench.report.stats import (bootstrap_ci, chance_threshold, failed_seed, prob_improvement, welch_p)
from ssmbench.report.tables import to_json
from test_report import write_run


def exact_bootstrap_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the exact bootstrap distribution: every one of the n^n resamples, equally likely."""
    means = np.sort([np.mean(c) for c in itertools.product(values, repeat=len(values))])
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


@pytest.mark.parametrize("values", [[84.95, 84.75, 83.0, 78.2], [0.5, 0.9, 0.4, 0.7, 0.65]])
def test_bootstrap_interval_matches_the_exact_bootstrap_distribution(values: list[float]) -> None:
    lo, hi = bootstrap_ci(values)
    exact_lo, exact_hi = exact_bootstrap_ci(values)
    spread = max(values) - min(values)
    assert abs(lo - exact_lo) < 0.03 * spread and abs(hi - exact_hi) < 0.03 * spread  # Monte Carlo error only
    assert lo < np.mean(values) < hi and bootstrap_ci(values) == (lo, hi)  # deterministic
    assert bootstrap_ci([3.0]) is None and bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_probability_of_improvement_is_the_mann_whitney_u_over_all_pairs() -> None:
    x, y = [0.9, 0.8, 0.8, 0.7], [0.8, 0.6, 0.75]
    u = sps.mannwhitneyu(x, y, alternative="two-sided").statistic  # counts pairs with x > y, ties one half
    assert prob_improvement(x, y, True) == pytest.approx(u / (len(x) * len(y)))
    brute = sum((a > b) + 0.5 * (a == b) for a in x for b in y) / 12
    assert prob_improvement(x, y, True) == pytest.approx(brute)
    assert prob_improvement(x, y, False) == pytest.approx(1 - brute)  # lower is better (losses)
    assert prob_improvement([], y, True) is None


def test_welch_p_matches_the_formula() -> None:
    x, y = np.array([84.95, 84.75, 83.0]), np.array([78.2, 80.1, 79.0, 81.5])
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    t = (x.mean() - y.mean()) / math.sqrt(vx + vy)
    dof = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))  # Welch-Satterthwaite
    assert welch_p(list(x), list(y)) == pytest.approx(2 * sps.t.sf(abs(t), dof), rel=1e-10)
    assert welch_p([1.0], [2.0, 3.0]) is None and welch_p([1.0, 1.0], [2.0, 2.0]) is None


def test_a_failed_seed_never_left_the_chance_level() -> None:
    # Binary task, 400 validation samples: chance 0.5, threshold 0.5 + 3 sqrt(0.25 / 400) = 0.575.
    assert chance_threshold(2, 400) == pytest.approx(0.575)
    res = {"n_classes": 2, "evaluation": {"val": {"n": 400}}}
    assert failed_seed(res, [0.49, 0.52, 0.51]) is True
    assert failed_seed(res, [0.50, 0.58, 0.55]) is False  # left chance once: it learned something
    assert failed_seed({**res, "n_classes": 10}, [0.12, 0.14]) is True  # 10 classes: 0.1 + 0.045
    assert failed_seed({"evaluation": {"val": {"n": 400}}}, [0.5]) is None  # class count not recorded
    assert failed_seed({**res, "best_val": {"accuracy": 0.9}}, []) is False  # no curve: the best validation value


def pathx_like(root: Path) -> None:
    """A binary task where 2 of the alpha seeds stay at 50 % (Path-X stuck), beside a baseline that learns."""
    def run(name, variant, seed, acc, curve):
        d = write_run(root, name, variant, "pathx", seed, acc=acc, val=[(i, 0.7, a) for i, a in enumerate(curve, 1)])
        res = runs.read_json(d / runs.RESULTS)
        runs.atomic_write_json(d / runs.RESULTS, {**res, "n_classes": 2, "evaluation": {**res["evaluation"],
                                                                                      "val": {"n": 400, "size": 400}}})

    for seed, acc in enumerate((0.80, 0.78, 0.82)):
        run(f"b{seed}", "s4d", seed, acc, [0.6, acc])
    for seed, (acc, curve) in enumerate(((0.90, [0.7, 0.9]), (0.50, [0.50, 0.51]), (0.49, [0.52, 0.49]))):
        run(f"a{seed}", "alpha", seed, acc, curve)


def test_failed_seeds_and_the_baseline_comparison_in_every_format(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    pathx_like(root)
    tables = build_tables(read_runs([root]))
    main, versus = tables[0], tables[1]
    alpha = main.rows[1][1]
    assert alpha.text.startswith("63.00 ± 23.39 (3, 2 failed) [")  # shown, and counted in n and the mean
    assert alpha.value["failed"] == 2 and alpha.value["failed_rate"] == pytest.approx(2 / 3)
    assert alpha.value["mean_learned"] == pytest.approx(90.0)
    assert main.rows[0][1].value["failed"] == 0 and "(3) [" in main.rows[0][1].text
    assert any(n.startswith("k failed: runs whose validation accuracy never left the chance level 1/C") for n in main.notes)
    vs = alpha.value["vs_baseline"]
    assert vs["difference"] == pytest.approx(63.0 - 80.0)
    assert vs["p_improvement"] == pytest.approx(3 / 9)  # 90 beats all three baseline seeds, 50 and 49 none
    assert vs["welch_p"] == pytest.approx(sps.ttest_ind([90, 50, 49], [80, 78, 82], equal_var=False).pvalue)
    assert versus.title == "Against the baseline (s4d)" and versus.rows[0][1].text.startswith("-17.00, P 0.33, p 0.")
    assert "two-sided Welch t-test" in versus.notes[0]
    data = json.loads(to_json(tables))
    cell = data[0]["rows"][1]["pathx (acc %)"]["value"]
    assert cell["failed"] == 2 and len(cell["ci"]) == 2 and cell["vs_baseline"]["welch_p"] == pytest.approx(vs["welch_p"])
    out = tmp_path / "runs.csv"
    report([root], runs_csv=out)
    rows = [r for r in csv.DictReader(io.StringIO(out.read_text())) if r["metric"] == "accuracy"]
    assert sorted((r["variant"], r["seed"], r["failed_seed"]) for r in rows) == [
        ("alpha", "0", "False"), ("alpha", "1", "True"), ("alpha", "2", "True"),
        ("s4d", "0", "False"), ("s4d", "1", "False"), ("s4d", "2", "False")]
    a = next(r for r in rows if r["variant"] == "alpha")
    assert a["cell_failed"] == "2" and a["cell_n"] == "3" and a["baseline"] == "s4d"
    assert float(a["cell_mean"]) == pytest.approx(0.63) and float(a["p_improvement"]) == pytest.approx(1 / 3)
    assert float(a["cell_ci_low"]) < 0.63 < float(a["cell_ci_high"])
