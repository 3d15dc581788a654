"""When a cell has measured enough: the 95% confidence interval of the objective's metric is narrow enough.

``benchmark.precision`` p (e.g. 0.02) stops a cell once the 95% confidence interval of its objective metric has a
half-width within p of the estimate, after ``benchmark.min_requests_for_precision`` completed requests (and at
least one per concurrent stream, so a closed loop's first wave, which all arrives at once, is not the whole
sample). The cell's other limits (``max_requests_per_iteration``, ``max_time_per_iteration``) still hold.

What is estimated:

- latency objectives (E2E, TTFT, TPOT): the mean over requests; half-width ``1.96 s / sqrt(n)`` (normal
  approximation of the mean, fine from a few tens of requests);
- throughput: the ratio of means ``sum(output tokens) / sum(E2E)`` over completed requests. In a closed loop at
  concurrency c, Little's law makes the cell's throughput ``c * E[tokens] / E[E2E]``, so the ratio's relative
  precision is the throughput's; its half-width comes from the delta method,
  ``R * 1.96 * sqrt((s_x^2/x^2 + s_y^2/y^2 - 2 s_xy/(x y)) / n)``. Per-request tokens/E2E would estimate the mean
  per-stream speed, which weights short requests too much; batch means need many batches before their
  variance means anything. In an open loop the throughput is set by the arrival rate while the server keeps up,
  and the ratio then measures how fast requests are served, the part that differs between configurations.

Everything here is pure and incremental (running sums), so the client can test after every request.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from pytest_autotuner.core.spec.objectives import OBJECTIVE_DEFS

__all__ = ["PRECISION_METRICS", "Z_95", "PrecisionTracker", "ratio_relative_half_width", "relative_half_width"]

Z_95 = 1.959963984540054

#: objective -> what the precision rule estimates
PRECISION_METRICS: dict[str, str] = {
    name: d.precision_metric for name, d in OBJECTIVE_DEFS.items() if d.precision_metric is not None
}


def relative_half_width(values: Iterable[float]) -> float:
    """Half-width of the 95% confidence interval of the mean, relative to the mean (inf below two values)."""
    tracker = PrecisionTracker("e2e", precision=0.0, min_requests=0)
    for v in values:
        tracker.add_values(v, 0.0)
    return tracker.half_width


def ratio_relative_half_width(numerators: Iterable[float], denominators: Iterable[float]) -> float:
    """Relative 95% half-width of ``sum(numerators) / sum(denominators)`` (delta method; inf below two pairs)."""
    tracker = PrecisionTracker("throughput", precision=0.0, min_requests=0)
    for x, y in zip(numerators, denominators, strict=True):
        tracker.add_values(x, y)
    return tracker.half_width


@dataclass
class PrecisionTracker:
    """Running sums of one cell's samples; ``add`` returns True once the cell is precise enough to stop."""

    metric: str  # e2e | ttft | tpot | throughput
    precision: float  # relative half-width to reach
    min_requests: int  # completed requests before the rule may stop the cell
    n: int = 0
    sx: float = 0.0
    sxx: float = 0.0
    sy: float = 0.0
    syy: float = 0.0
    sxy: float = 0.0

    def add(self, value: float | None, tokens: int = 0, e2e: float | None = None) -> bool:
        """One completed request: its metric ``value`` (latency objectives) or ``tokens`` and ``e2e``
        (throughput); None values (e.g. no TPOT for a one-token answer) are skipped. True when precise enough."""
        if self.metric == "throughput":
            if e2e is not None and e2e > 0:
                self.add_values(float(tokens), e2e)
        elif value is not None:
            self.add_values(value, 0.0)
        return self.precise

    def add_values(self, x: float, y: float) -> None:
        self.n += 1
        self.sx += x
        self.sxx += x * x
        self.sy += y
        self.syy += y * y
        self.sxy += x * y

    @property
    def precise(self) -> bool:
        return self.n >= max(2, self.min_requests) and self.half_width <= self.precision

    @property
    def half_width(self) -> float:
        """Achieved relative half-width of the 95% interval (inf below two samples or at a zero estimate)."""
        n = self.n
        if n < 2:
            return math.inf
        mx = self.sx / n
        var_x = max(0.0, (self.sxx - n * mx * mx) / (n - 1))
        if self.metric != "throughput":
            return Z_95 * math.sqrt(var_x / n) / abs(mx) if mx != 0 else math.inf
        my = self.sy / n
        if mx == 0 or my == 0:
            return math.inf
        var_y = max(0.0, (self.syy - n * my * my) / (n - 1))
        cov = (self.sxy - n * mx * my) / (n - 1)
        rel_var = max(0.0, var_x / mx**2 + var_y / my**2 - 2 * cov / (mx * my)) / n
        return Z_95 * math.sqrt(rel_var)
