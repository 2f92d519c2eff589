"""The uncertainty a table cell carries (docs/tuning.md "Statistics in the tables").

- 95 % bootstrap confidence interval of a cell's mean over seeds: scipy.stats.bootstrap, percentile method,
  BOOTSTRAP_RESAMPLES resamples from a fixed generator (so a table is a function of its records); none for n < 2.
- Against the baseline row, per task: the difference of means, the probability of improvement
  P(X > Y) + P(X = Y) / 2 for X a seed of the variant and Y a seed of the baseline, "better" meaning higher accuracy
  or lower loss (over all n_x n_y pairs; the Mann-Whitney U statistic divided by n_x n_y), and Welch's t-test
  p-value (scipy.stats.ttest_ind, equal_var=False; none when a side has n < 2 or both have zero variance).
- A failed seed: a classification run whose validation accuracy never left the chance level 1/C (C classes,
  results.json n_classes): its best validation accuracy is at most 1/C + FAILED_Z binomial standard errors
  sqrt(p (1 - p) / n_val) of an evaluation on n_val samples. Runs that do not record C are not judged.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional

import numpy as np

BOOTSTRAP_RESAMPLES = 9999
CONFIDENCE = 0.95
FAILED_Z = 3.0


def bootstrap_ci(values: list[float], level: float = CONFIDENCE) -> Optional[tuple[float, float]]:
    """Percentile bootstrap interval of the mean of `values` (None for fewer than 2 values)."""
    from scipy.stats import bootstrap

    a = np.asarray(values, dtype=float)
    if len(a) < 2:
        return None
    if np.all(a == a[0]):  # every resample has the same mean
        return float(a[0]), float(a[0])
    res = bootstrap((a,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=level, method="percentile",
                    rng=np.random.default_rng(0))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def prob_improvement(variant: list[float], baseline: list[float], higher_is_better: bool) -> Optional[float]:
    """P(a seed of the variant beats a seed of the baseline), ties counting one half (None if a side is empty)."""
    x, y = np.asarray(variant, dtype=float), np.asarray(baseline, dtype=float)
    if not len(x) or not len(y):
        return None
    d = (x[:, None] - y[None, :]) * (1 if higher_is_better else -1)
    return float(((d > 0) + 0.5 * (d == 0)).mean())


def welch_p(variant: list[float], baseline: list[float]) -> Optional[float]:
    """Two-sided p-value of Welch's t-test of equal means (None where it is undefined)."""
    from scipy.stats import ttest_ind

    if len(variant) < 2 or len(baseline) < 2 or (np.var(variant) == 0 and np.var(baseline) == 0):
        return None
    with warnings.catch_warnings():  # nearly equal values: scipy warns of precision loss, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_ind(variant, baseline, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def chance_threshold(n_classes: int, n_val: int) -> float:
    """The highest validation accuracy that still counts as the chance level (see the module docstring)."""
    p = 1.0 / n_classes
    return p + FAILED_Z * math.sqrt(p * (1 - p) / max(n_val, 1))


def failed_seed(results: dict, val_accuracies: list[float]) -> Optional[bool]:
    """Whether a finished classification run never left the chance level (None: not a classification run, or its
    class count or validation accuracy is not recorded)."""
    n_classes = results.get("n_classes")
    best = max(val_accuracies, default=None)
    if best is None:
        best = (results.get("best_val") or {}).get("accuracy")
    n_val = ((results.get("evaluation") or {}).get("val") or {}).get("n")
    if not isinstance(n_classes, int) or n_classes < 2 or not isinstance(best, (int, float)) or not isinstance(n_val, int):
        return None
    return best <= chance_threshold(n_classes, n_val)
