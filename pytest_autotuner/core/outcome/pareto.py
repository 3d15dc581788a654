"""Pareto dominance, fronts, hypervolume and the ``select`` rule of a multi-objective search (pure).

A point is a tuple of objective values, one per objective, each with its direction ("minimize" or "maximize").
``a`` dominates ``b`` when it is at least as good in every objective and better in one; the front is the set of
points no other point dominates (equal points are both on it).

Hypervolume: the volume dominated by the front and bounded by a reference point (worse than every point that
counts), computed exactly by slicing (sweep in 2-D, slices of 2-D sweeps in 3-D); points not strictly better than
the reference in every objective add nothing.

The select rule (``optimization.select``) picks the one configuration a session confirms, asserts and keeps as
its baseline: ``{"best": A, "within": {B: 0.05}}`` is the best on A among the front's points whose B is within 5%
of the best B on the front (relative to that best: ``>= best - 0.05 |best|`` when maximizing, ``<= best + 0.05
|best|`` when minimizing). Without a rule the first objective is the primary: ``{"best": objectives[0]}``. The
best point on A under such bounds is always on the front (a point dominating it meets the bounds too and is as
good on A), so choosing from the front loses nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.scoring import TrialScore

__all__ = ["FrontSoFar", "SelectRule", "dominates", "front_indices", "hypervolume", "select_order", "within_bound"]

Direction = str  # "minimize" | "maximize"


def _loss(point: Sequence[float], directions: Sequence[Direction]) -> tuple[float, ...]:
    """The point with every objective turned into one to minimize."""
    return tuple(-v if d == "maximize" else v for v, d in zip(point, directions, strict=True))


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[Direction]) -> bool:
    """``a`` is at least as good as ``b`` in every objective and better in at least one."""
    la, lb = _loss(a, directions), _loss(b, directions)
    return all(x <= y for x, y in zip(la, lb, strict=True)) and any(x < y for x, y in zip(la, lb, strict=True))


def front_indices(points: Sequence[Sequence[float]], directions: Sequence[Direction]) -> list[int]:
    """Indices of the points no other point dominates, in their given order."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p, directions) for q in points)]


def hypervolume(
    points: Sequence[Sequence[float]], reference: Sequence[float], directions: Sequence[Direction]
) -> float:
    """The volume the points dominate up to ``reference`` (exact; any number of objectives, meant for 2 and 3)."""
    ref = _loss(reference, directions)
    losses = [_loss(p, directions) for p in points]
    inside = [p for p in losses if all(x < r for x, r in zip(p, ref, strict=True))]
    return _hv(inside, ref)


def _hv(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    if len(ref) == 2:
        volume, best_y = 0.0, ref[1]
        for x, y in sorted(points):  # by x; each point adds the strip its y improves
            if y < best_y:
                volume += (ref[0] - x) * (best_y - y)
                best_y = y
        return volume
    # slice along the last objective: between consecutive levels, the (d-1)-volume of the points at or below
    ordered = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for k, point in enumerate(ordered):
        top = ordered[k + 1][-1] if k + 1 < len(ordered) else ref[-1]
        if top > point[-1]:
            volume += (top - point[-1]) * _hv([p[:-1] for p in ordered[: k + 1]], ref[:-1])
    return volume


@dataclass(frozen=True)
class SelectRule:
    """Best on ``best`` among the points within ``within[name]`` (relative) of the best on each named objective."""

    best: str
    within: Mapping[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        if not self.within:
            return f"best {self.best}"
        bounds = ", ".join(f"{name} within {tol:.0%} of its best" for name, tol in self.within.items())
        return f"best {self.best} among configurations with {bounds}"


def within_bound(best: float, tolerance: float, direction: Direction) -> float:
    """The worst value still within ``tolerance`` (relative) of ``best``."""
    return best - tolerance * abs(best) if direction == "maximize" else best + tolerance * abs(best)


def select_order(
    points: Sequence[Mapping[str, float]], rule: SelectRule, directions: Mapping[str, Direction]
) -> list[int]:
    """Indices of the points that meet the rule's bounds, best on ``rule.best`` first (ties: given order).

    The bounds are relative to the best value among ``points`` (pass the front's points). Empty only when
    ``points`` is.
    """
    if not points:
        return []
    allowed = list(range(len(points)))
    for name, tolerance in rule.within.items():
        direction = directions[name]
        values = [p[name] for p in points]
        limit = within_bound(max(values) if direction == "maximize" else min(values), tolerance, direction)
        if direction == "maximize":
            allowed = [i for i in allowed if points[i][name] >= limit]
        else:
            allowed = [i for i in allowed if points[i][name] <= limit]
    sign = -1.0 if directions[rule.best] == "maximize" else 1.0
    return sorted(allowed, key=lambda i: (sign * points[i][rule.best], i))


class FrontSoFar:
    """The Pareto front of the trials seen so far, in the best tier (meets SLOs, then feasible, then measured): a
    multi-objective search improves when a trial joins it (``new best`` marks and ``patience``)."""

    def __init__(self, directions: tuple[str, ...]) -> None:
        self._directions = directions
        self._tier: tuple[bool, bool] | None = None
        self._points: list[tuple[float, ...]] = []

    def add(self, score: TrialScore) -> bool:
        """Whether ``score`` joins the front (a better tier, or not weakly dominated within the tier)."""
        tier = (not score.meets_slos, not score.feasible)
        point = score.values
        if self._tier is None or tier < self._tier:
            self._tier, self._points = tier, [point]
            return True
        if tier > self._tier:
            return False
        if any(p == point or dominates(p, point, self._directions) for p in self._points):
            return False
        self._points = [p for p in self._points if not dominates(point, p, self._directions)] + [point]
        return True
