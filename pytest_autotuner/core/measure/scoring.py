"""Objective values, per-cell SLO checks, penalties, feasibility and graded failure scores.

Scores are finite and direction-aware (Optuna handles the direction, no sign tricks):

- a measured configuration scores ``objective * (1 + P)`` when minimizing and ``objective / (1 + P)`` when
  maximizing, with ``P = sum(weight * (exp(ratio / steepness) - 1))`` over SLO checks that are over their
  threshold (``ratio = value / threshold - 1``). P is 0 at the threshold, so the score is continuous there.
- a hard SLO failure (``hard_fail`` and ``ratio > fail_ratio``) and a failed trial are infeasible: their
  Optuna constraint is positive. Failed trials get constraints above every SLO violation, graded by how far
  the trial got, so TPE's constraint-aware split still learns from them.

``maximize_goodput`` (``core/measure/capacity.py``): the objective is the capacity the load ladder found (mean over
repeat runs), with no penalty (the SLOs define it); its SLO checks are those of each run's highest held step, or
of its lowest step when none held (then the trial misses its SLOs, scores 0 and is infeasible). Among several
objectives (``optimization.objectives``) the others are averaged over the fixed cells only (``fixed_cells``: the
spec's own loads, never the ladder's steps), whose SLO checks give the penalty (applied to them, not to the
capacity) and the hard-SLO constraint; a ladder that held no load adds its lowest step's checks and makes the trial
infeasible, as alone.

``optimization.per_gpu``: objectives marked ``per_gpu`` in ``core/spec/objectives.py`` (throughput, goodput) are
divided by the GPUs the configuration uses (``gpus`` passed by the caller: tp x dp x pp of its flags).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pytest_autotuner.core.measure.capacity import mean_capacity
from pytest_autotuner.core.measure.slo_check import MAX_EXPONENT as _MAX_EXPONENT
from pytest_autotuner.core.measure.slo_check import SloCheck
from pytest_autotuner.core.measure.trial import FailureClass
from pytest_autotuner.core.spec.objectives import OBJECTIVE_DEFS, objective_direction

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.capacity import CapacityResult, Step
    from pytest_autotuner.core.measure.metrics import BenchResult, CellMetrics
    from pytest_autotuner.core.spec.benchmark_settings import Slo
    from pytest_autotuner.core.spec.optimization import Optimization

__all__ = [
    "OBJECTIVE_METRICS",
    "SloCheck",
    "TrialScore",
    "cell_checks",
    "check_slos",
    "fixed_cells",
    "gpu_divisor",
    "objective_value",
    "rank_key",
    "rank_number",
    "score_failure",
    "score_result",
]

#: objective -> (cell metric, unit)
OBJECTIVE_METRICS: dict[str, tuple[str, str]] = {name: (d.metric, d.unit) for name, d in OBJECTIVE_DEFS.items()}
_MAX_PROGRESS = max(fc.progress for fc in FailureClass)


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
    #: a multi-objective search (``optimization.objectives``): the score per objective, in that order (the
    #: primary's is ``value``), and the unpenalized objectives by name; empty for a single objective
    values: tuple[float, ...] = ()
    objectives: dict[str, float | None] = field(default_factory=dict)

    @property
    def told(self) -> float | tuple[float, ...]:
        """What the study is told: the score, or the scores per objective of a multi-objective study."""
        return self.values if self.values else self.value

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


def gpu_divisor(optimization: Optimization, gpus: int, objective: str | None = None) -> int:
    """What ``objective`` (default: the primary) is divided by: the configuration's GPUs under ``per_gpu``, for
    the objectives it divides (throughput, goodput)."""
    name = objective or optimization.objective
    return max(1, gpus) if optimization.per_gpu and OBJECTIVE_DEFS[name].per_gpu else 1


def objective_value(result: BenchResult, objective: str, divisor: int = 1) -> float:
    """Mean over the (scenario, load) cells of the objective's metric (NaN when a cell has no samples); for a
    capacity objective the mean capacity of the runs' ladders. Divided by ``divisor`` (``gpu_divisor``)."""
    if OBJECTIVE_DEFS[objective].capacity:
        return mean_capacity(result.capacities) / divisor
    metric, _unit = OBJECTIVE_METRICS[objective]
    values = [_cell_metric(cell, metric) for cell in fixed_cells(result)]
    return sum(values) / len(values) / divisor if values else math.nan


def fixed_cells(result: BenchResult) -> list[CellMetrics]:
    """The cells of the spec's own fixed loads: every cell but the capacity search's ladder steps."""
    return [cell for cell in result.cells if not cell.ladder]


def check_slos(result: BenchResult, slo: Slo | None) -> list[SloCheck]:
    """Every SLO in every fixed-load cell (``fixed_cells``), computed from the cell's raw samples."""
    return cell_checks(fixed_cells(result), slo)


def cell_checks(cells: Sequence[CellMetrics], slo: Slo | None) -> list[SloCheck]:
    """Every SLO in each of ``cells``."""
    if slo is None:
        return []
    checks = []
    for cell in cells:
        for metric, statistic, limit in slo.checks():
            value = _cell_metric(cell, metric, statistic)
            checks.append(SloCheck.against(limit, cell.label, metric, statistic, value, cell.summary(metric).censored))
    return checks


def _penalized(raw: float, penalty: float, objective: str) -> float:
    return raw * (1 + penalty) if objective_direction(objective) == "minimize" else raw / (1 + penalty)


