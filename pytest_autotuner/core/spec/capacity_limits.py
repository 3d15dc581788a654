"""``benchmark.capacity`` as the capacity ladder uses it (``core.measure.capacity``): how many requests and how
long a load step is, and how sure its verdict must be. Here, with the spec, because validating a spec needs a
step's size (``task_spec``'s bound on a cell's tokens)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_MAX_REPEATS",
    "MAX_STEP_REQUESTS",
    "MIN_STEP_REQUESTS",
    "CapacityLimits",
    "LoadKind",
]

MIN_STEP_REQUESTS = 20  #: requests of a rate step, at least (tail percentiles need samples)
DEFAULT_CONFIDENCE = 0.95  #: two-sided confidence of a step statistic's interval
DEFAULT_MAX_REPEATS = 3  #: a step whose interval straddles its threshold is measured up to this many times
MAX_STEP_REQUESTS = 100_000  #: requests of a rate step, at most
LoadKind = Literal["rate", "concurrency"]


@dataclass(frozen=True)
class CapacityLimits:
    """``benchmark.capacity`` as the ladder uses it."""

    load: LoadKind = "rate"
    min: float = 0.25
    max: float = 64.0
    max_steps: int = 8
    tolerance: float = 0.05
    step_seconds: float = 30.0  # rate load: seconds of arrivals per step
    #: rate load: requests a step sends at least; None: sized from the SLO's percentile (``sized_step_requests``)
    min_step_requests: int | None = None
    confidence: float = DEFAULT_CONFIDENCE  # of each SLO statistic's interval (two-sided)
    max_repeats: int = DEFAULT_MAX_REPEATS  # measurements of one step at most while its verdict is uncertain
    min_repeats: int = 1  # measurements of every step at least, pooled, however clear the first

    def step_requests(self, load: float, closed_loop_requests: int) -> int:
        """Requests one step sends: rate x step_seconds, at least ``min_step_requests`` (else
        ``MIN_STEP_REQUESTS``) for a rate, so every step lasts as long, a short burst cannot hide an overload and
        a tail percentile has the samples to say something; the plan's count for a concurrency."""
        if self.load == "concurrency":
            return closed_loop_requests
        floor = max(MIN_STEP_REQUESTS, self.min_step_requests or 0)
        return min(MAX_STEP_REQUESTS, max(floor, math.ceil(load * self.step_seconds)))

    def step_max_time(self, load: float, requests: int, max_time: float) -> float:
        """The time limit of one step: ``max_time`` stretched by as much as the step's arrivals outlast
        ``step_seconds`` (a low rate sized up to a percentile's sample), so the limit still cuts an overload,
        not a step that is merely longer."""
        if self.load == "concurrency" or load <= 0:
            return max_time
        return max_time * max(1.0, requests / (load * self.step_seconds))

    @property
    def unit(self) -> str:
        return "req/s" if self.load == "rate" else "concurrent requests"
