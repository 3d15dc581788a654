"""Capacity search (``maximize_goodput``): the highest load one server holds with every SLO met.

One trial is one server launch and a *ladder* of load steps on it (open loop: Poisson arrivals at a request
rate for ``step_seconds``, so every step lasts as long and a burst too short to build a queue cannot pass for a
held load, as SGLang's own rate sweeps scale ``bench_serving --num-prompts`` with ``--request-rate``; or closed
loop: a concurrency; ``benchmark.capacity.load``). Each step is one cell per traffic scenario,
recorded like any other cell (``CellKey(scenario, concurrency, rate)``), so results.json and the report show the
ladder and where it broke.

The search (``LadderSearch``), after vLLM's ``auto_tune`` (a first run at the top rate, whose measured
throughput bounds the answer) with bisection instead of its unit steps down:

1. **Probe the ceiling**: the first step runs at ``max``. If it holds, the answer is ``max`` ("at least";
   one step). If not, and every request of it finished, the completed requests per second it measured while
   overloaded bound what the server can sustain at all: the upper end of the bracket becomes
   ``min(max, 1.25 x that)`` (the margin covers a short cell's ramp-up; rate load only). A step cut at its time
   limit gives no such bound: a large batch completes few requests in the window although it progresses many.
2. **Walk down geometrically**: while no step has held, the next runs at half the lowest load that broke
   (capacity under latency SLOs is usually 50-90% of the overloaded throughput, so one halving mostly suffices),
   down to ``min``, which is measured last.
3. **Bisect geometrically** between the highest load that held and the lowest that broke: the next step is
   their geometric mean (the relative error halves each step: a factor-2 bracket is within 5% after 4 steps),
   until the bracket is within ``tolerance`` (relative) or ``max_steps`` are spent. Concurrency is bisected on
   integers and stops when the bracket is one apart.

The answer is the highest load *measured* to hold (0 when none did, "below min"). The search assumes a
configuration that holds a load holds every lighter one; near the boundary a step may flip with noise, and
the answer is then the highest held step below the lowest broken one bisection kept: never a load that broke.

**A step holds** when in every one of its cells (``judge_step``): every SLO statistic (mean / percentile of
TTFT, TPOT, E2E over the completed requests) is within its threshold, the error rate is at most
``benchmark.max_error_rate``, and at least ``min_completed`` requests finished (default: half of those sent):
an overloaded server whose queue outlives the cell has not held the load, however good its few completions look.

**The trial's value is the load** (the rate in req/s, or the concurrency), not the goodput at it: it is the
number a fleet is provisioned against ("holds 7.5 req/s") and the one vLLM's and SGLang's tooling report; the
goodput measured at that rate (completed requests meeting every SLO threshold, per second) is the offered rate
minus the few requests outside percentile SLOs plus the Poisson sample's deviation from its mean rate (about
+-10% for 100 requests), so ranking by it adds noise without changing which configuration holds more. The goodput
at each step is still recorded (``Step.goodput``) and shown.

**Beside other objectives** (``optimization.objectives``, e.g. goodput per GPU and mean TTFT), a trial first runs
the spec's own fixed-load cells, on which the others are measured, then this ladder on the same server
(``evaluate.run_trial``, which says why in that order); ladder cells carry ``CellKey.ladder`` so they never pool
with, or stand in for, a fixed cell at the same load.

Confirmation repeats the whole search on each run; a run's value is its own capacity and the confirmed value is
their mean, so the defaults comparison and the baseline gate test per-run capacities like any other objective.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pytest_autotuner.core.metrics import CellMetrics
    from pytest_autotuner.core.scoring import SloCheck
    from pytest_autotuner.core.spec import Slo

__all__ = [
    "CEILING_MARGIN",
    "CapacityLimits",
    "CapacityResult",
    "LadderSearch",
    "Step",
    "goodput_limits",
    "judge_step",
    "mean_capacity",
]

MIN_STEP_REQUESTS = 20  #: requests of a rate step, at least (tail percentiles need samples)
MAX_STEP_REQUESTS = 100_000  #: requests of a rate step, at most
#: The first (overloaded) step's completed requests per second, times this, caps the bracket.
CEILING_MARGIN = 1.25
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

    def step_requests(self, load: float, closed_loop_requests: int) -> int:
        """Requests one step sends: rate x step_seconds (at least ``MIN_STEP_REQUESTS``) for a rate, so every
        step lasts as long and a short burst cannot hide an overload; the plan's count for a concurrency."""
        if self.load == "concurrency":
            return closed_loop_requests
        return min(MAX_STEP_REQUESTS, max(MIN_STEP_REQUESTS, math.ceil(load * self.step_seconds)))

    @property
    def unit(self) -> str:
        return "req/s" if self.load == "rate" else "concurrent requests"


