"""Early stopping inside a trial: after each cell, can this trial still become the best? If not, stop it.

The session installs a ``PruningRule`` on each search trial's ``Deadline`` (``Deadline.report_cell`` calls it
after every finished cell) with the best complete trial so far. A trial is pruned when it cannot win:

(a) **hard SLO**: a cell already breaks a hard SLO beyond its ``fail_ratio``, so the trial is infeasible
    whatever its other cells measure, while a complete trial that met every hard SLO is known. ``rank_key``
    ranks every feasible trial above every infeasible one, so this trial cannot become the best. Cells run
    heaviest load first by default (``BenchmarkPlan.cells``): SLOs break under load. Before any feasible trial
    is known, an infeasible trial may still end up the least bad one (what the report and the SLO verdict then
    show), so it is measured to the end.
(b) **margin**: the trial's partial score, over the cells measured so far, is worse than the best feasible
    trial's score over the same cells by more than ``optimization.prune_margin`` (0.5: 50% worse; ratio form,
    ``value > best * (1 + m)`` when minimizing, ``value < best / (1 + m)`` when maximizing). Comparing like with
    like matters: a throughput objective is lower at light loads, so a partial score set against the best's
    complete score would prune good trials.

Scores are those of ``scoring.score_result`` (objective mean over cells, SLO penalties), computed on the cells'
stored aggregates (``CellSummary``), so a resumed study's best trial serves as well as one measured now. A trial
with every cell measured is never pruned: nothing is left to save, and its real score tells the sampler more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_autotuner.core.measure.formatting import format_objective
from pytest_autotuner.core.measure.metrics import CellSummary
from pytest_autotuner.core.measure.scoring import OBJECTIVE_METRICS, SloCheck

if TYPE_CHECKING:
    from pytest_autotuner.core.spec.benchmark_settings import Slo
    from pytest_autotuner.core.spec.optimization import Optimization
    from pytest_autotuner.core.spec.task_spec import TaskSpec

__all__ = ["BestSoFar", "PruningRule", "partial_value", "plan_cells", "prune_reason"]

_MAX_EXPONENT = 50.0  # as scoring.py: a finite ceiling on penalties


@dataclass(frozen=True)
class BestSoFar:
    """The best complete trial a pruning decision compares with."""

    number: int
    value: float  # its score (``TrialScore.value``)
    feasible: bool  # met every hard SLO
    cells: tuple[CellSummary, ...]


def plan_cells(spec: TaskSpec) -> int:
    """How many cells one benchmark of ``spec`` runs (scenarios x loads)."""
    bench = spec.benchmark
    return len(bench.traffic_scenarios) * (len(bench.num_concurrency) + len(bench.request_rates))


def _checks(cells: Sequence[CellSummary], slo: Slo | None) -> list[SloCheck]:
    if slo is None:
        return []
    return [
        SloCheck(
            cell=cell.label,
            metric=metric,
            statistic=statistic,
            value=cell.value(metric, statistic),
            threshold=limit.threshold,
            weight=limit.weight,
            hard_fail=limit.hard_fail,
            fail_ratio=limit.fail_ratio,
        )
        for cell in cells
        for metric, statistic, limit in slo.checks()
    ]


def partial_value(cells: Sequence[CellSummary], optimization: Optimization, slo: Slo | None) -> float:
    """``score_result``'s value over ``cells`` only (NaN when the objective is unknown in a cell)."""
    metric, _unit = OBJECTIVE_METRICS[optimization.objective]
    values = [cell.value(metric, "mean") for cell in cells]
    if not values or any(math.isnan(v) for v in values):
        return math.nan
    raw = sum(values) / len(values)
    steepness = slo.steepness if slo else 0.1
    penalty = min(sum(c.penalty(steepness) for c in _checks(cells, slo)), math.exp(_MAX_EXPONENT))
    return raw * (1 + penalty) if optimization.direction == "minimize" else raw / (1 + penalty)


def prune_reason(
    cells: Sequence[CellSummary],
    *,
    optimization: Optimization,
    slo: Slo | None,
    total_cells: int,
    best: BestSoFar | None,
) -> str | None:
    """Why a trial with these measured ``cells`` cannot win (see the module docstring), or None to go on."""
    if not cells or len(cells) >= total_cells or best is None or not best.feasible:
        return None
    for check in _checks(cells, slo):
        if check.hard_failed:
            over = "no samples" if math.isinf(check.ratio) else f"{check.ratio:+.0%} of {check.threshold:g} s"
            return (
                f"cell {check.cell}: {check.name} {over}, beyond the hard SLO's fail_ratio {check.fail_ratio:g}; "
                f"trial #{best.number} met every hard SLO"
            )
    margin = optimization.prune_margin
    if margin is None:
        return None
    by_key = {c.key: c for c in best.cells}
    if any(c.key not in by_key for c in cells):
        return None  # the best measured other cells (a resumed study with another plan): nothing to compare
    mine = partial_value(cells, optimization, slo)
    theirs = partial_value([by_key[c.key] for c in cells], optimization, slo)
    if math.isnan(mine) or math.isnan(theirs):
        return None
    minimize = optimization.direction == "minimize"
    worse = mine > theirs * (1 + margin) if minimize else mine < theirs / (1 + margin)
    if not worse:
        return None
    objective = optimization.objective
    labels = ", ".join(c.label for c in cells)
    return (
        f"score {format_objective(mine, objective)} after {labels} is more than {margin:.0%} worse than "
        f"trial #{best.number}'s {format_objective(theirs, objective)} there (optimization.prune_margin)"
    )


@dataclass(frozen=True)
class PruningRule:
    """The rule ``Deadline.report_cell`` applies (a ``CellRule``); picklable, so it can travel to a process."""

    optimization: Optimization
    slo: Slo | None
    total_cells: int
    best: BestSoFar | None

    def __call__(self, cells: Sequence[CellSummary]) -> str | None:
        return prune_reason(
            cells,
            optimization=self.optimization,
            slo=self.slo,
            total_cells=self.total_cells,
            best=self.best,
        )
