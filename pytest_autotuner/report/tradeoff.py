"""The trade-off serving people read: output tokens/s per user (1 / mean TPOT) against output tokens/s per GPU,
one point per measured configuration and load, the frontier marked (where no point is better on both).

A builder: it reads a ``TaskOutcome``; ``plots.py`` draws the points."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_autotuner.core.search.gpu_pool import gpus_needed

if TYPE_CHECKING:
    from pytest_autotuner.core.outcome.outcome import TaskOutcome

__all__ = ["TradeoffPoint", "has_several_loads", "tradeoff_frontier", "tradeoff_points"]


@dataclass(frozen=True)
class TradeoffPoint:
    """One measured (configuration, load): its throughput per GPU and the decode speed one user sees."""

    trial: int
    load: str
    per_gpu: float  # output tokens/s per GPU
    per_user: float  # output tokens/s per user: 1 / mean TPOT


def has_several_loads(outcome: TaskOutcome) -> bool:
    """More than one concurrency or request rate was measured (fixed cells or a capacity ladder's steps)."""
    loads = {(c.key.concurrency, c.key.rate) for t in outcome.trials for c in t.cells}
    return len(loads) > 1


def tradeoff_points(outcome: TaskOutcome) -> list[TradeoffPoint]:
    """Every measured trial's cells with a throughput and a TPOT."""
    points = []
    for trial in outcome.trials:
        if not trial.measured:
            continue
        gpus = gpus_needed(trial.params)
        for cell in trial.cells:
            tpot = cell.value("tpot", "mean")
            if cell.output_throughput > 0 and math.isfinite(tpot) and tpot > 0:
                load = f"rate {cell.key.rate:g}" if cell.key.rate else f"c={cell.key.concurrency}"
                points.append(TradeoffPoint(trial.number, load, cell.output_throughput / gpus, 1 / tpot))
    return points


def tradeoff_frontier(points: list[TradeoffPoint]) -> list[TradeoffPoint]:
    """The points no other point beats on both axes, by throughput per GPU (highest first)."""
    front: list[TradeoffPoint] = []
    for point in sorted(points, key=lambda p: (-p.per_gpu, -p.per_user)):
        if not front or point.per_user > front[-1].per_user:
            front.append(point)
    return front
