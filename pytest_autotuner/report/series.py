"""What the report's plots draw, taken from the outcome once: each trial as a point, the session's best so far,
the latency-throughput front, the importances, the trade-off points, the Pareto front and the calibration.

A builder: it reads a ``TaskOutcome``; ``plots.py`` draws these series and reads nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_autotuner.core.outcome.records import best_so_far
from pytest_autotuner.report.tradeoff import TradeoffPoint, has_several_loads, tradeoff_frontier, tradeoff_points

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.trial import ParamValue
    from pytest_autotuner.core.outcome.outcome import ParetoFront, TaskOutcome
    from pytest_autotuner.core.outcome.records import TrialRecord
    from pytest_autotuner.core.search.calibration import Calibration

__all__ = ["PlotSeries", "TrialPoint", "latency_throughput", "pareto_front", "plot_series"]


@dataclass(frozen=True)
class TrialPoint:
    """One trial as the plots see it."""

    number: int
    value: float  # the score the search ranked (penalized when an SLO was missed)
    objective: float | None  # the raw objective (None: not measured)
    measured: bool
    feasible: bool
    meets_slos: bool
    params: Mapping[str, ParamValue]
    latency: float  # mean E2E over its cells (NaN: unknown)
    throughput: float  # mean output throughput over its cells (NaN: unknown)


@dataclass(frozen=True)
class PlotSeries:
    """Everything the plots of one item draw."""

    task: str
    strategy: str
    objective: str
    direction: str
    parameters: tuple[str, ...]
    choices: Mapping[str, tuple[object, ...]]  # a categorical parameter's declared choices, in the spec's order
    trials: tuple[TrialPoint, ...]  # in trial-number order
    best_so_far: tuple[float | None, ...]  # per trial: the score of the best trial up to it (the session's rank)
    chosen: int | None  # the confirmed best's trial
    defaults: int | None  # SGLang's defaults' trial
    startup_trials: int  # TPE's random start (0 for other strategies)
    screened: frozenset[int]  # trials the screen seeded
    front: tuple[int, ...]  # trials on the latency-throughput front, by latency
    importances: Mapping[str, float] | None
    importance_note: str  # why there is no importance plot
    tradeoff: tuple[TradeoffPoint, ...] | None  # None: one load only, no trade-off to draw
    tradeoff_front: tuple[TradeoffPoint, ...] = ()
    pareto: ParetoFront | None = None
    calibration: Calibration | None = None


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def latency_throughput(trial: TrialRecord) -> tuple[float, float]:
    """(mean E2E over the trial's cells, mean output throughput over its cells); NaN when unknown. With a capacity
    ladder beside fixed cells (goodput among several objectives), over the fixed cells: the same loads for every
    configuration."""
    cells = [c for c in trial.cells if not c.key.ladder] or list(trial.cells)
    return (
        _mean([c.value("e2e", "mean") for c in cells]),
        _mean([c.value("output_throughput") for c in cells]),
    )


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated for (lower latency, higher throughput), sorted by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best_tput = -math.inf
    for i in order:
        if points[i][1] > best_tput:
            front.append(i)
            best_tput = points[i][1]
    return front


def plot_series(outcome: TaskOutcome, importances: Mapping[str, float] | None, importance_note: str) -> PlotSeries:
    spec = outcome.spec
    opt = spec.optimization
    records = sorted(outcome.trials, key=lambda t: t.number)
    points = []
    for t in records:
        latency, throughput = latency_throughput(t)
        points.append(TrialPoint(t.number, t.value, t.objective, t.measured, t.feasible, t.meets_slos,
                                 dict(t.params), latency, throughput))  # fmt: skip
    leaders = best_so_far(records, opt.direction == "maximize")
    plotted = [p for p in points if p.measured and math.isfinite(p.latency) and math.isfinite(p.throughput)]
    front = pareto_front([(p.latency, p.throughput) for p in plotted])
    several = has_several_loads(outcome)
    tradeoff = tuple(tradeoff_points(outcome)) if several else None
    choices = {n: tuple(v) for n, v in spec.parameters.items() if isinstance(v, list)}
    return PlotSeries(
        task=spec.task_name,
        strategy=opt.strategy,
        objective=opt.objective,
        direction=opt.direction,
        parameters=tuple(spec.parameters),
        choices=choices,
        trials=tuple(points),
        best_so_far=tuple(None if lead is None or not math.isfinite(lead.value) else lead.value for lead in leaders),
        chosen=outcome.best.source_trial if outcome.best is not None else None,
        defaults=outcome.defaults_trial.number if outcome.defaults_trial is not None else None,
        startup_trials=outcome.startup_trials,
        screened=frozenset(t.number for t in records if t.origin == "screen"),
        front=tuple(plotted[i].number for i in front),
        importances=dict(importances) if importances else None,
        importance_note=importance_note,
        tradeoff=tradeoff,
        tradeoff_front=tuple(tradeoff_frontier(list(tradeoff))) if tradeoff else (),
        pareto=outcome.pareto,
        calibration=outcome.calibration,
    )
