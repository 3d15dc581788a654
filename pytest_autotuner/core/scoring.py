"""Objective values, per-cell SLO checks, penalties, feasibility and graded failure scores.

Scores are finite and direction-aware (Optuna handles the direction, no sign tricks):

- a measured configuration scores ``objective * (1 + P)`` when minimizing and ``objective / (1 + P)`` when
  maximizing, with ``P = sum(weight * (exp(ratio / steepness) - 1))`` over SLO checks that are over their
  threshold (``ratio = value / threshold - 1``). P is 0 at the threshold, so the score is continuous there.
- a hard SLO failure (``hard_fail`` and ``ratio > fail_ratio``) and a failed trial are infeasible: their
  Optuna constraint is positive. Failed trials get constraints above every SLO violation, graded by how far
  the trial got, so TPE's constraint-aware split still learns from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_autotuner.core.trial import FailureClass

if TYPE_CHECKING:
    from pytest_autotuner.core.metrics import BenchResult, CellMetrics
    from pytest_autotuner.core.spec import Optimization, Slo

__all__ = [
    "OBJECTIVE_METRICS",
    "SloCheck",
    "TrialScore",
    "check_slos",
    "objective_value",
    "score_failure",
    "score_result",
]

#: objective -> (cell metric, unit)
OBJECTIVE_METRICS: dict[str, tuple[str, str]] = {
    "minimize_latency": ("e2e", "s"),
    "maximize_throughput": ("output_throughput", "tok/s"),
    "minimize_ttft": ("ttft", "s"),
    "minimize_tpot": ("tpot", "s"),
}
_MAX_EXPONENT = 50.0  # exp(50) ~ 5e21: far worse than anything real, and still finite
_MAX_PROGRESS = max(fc.progress for fc in FailureClass)


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
        return self.weight * (math.exp(min(self.ratio / steepness, _MAX_EXPONENT)) - 1.0)


@dataclass(frozen=True)
class TrialScore:
    """What the study is told about one trial."""

    value: float  # finite, in the objective's direction
    objective: float | None  # unpenalized objective (None for a failed trial)
    penalty: float
    constraint: float  # <= 0 feasible; > 0 infeasible, larger = worse
    slo_checks: tuple[SloCheck, ...] = ()
    failure: FailureClass | None = None
    failure_message: str = ""

    @property
    def feasible(self) -> bool:
        return self.constraint <= 0

    @property
    def meets_slos(self) -> bool:
        return self.failure is None and all(c.passed for c in self.slo_checks)


def _cell_metric(cell: CellMetrics, metric: str, statistic: str = "mean") -> float:
    if metric == "output_throughput":
        return cell.output_throughput
    return cell.summary(metric).stat(statistic)


def objective_value(result: BenchResult, objective: str) -> float:
    """Mean over the (scenario, load) cells of the objective's metric (NaN when a cell has no samples)."""
    metric, _unit = OBJECTIVE_METRICS[objective]
    values = [_cell_metric(cell, metric) for cell in result.cells]
    return sum(values) / len(values) if values else math.nan


def check_slos(result: BenchResult, slo: Slo | None) -> list[SloCheck]:
    """Every SLO in every cell, computed from the cell's raw samples."""
    if slo is None:
        return []
    checks = []
    for cell in result.cells:
        for metric, statistic, limit in slo.checks():
            checks.append(
                SloCheck(
                    cell=cell.label,
                    metric=metric,
                    statistic=statistic,
                    value=_cell_metric(cell, metric, statistic),
                    threshold=limit.threshold,
                    weight=limit.weight,
                    hard_fail=limit.hard_fail,
                    fail_ratio=limit.fail_ratio,
                )
            )
    return checks


def score_result(result: BenchResult, optimization: Optimization, slo: Slo | None) -> TrialScore:
    """Score a measured configuration."""
    raw = objective_value(result, optimization.objective)
    if math.isnan(raw):
        return score_failure(
            FailureClass.BENCHMARK_ERRORS,
            optimization,
            "no request completed, so there is no objective value",
        )
    checks = check_slos(result, slo)
    steepness = slo.steepness if slo else 0.1
    penalty = min(sum(c.penalty(steepness) for c in checks), math.exp(_MAX_EXPONENT))
    value = raw * (1 + penalty) if optimization.direction == "minimize" else raw / (1 + penalty)
    hard = [c.ratio - c.fail_ratio for c in checks if c.hard_failed]
    # SLO violations map into (0, 1): always less infeasible than a failed trial (>= 1)
    constraint = max(e / (1 + e) if math.isfinite(e) else 0.999 for e in hard) if hard else 0.0
    return TrialScore(value, raw, penalty, constraint, tuple(checks))


def score_failure(failure: FailureClass, optimization: Optimization, message: str = "") -> TrialScore:
    """A finite score worse than any measured configuration, graded by how far the trial got."""
    shortfall = _MAX_PROGRESS - failure.progress  # 0 for the most advanced failures
    if optimization.direction == "maximize":
        value = -1.0 - shortfall  # throughput is never negative
    else:
        # no mean latency can exceed the trial's own time limit, penalties included
        ceiling = optimization.timeout_per_iteration * math.exp(_MAX_EXPONENT)
        value = ceiling * (2.0 + shortfall)
    return TrialScore(value, None, math.nan, 1.0 + shortfall, (), failure, message)
