"""The search space of a spec: categorical lists, int/float ranges and booleans, with grid enumeration.

Nothing here materialises a space: a dimension's grid values are a lazy sequence (``range`` for ints, computed
points for stepped floats), ``grid_size`` is arithmetic, ``point(i)`` decodes the i-th grid point and ``grid()``
iterates without building the product, so an int range of 1..10^9 costs nothing until a point is asked for.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_autotuner.core.measure.trial import Params, ParamValue
from pytest_autotuner.core.spec.spec_model import RangeParam
from pytest_autotuner.core.spec.task_spec import TaskSpec

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = ["Categorical", "FloatRange", "IntRange", "SearchSpace"]


@dataclass(frozen=True)
class Categorical:
    name: str
    choices: tuple[ParamValue, ...]

    def grid_values(self) -> Sequence[ParamValue] | None:
        return self.choices


@dataclass(frozen=True)
class IntRange:
    name: str
    low: int
    high: int
    step: int = 1
    log: bool = False

    def grid_values(self) -> Sequence[ParamValue] | None:
        return range(self.low, self.high + 1, self.step)  # lazy: len and indexing without a list

    def first_at_least(self, threshold: float) -> int | None:
        """The smallest value of the range at or above ``threshold`` (arithmetic), None when there is none."""
        if threshold > self.high:
            return None
        steps = max(0, math.ceil((threshold - self.low) / self.step))
        value = self.low + steps * self.step
        return value if value <= self.high else None


@dataclass(frozen=True)
class FloatRange:
    name: str
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def grid_values(self) -> Sequence[ParamValue] | None:
        if self.step is None:
            return None  # continuous: no grid
        return _SteppedFloats(self.low, self.step, stepped_count(self.low, self.high, self.step))

    def first_at_least(self, threshold: float) -> float | None:
        """The smallest value of the range at or above ``threshold`` (arithmetic), None when there is none."""
        if threshold > self.high:
            return None
        if threshold <= self.low:
            return self.low
        if self.step is None:
            return float(threshold)
        values = _SteppedFloats(self.low, self.step, stepped_count(self.low, self.high, self.step))
        index = min(len(values) - 1, math.ceil((threshold - self.low) / self.step - 1e-9))
        if values[index] < threshold and index + 1 < len(values):  # the quotient rounded a step short
            index += 1
        return values[index] if values[index] >= threshold else None


def stepped_count(low: float, high: float, step: float) -> int:
    """Points of ``low, low + step, ...`` up to ``high``; a quotient a rounding error short of whole counts whole
    (0..1 in steps of 1e-9 is 10^9 + 1 points, though 1 / 1e-9 is 999999999.9999999 in floats)."""
    steps = (high - low) / step
    return math.floor(steps + max(1e-9, abs(steps) * 1e-12)) + 1


class _SteppedFloats(Sequence[float]):
    """``low + i * step`` for i in 0..n-1, computed on access (a step of 1e-9 must not build 10^9 floats)."""

    def __init__(self, low: float, step: float, n: int) -> None:
        self._low, self._step, self._n = low, step, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> float:  # type: ignore[override]  # no slices needed
        if not -self._n <= index < self._n:
            raise IndexError(index)
        return round(self._low + (index % self._n) * self._step, 12)

    def __iter__(self) -> Iterator[float]:
        return (self[i] for i in range(self._n))


Dimension = Categorical | IntRange | FloatRange


def _dimension(name: str, raw: list[ParamValue] | RangeParam) -> Dimension:
    if isinstance(raw, RangeParam):
        if raw.is_int:
            return IntRange(name, int(raw.low), int(raw.high), int(raw.step or 1), raw.log)
        return FloatRange(name, float(raw.low), float(raw.high), raw.step, raw.log)
    return Categorical(name, tuple(raw))


class SearchSpace:
    """The tuned parameters of one spec, in spec order."""

    def __init__(self, dimensions: list[Dimension]) -> None:
        self.dimensions = dimensions

    @classmethod
    def from_spec(cls, spec: TaskSpec) -> SearchSpace:
        return cls([_dimension(name, raw) for name, raw in spec.parameters.items()])

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    @property
    def grid_size(self) -> int | None:
        """Number of grid points (arithmetic, nothing listed), or None when a float range has no step."""
        size = 1
        for dim in self.dimensions:
            values = dim.grid_values()
            if values is None:
                return None
            size *= len(values)
        return size

    def _axes(self) -> list[Sequence[ParamValue]]:
        axes = []
        for dim in self.dimensions:
            values = dim.grid_values()
            if values is None:
                raise ValueError(
                    f"parameter `{dim.name}` is a float range without `step`, so it has no grid; "
                    "add a step or use the bayesian or random strategy"
                )
            axes.append(values)
        return axes

    def point(self, index: int, axes: list[Sequence[ParamValue]] | None = None) -> Params:
        """The ``index``-th grid point in ``grid()`` order (the last dimension varies fastest)."""
        axes = self._axes() if axes is None else axes
        values: list[ParamValue] = []
        for axis in reversed(axes):
            index, digit = divmod(index, len(axis))
            values.append(axis[digit])
        return dict(zip(self.names, reversed(values), strict=True))

    def grid(self) -> Iterator[Params]:
        """Every grid point, in spec order, one at a time (raises ValueError for a continuous space)."""
        axes = self._axes()
        size = math.prod(len(axis) for axis in axes)
        for index in range(size):
            yield self.point(index, axes)

    def random_point(self, rng: random.Random) -> Params:
        """A point drawn uniformly per dimension (log-uniformly on a log range), in O(dimensions)."""
        point: dict[str, ParamValue] = {}
        for dim in self.dimensions:
            values = dim.grid_values()
            if isinstance(dim, Categorical) or (values is not None and not dim.log):
                assert values is not None
                point[dim.name] = values[rng.randrange(len(values))]
            elif dim.log:
                drawn = math.exp(rng.uniform(math.log(dim.low), math.log(dim.high)))
                point[dim.name] = min(max(round(drawn), dim.low), dim.high) if isinstance(dim, IntRange) else drawn
            else:
                point[dim.name] = rng.uniform(dim.low, dim.high)
        return point

    def distributions(self) -> dict[str, BaseDistribution]:
        """Optuna distributions for ``study.ask``."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        out: dict[str, BaseDistribution] = {}
        for dim in self.dimensions:
            if isinstance(dim, Categorical):
                out[dim.name] = CategoricalDistribution(dim.choices)
            elif isinstance(dim, IntRange):
                out[dim.name] = IntDistribution(dim.low, dim.high, step=dim.step, log=dim.log)
            else:
                out[dim.name] = FloatDistribution(dim.low, dim.high, step=dim.step, log=dim.log)
        return out

    def key(self, params: Mapping[str, ParamValue]) -> str:
        """Canonical text of a configuration, equal for equal configurations (for dedup)."""
        canonical = {}
        for dim in self.dimensions:
            value = params[dim.name]
            if isinstance(dim, FloatRange) and isinstance(value, (int, float)):
                value = round(float(value), 9)
            canonical[dim.name] = value
        return json.dumps(canonical, sort_keys=True)

    def fingerprint(self) -> str:
        """Short hash of the space's definition, part of the study name."""
        text = json.dumps([repr(d) for d in self.dimensions])
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def contains(self, params: Mapping[str, ParamValue]) -> bool:
        from pytest_autotuner.core.search import optuna_compat

        dists = self.distributions()
        if set(params) != set(dists):
            return False
        for name, value in params.items():
            try:
                internal = dists[name].to_internal_repr(value)
            except ValueError:  # a categorical value that is not a choice
                return False
            if not optuna_compat.contains(dists[name], internal):
                return False
        return True
