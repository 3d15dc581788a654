"""One SLO judged in one cell (or one capacity step's pooled measurements): ``SloCheck``.

Its own module so that the capacity ladder (``capacity.py``), which judges steps, and the scoring
(``scoring.py``), which judges trials, build the same checks without importing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_autotuner.core.spec.benchmark_settings import SloMetric

__all__ = ["MAX_EXPONENT", "SloCheck"]

MAX_EXPONENT = 50.0  # exp(50) ~ 5e21: far worse than anything real, and still finite


@dataclass(frozen=True)
class SloCheck:
    """One SLO in one (scenario, load) cell."""

    cell: str
    metric: str  # e2e | ttft | tpot
    statistic: str  # mean | p50 | p90 | p95 | p99
    value: float  # seconds
    threshold: float  # seconds
    weight: float
    hard_fail: bool
    fail_ratio: float
    censored: int = 0  # requests still running when the cell ended, in the statistic at their wait (a bound)

    @classmethod
    def against(
        cls, limit: SloMetric, cell: str, metric: str, statistic: str, value: float, censored: int = 0
    ) -> SloCheck:
        """``value`` of ``metric``'s ``statistic`` in ``cell`` judged against the spec's ``limit``."""
        return cls(cell, metric, statistic, value, limit.threshold, limit.weight, limit.hard_fail, limit.fail_ratio,
                   censored)  # fmt: skip

    @property
    def name(self) -> str:
        return f"{self.metric} {self.statistic}"

    @property
    def ratio(self) -> float:
        """How far over the threshold, relative: 0.1 = 10% over; negative = under."""
        if math.isnan(self.value):
            return math.inf  # no samples: nothing met the SLO
        return self.value / self.threshold - 1.0

    @property
    def margin(self) -> float:
        """Seconds left below the threshold (negative when over)."""
        return self.threshold - self.value

    @property
    def passed(self) -> bool:
        return self.ratio <= 0

    @property
    def hard_failed(self) -> bool:
        return self.hard_fail and self.ratio > self.fail_ratio

    def penalty(self, steepness: float) -> float:
        if self.ratio <= 0:
            return 0.0
        return self.weight * (math.exp(min(self.ratio / steepness, MAX_EXPONENT)) - 1.0)
