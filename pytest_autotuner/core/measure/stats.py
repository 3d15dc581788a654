"""The significance tests behind every "better" or "worse" the tool prints.

One test serves the baseline gate and the comparison with SGLang's defaults: a one-sided two-sample t-test on
per-run values, where each run is one server launch (the independent unit: requests within one run share that
launch's conditions, so a test over pooled requests would be overconfident). Holm's step-down adjustment keeps
the family-wise error at ``ALPHA`` when many (metric, cell) pairs are tested at once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["ALPHA", "holm", "p_worse"]

ALPHA = 0.05


def p_worse(base: Sequence[float], now: Sequence[float], *, higher_is_worse: bool) -> float:
    """One-sided p-value for "``now`` is worse than ``base``" over per-run values (NaN below 2 runs a side).

    Pooled variance: both sides are launches of a server under the same conditions, and at n ~ 3 the degrees of
    freedom ``n1 + n2 - 2`` matter. Noise-free samples (both sides constant) give 0 or 1: the change is certain.
    """
    from scipy.stats import ttest_ind

    if len(base) < 2 or len(now) < 2:
        return math.nan
    mean_base, mean_now = float(np.mean(base)), float(np.mean(now))
    if np.std(base) == 0 and np.std(now) == 0:
        return 0.0 if mean_now != mean_base and (mean_now > mean_base) == higher_is_worse else 1.0
    alternative = "greater" if higher_is_worse else "less"
    with warnings.catch_warnings():  # nearly equal runs (a deterministic server): the test still answers right
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        return float(ttest_ind(list(now), list(base), equal_var=True, alternative=alternative).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (NaN stays NaN and does not count as a test)."""
    m = sum(not math.isnan(p) for p in p_values)
    order = sorted(range(len(p_values)), key=lambda i: (math.isnan(p_values[i]), p_values[i]))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        if math.isnan(p_values[i]):
            continue
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