def score_result(result: BenchResult, optimization: Optimization, slo: Slo | None, gpus: int = 1) -> TrialScore:
    """Score a measured configuration: on the objective, and on each of ``objectives`` when there are several
    (one SLO penalty, applied to each; one constraint). ``gpus``: the GPUs it uses, for ``per_gpu``."""
    if optimization.ladder_only:
        return _score_capacity(result, optimization, gpus)
    raws = {
        name: objective_value(result, name, gpu_divisor(optimization, gpus, name))
        for name in optimization.objective_names
    }
    raw = raws[optimization.objective]  # the primary objective is one of them
    if any(math.isnan(v) for v in raws.values()):
        return score_failure(
            FailureClass.BENCHMARK_ERRORS,
            optimization,
            "no request completed, so there is no objective value",
        )
    checks = check_slos(result, slo)
    steepness = slo.steepness if slo else 0.1
    penalty = min(sum(c.penalty(steepness) for c in checks), math.exp(_MAX_EXPONENT))
    hard = [c.ratio - c.fail_ratio for c in checks if c.hard_failed]
    # SLO violations map into (0, 1): always less infeasible than a failed trial (>= 1)
    constraint = max(e / (1 + e) if math.isfinite(e) else 0.999 for e in hard) if hard else 0.0
    ladder_checks: list[SloCheck] = []
    if optimization.uses_capacity:
        # goodput beside other objectives: the ladder's checks count only where it held no load at all (as for
        # goodput alone: then the configuration misses its SLOs and is infeasible)
        ladder_checks, held_all = _ladder_checks(result)
        constraint = max(constraint, 0.0 if held_all else 0.5)

    def scored(name: str) -> float:
        # a capacity has no penalty: the SLOs define it (the fixed cells' misses weigh on the other objectives)
        return raws[name] if OBJECTIVE_DEFS[name].capacity else _penalized(raws[name], penalty, name)

    score = TrialScore(scored(optimization.objective), raw, penalty, constraint, tuple(checks + ladder_checks))
    if not optimization.multi_objective:
        return score
    values = tuple(scored(name) for name in optimization.objective_names)
    return replace(score, values=values, objectives=dict(raws))


def _failure_value(objective: str, shortfall: float, timeout: float) -> float:
    if objective_direction(objective) == "maximize":
        return -1.0 - shortfall  # throughput is never negative
    # no mean latency can exceed the trial's own time limit, penalties included
    return timeout * math.exp(_MAX_EXPONENT) * (2.0 + shortfall)


def _score_capacity(result: BenchResult, optimization: Optimization, gpus: int) -> TrialScore:
    """The capacity the ladders found: no penalty; the checks of each run's highest held step (or its lowest
    step when none held: the configuration misses the SLOs even at the lightest load, and is infeasible)."""
    if not result.capacities:
        return score_failure(FailureClass.BENCHMARK_ERRORS, optimization, "no load step was measured")
    checks: list[SloCheck] = []
    held_all = True
    for run in result.capacities:
        step = run.best_step
        if step is None:
            held_all = False
            step = min(run.steps, key=lambda s: s.load) if run.steps else None
        checks += _step_checks(run, step)
    value = objective_value(result, optimization.objective, gpu_divisor(optimization, gpus))
    return TrialScore(value, value, 0.0, 0.0 if held_all else 0.5, tuple(checks))


def _step_checks(run: CapacityResult, step: Step | None) -> list[SloCheck]:
    checks = list(step.checks) if step is not None else []
    if run.best_step is None and checks and all(c.passed for c in checks):
        # it broke by stalling or errors, not by a statistic: say so as a check with no samples
        checks.append(dataclasses.replace(checks[0], value=math.nan))
    return checks


def _ladder_checks(result: BenchResult) -> tuple[list[SloCheck], bool]:
    """The checks of each run's lowest step where its ladder held no load (none where it held one), and whether
    every run's ladder held one."""
    checks: list[SloCheck] = []
    held_all = bool(result.capacities)
    for run in result.capacities:
        if run.best_step is None:
            held_all = False
            checks += _step_checks(run, min(run.steps, key=lambda s: s.load) if run.steps else None)
    return checks, held_all


def score_failure(failure: FailureClass, optimization: Optimization, message: str = "") -> TrialScore:
    """A finite score worse than any measured configuration, graded by how far the trial got (on every objective
    of a multi-objective search)."""
    shortfall = _MAX_PROGRESS - failure.progress  # 0 for the most advanced failures
    timeout = optimization.timeout_per_iteration
    value = _failure_value(optimization.objective, shortfall, timeout)
    values: tuple[float, ...] = ()
    objectives: dict[str, float | None] = {}
    if optimization.multi_objective:
        values = tuple(_failure_value(name, shortfall, timeout) for name in optimization.objective_names)
        objectives = dict.fromkeys(optimization.objective_names)
    return TrialScore(value, None, math.nan, 1.0 + shortfall, (), failure, message, values, objectives)


def rank_key(meets_slos: bool, feasible: bool, value: float, maximize: bool) -> tuple[bool, bool, float]:
    """Sort key, best first: meeting every SLO first, then feasible, then by score in the objective's direction.

    The one ordering of "better" used by the search's new-best marks, patience, the choice of candidates to
    confirm, the choice among confirmations and the report's best-so-far line.
    """
    return (not meets_slos, not feasible, -value if maximize else value)


def rank_number(meets_slos: bool, feasible: bool, value: float, maximize: bool) -> float:
    """``rank_key`` as one number, lower is better (scores far below 1e15 in magnitude, as objectives are)."""
    misses, infeasible, signed = rank_key(meets_slos, feasible, value, maximize)
    return signed + 1e15 * misses + 2e15 * infeasible