@dataclass(frozen=True)
class Step:
    """One load step of a ladder: its load, whether it held and why not, and what it measured."""

    load: float
    holds: bool
    reason: str = ""  # why it broke ('' when it held)
    throughput: float = math.nan  # completed requests per second (lowest over the step's cells)
    goodput: float = math.nan  # completed requests meeting every SLO threshold, per second (lowest over cells)
    checks: tuple[SloCheck, ...] = field(default=(), compare=False)  # every SLO in each of the step's cells
    incomplete: int = 0  # requests still running when the step's time limit ended

    def as_dict(self) -> dict[str, Any]:
        return {
            "load": self.load,
            "holds": self.holds,
            "reason": self.reason,
            "request_throughput": self.throughput,
            "goodput": self.goodput,
            "incomplete": self.incomplete,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        def number(value: Any) -> float:
            return float(value) if isinstance(value, (int, float)) else math.nan

        return cls(
            float(data.get("load") or 0.0),
            bool(data.get("holds")),
            str(data.get("reason", "")),
            number(data.get("request_throughput")),
            number(data.get("goodput")),
            incomplete=int(data.get("incomplete") or 0),
        )


@dataclass(frozen=True)
class CapacityResult:
    """One run's ladder and its answer."""

    load: LoadKind
    steps: tuple[Step, ...]
    limits: CapacityLimits = field(default_factory=CapacityLimits)

    @property
    def capacity(self) -> float:
        """The highest load measured to hold below the lowest that broke (0.0: none held)."""
        broken = [s.load for s in self.steps if not s.holds]
        ceiling = min(broken) if broken else math.inf
        held = [s.load for s in self.steps if s.holds and s.load < ceiling]
        return max(held) if held else 0.0

    @property
    def at_ceiling(self) -> bool:
        """The answer is the search's ``max``: the server may hold more."""
        return self.capacity >= self.limits.max

    @property
    def best_step(self) -> Step | None:
        chosen = self.capacity
        return next((s for s in self.steps if s.holds and s.load == chosen), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "load": self.load,
            "capacity": self.capacity,
            "at_ceiling": self.at_ceiling,
            "steps": [s.as_dict() for s in self.steps],
        }


def mean_capacity(results: Sequence[CapacityResult]) -> float:
    """The confirmed capacity of repeat runs: the mean of each run's own answer (NaN without runs)."""
    return sum(r.capacity for r in results) / len(results) if results else math.nan


class LadderSearch:
    """The next load to try, given the steps so far (see the module docstring); pure, no I/O."""

    def __init__(self, limits: CapacityLimits) -> None:
        self.limits = limits
        self.steps: list[Step] = []
        self._hi = limits.max  # lowest load known (or bounded) to break
        self._lo = limits.min  # highest load that held (min until one did)
        self._lo_held = False

    @property
    def integer(self) -> bool:
        return self.limits.load == "concurrency"

    def record(self, step: Step) -> None:
        self.steps.append(step)
        if step.holds:
            if step.load >= self._lo:
                self._lo, self._lo_held = step.load, True
            return
        self._hi = min(self._hi, step.load)
        if (
            len(self.steps) == 1
            and not self.integer
            and step.incomplete == 0  # cut short, a big batch completes little although it progresses a lot
            and math.isfinite(step.throughput)
            and step.throughput > 0
        ):
            # overloaded at the ceiling: it completed this many per second at most, so it holds no more
            self._hi = min(self._hi, max(self.limits.min, CEILING_MARGIN * step.throughput))
        if self._hi <= self._lo and not self._lo_held:
            self._lo = self.limits.min
            self._hi = max(self._hi, self.limits.min)

    def next_load(self) -> float | None:
        """The next step's load, or None when the search is done."""
        limits = self.limits
        if len(self.steps) >= limits.max_steps:
            return None
        if not self.steps:
            return float(math.floor(limits.max)) if self.integer else limits.max
        if self._lo_held and self._lo >= limits.max:
            return None  # holds the ceiling
        lo, hi = self._lo, self._hi
        if not self._lo_held:
            # nothing held yet: walk down from the lowest broken load, halving, until a step holds
            down = math.floor(hi / 2) if self.integer else hi / 2
            if down <= limits.min:
                return self._measure_min()
            return float(down)
        if self.integer:
            if hi - lo <= 1:
                return self._measure_min()
            nxt = float(round(math.sqrt(lo * hi)))
            nxt = min(max(nxt, lo + 1), hi - 1)
        else:
            if hi <= lo * (1 + limits.tolerance):
                return self._measure_min()
            nxt = math.sqrt(lo * hi)
        if self._tried(nxt):
            return self._measure_min()
        return nxt

    def _measure_min(self) -> float | None:
        """The bracket closed: done, unless nothing held yet and ``min`` itself was never measured."""
        if self._lo_held:
            return None
        lowest = float(math.ceil(self.limits.min)) if self.integer else self.limits.min
        return None if self._tried(lowest) else lowest

    def _tried(self, load: float) -> bool:
        return any(math.isclose(s.load, load, rel_tol=1e-9) for s in self.steps)

    def result(self) -> CapacityResult:
        return CapacityResult(self.limits.load, tuple(self.steps), self.limits)


def goodput_limits(slo: Slo | None) -> dict[str, float]:
    """Per-request limits for goodput (DistServe-style): the tightest threshold of each SLO metric."""
    limits: dict[str, float] = {}
    if slo is None:
        return limits
    for metric, _statistic, limit in slo.checks():
        limits[metric] = min(limits.get(metric, math.inf), limit.threshold)
    return limits


def judge_step(
    load: float,
    cells: Sequence[CellMetrics],
    checks: Sequence[SloCheck],
    *,
    max_error_rate: float,
    min_completed: int | None,
    slo: Slo | None,
) -> Step:
    """Whether one step (its cells, one per scenario, and their SLO checks) held, and why not."""
    reasons: list[str] = []
    for cell in cells:
        sent = len(cell.records)
        need = min(sent, min_completed if min_completed is not None else max(1, math.ceil(sent / 2)))
        if not sent or cell.finished < need:
            reasons.append(f"{cell.label}: only {cell.finished} of {sent} requests finished (overloaded)")
        elif cell.error_rate > max_error_rate:
            reasons.append(f"{cell.label}: error rate {cell.error_rate:.2f} > {max_error_rate:g}")
    for check in checks:
        if not check.passed:
            value = "no samples" if math.isnan(check.value) else f"{check.value * 1000:.0f} ms"
            reasons.append(f"{check.cell}: {check.name} {value} > {check.threshold * 1000:g} ms")
    limits = goodput_limits(slo)
    throughput = min((c.request_throughput for c in cells), default=math.nan)
    goodput = min((c.goodput(limits) for c in cells), default=math.nan)
    incomplete = sum(c.incomplete for c in cells)
    return Step(load, not reasons, "; ".join(reasons), throughput, goodput, tuple(checks), incomplete)
