"""The search space of a spec: categorical lists, int/float ranges and booleans, with grid enumeration."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_autotuner.core.spec import RangeParam, TaskSpec
from pytest_autotuner.core.trial import Params, ParamValue

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = ["Categorical", "FloatRange", "IntRange", "SearchSpace"]


@dataclass(frozen=True)
class Categorical:
    name: str
    choices: tuple[ParamValue, ...]

    def grid_values(self) -> tuple[ParamValue, ...] | None:
        return self.choices


@dataclass(frozen=True)
class IntRange:
    name: str
    low: int
    high: int
    step: int = 1
    log: bool = False

    def grid_values(self) -> tuple[ParamValue, ...] | None:
        return tuple(range(self.low, self.high + 1, self.step))


@dataclass(frozen=True)
class FloatRange:
    name: str
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def grid_values(self) -> tuple[ParamValue, ...] | None:
        if self.step is None:
            return None  # continuous: no grid
        n = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return tuple(round(self.low + i * self.step, 12) for i in range(n))


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
        """Number of grid points, or None when a float range has no step (continuous)."""
        size = 1
        for dim in self.dimensions:
            values = dim.grid_values()
            if values is None:
                return None
            size *= len(values)
        return size

    def grid(self) -> Iterator[Params]:
        """Every grid point, in spec order (raises ValueError for a continuous space)."""
        axes = []
        for dim in self.dimensions:
            values = dim.grid_values()
            if values is None:
                raise ValueError(
                    f"parameter `{dim.name}` is a float range without `step`, so it has no grid; "
                    "add a step or use the bayesian or random strategy"
                )
            axes.append(values)
        for combo in itertools.product(*axes):
            yield dict(zip(self.names, combo, strict=True))

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
        from pytest_autotuner.core import optuna_compat

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
