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
   the point of the rate grid nearest their geometric mean (the relative error halves each step: a factor-2
   bracket is within 5% after 4 steps), until no grid point is left inside the bracket or ``max_steps`` are
   spent. The grid is ``max x 2^(-k/m)``, ``m`` points to a halving (the fewest whose ratio is at most
   ``1 + tolerance``: 15 at 5%); the walk down of step 2 lands on it too. Every run of a configuration so tries
   the same loads: its first step's throughput, which moves with the server's speed, changes how many steps the
   search takes, not which loads it can answer. Concurrency is bisected on integers and stops when the bracket
   is one apart.

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

Why one module of about 610 lines: the ladder, its per-step statistics and the step verdicts are one procedure,
specified by this docstring.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pytest_autotuner.core.measure.slo_check import SloCheck
from pytest_autotuner.core.spec.capacity_limits import (
    DEFAULT_CONFIDENCE,
    MIN_STEP_REQUESTS,
    CapacityLimits,
    LoadKind,
)

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.metrics import CellMetrics
    from pytest_autotuner.core.spec.benchmark_settings import Slo

__all__ = [
    "CEILING_MARGIN",
    "CapacityResult",
    "Interval",
    "LadderSearch",
    "Step",
    "capacity_spread",
    "goodput_limits",
    "judge_step",
    "ladder_resolution",
    "mean_capacity",
    "mean_interval",
    "percentile_interval",
    "sized_step_requests",
    "step_seed",
]

BLOCKS = 8  #: consecutive blocks of a measurement's requests for batch means (``batch_interval``)
#: The first (overloaded) step's completed requests per second, times this, caps the bracket.
CEILING_MARGIN = 1.25


@dataclass(frozen=True)
class Interval:
    """One SLO statistic of one step (its cell's requests pooled over the step's measurements) with its
    confidence interval: a distribution-free order-statistic interval for a percentile, a t interval for a mean.

    ``within``: the whole interval is at or below the threshold (the SLO holds with that confidence); ``over``:
    the whole interval is above (it breaks); ``straddles``: the sample cannot tell."""

    cell: str
    metric: str  # ttft | tpot | e2e
    statistic: str  # mean | p50 | p90 | p95 | p99
    value: float  # the point estimate (as ``Summary`` computes it)
    low: float
    high: float  # inf: too few samples for the interval to close above (a P99 needs hundreds)
    threshold: float
    n: int
    confidence: float = DEFAULT_CONFIDENCE
    #: batch means (``batch_interval``): the t interval, over consecutive blocks of requests, of the share of
    #: requests over the threshold (a percentile) or of the mean (a mean), against ``limit`` (1 - q, or the
    #: threshold). Latencies of neighbouring requests move together (a burst queues them all), so the per-request
    #: interval above alone would call one burst a confident break; NaN: not computed
    block_low: float = math.nan
    block_high: float = math.nan
    limit: float = math.nan

    @property
    def outcome(self) -> Literal["within", "over", "straddles"]:
        blocks = not math.isnan(self.limit)
        if self.n and self.high <= self.threshold and (not blocks or self.block_high <= self.limit):
            return "within"
        if self.n and self.low > self.threshold and (not blocks or self.block_low > self.limit):
            return "over"
        return "straddles"

    @property
    def name(self) -> str:
        return f"{self.metric} {self.statistic}"

    def describe(self) -> str:
        """``ttft p99 1.2 s [0.9, 2.4] (95%) vs 2 s``, in ms below 10 s."""
        if not self.n:
            return f"{self.name}: no samples"
        return (
            f"{self.name} {_ms(self.value)} [{_ms(self.low)}, {_ms(self.high)}] ({self.confidence:.0%}, "
            f"n={self.n}) vs {_ms(self.threshold)}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "metric": self.metric,
            "statistic": self.statistic,
            "value": self.value,
            "low": self.low,
            "high": self.high if math.isfinite(self.high) else None,  # JSON has no inf: null = unbounded
            "threshold": self.threshold,
            "n": self.n,
            "confidence": self.confidence,
            "block_low": self.block_low,
            "block_high": self.block_high if math.isfinite(self.block_high) else None,
            "limit": self.limit,
            "outcome": self.outcome,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Interval:
        high = data.get("high")
        return cls(
            str(data.get("cell", "")),
            str(data.get("metric", "")),
            str(data.get("statistic", "")),
            _number(data.get("value")),
            _number(data.get("low")),
            math.inf if high is None else _number(high),
            _number(data.get("threshold")),
            int(data.get("n") or 0),
            _number(data.get("confidence")),
            _number(data.get("block_low")),
            math.inf if data.get("block_high") is None and "block_high" in data else _number(data.get("block_high")),
            _number(data.get("limit")),
        )


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    if math.isinf(seconds):
        return "inf"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


@dataclass(frozen=True)
class Step:
    """One load step of a ladder: its load, whether it held and why (not), and what it measured.

    ``repeats``: how many times the step was measured (from the same clean server state, each on its own
    arrivals) because its intervals straddled a threshold; ``decided`` False: still straddling after
    ``max_repeats``, so the verdict is the point estimate over every request the step sent."""

    load: float
    holds: bool
    reason: str = ""  # why it broke ('' when it held)
    throughput: float = math.nan  # completed requests per second (lowest over the step's cells)
    goodput: float = math.nan  # completed requests meeting every SLO threshold, per second (lowest over cells)
    checks: tuple[SloCheck, ...] = field(default=(), compare=False)  # each SLO per scenario, measurements pooled
    incomplete: int = 0  # requests still running when the step's time limit ended
    intervals: tuple[Interval, ...] = field(default=(), compare=False)  # every SLO statistic, pooled
    requests: int = 0  # requests sent over all of the step's measurements
    repeats: int = 1  # measurements of this step
    decided: bool = True  # False: the intervals still straddled at the budget; the point estimate decided
    extend: bool = False  # the intervals straddle and the budget allows another measurement

    @property
    def verdict(self) -> str:
        """Why it held, broke or was extended, in words (the report's ladder table)."""
        if self.extend:
            straddling = [i.describe() for i in self.intervals if i.outcome == "straddles"]
            return "uncertain, measuring again: " + "; ".join(straddling)
        again = f" (measured {self.repeats}x: the first straddled)" if self.repeats > 1 else ""
        if self.holds:
            if not self.decided:
                return f"held on the point estimate after {self.repeats} measurements (intervals still straddle)"
            return f"held: every interval within its threshold{again}"
        if not self.decided:
            return f"broke on the point estimate after {self.repeats} measurements: {self.reason}"
        return f"broke: {self.reason}{again}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "load": self.load,
            "holds": self.holds,
            "reason": self.reason,
            "verdict": self.verdict,
            "request_throughput": self.throughput,
            "goodput": self.goodput,
            "incomplete": self.incomplete,
            "requests": self.requests,
            "repeats": self.repeats,
            "decided": self.decided,
            "intervals": [i.as_dict() for i in self.intervals],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        intervals = data.get("intervals")
        return cls(
            float(data.get("load") or 0.0),
            bool(data.get("holds")),
            str(data.get("reason", "")),
            _number(data.get("request_throughput")),
            _number(data.get("goodput")),
            incomplete=int(data.get("incomplete") or 0),
            intervals=tuple(Interval.from_dict(i) for i in intervals if isinstance(i, Mapping))
            if isinstance(intervals, list)
            else (),
            requests=int(data.get("requests") or 0),
            repeats=int(data.get("repeats") or 1),
            decided=bool(data.get("decided", True)),
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
    def resolution(self) -> float:
        """How far above the answer the truth may lie: the lowest load that broke above it over the answer, minus
        1 (the bracket bisection left; 0.0 at the ceiling, inf when nothing held)."""
        capacity = self.capacity
        above = [s.load for s in self.steps if not s.holds and s.load > capacity]
        if capacity <= 0:
            return math.inf
        return min(above) / capacity - 1 if above else 0.0

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
            "resolution": self.resolution,
            "steps": [s.as_dict() for s in self.steps],
        }


def mean_capacity(results: Sequence[CapacityResult]) -> float:
    """The confirmed capacity of repeat runs: the mean of each run's own answer (NaN without runs)."""
    return sum(r.capacity for r in results) / len(results) if results else math.nan


def capacity_spread(capacities: Sequence[float]) -> float:
    """How far repeat runs' capacities disagree: max / min - 1 (0.0: they agree; NaN below two runs, inf when
    one held nothing and another did)."""
    values = [float(c) for c in capacities]
    if len(values) < 2:
        return math.nan
    low, high = min(values), max(values)
    if high == low:
        return 0.0
    return high / low - 1 if low > 0 else math.inf


def ladder_resolution(results: Sequence[CapacityResult], tolerance: float) -> float:
    """The relative step two correct answers of one server may differ by: the widest bracket any run left (finite
    ones), at least the bisection's ``tolerance``."""
    widths = [r.resolution for r in results if math.isfinite(r.resolution)]
    return max([tolerance, *widths])


def step_seed(seed: int, repeat: int) -> int:
    """The arrival seed of one measurement of a step: a function of the plan's seed and the repeat only, not of
    the load or of what the ladder did before. Every load is measured on the same unit-rate arrivals and prompts,
    scaled to its rate (common random numbers, ``BenchmarkPlan.common_arrivals``): nearby loads meet the same
    bursts, so whether a step holds moves with the load, not with its sample, and every confirmation run
    measures a load on the same sample; a repeat of a step draws fresh ones."""
    return zlib.crc32(f"{seed}|ladder|{repeat}".encode()) + (seed % 1024) * 2**32


def percentile_interval(
    samples: Sequence[float] | np.ndarray, q: float, confidence: float
) -> tuple[float, float, float]:
    """(point estimate, low, high) of the ``q`` quantile (0 < q < 1) of ``samples``: the distribution-free
    order-statistic interval, P(x_(l) <= xi_q <= x_(u)) >= confidence with l, u from Binomial(n, q); ``high``
    is inf when n is too small for it to close (for a P99 at 95%, fewer than 368 samples)."""
    from scipy.stats import binom

    arr = np.sort(np.asarray(samples, dtype=float))
    n = arr.size
    if n == 0:
        return math.nan, math.nan, math.nan
    alpha = 1 - confidence
    value = float(np.percentile(arr, q * 100))
    lower = int(binom.ppf(alpha / 2, n, q))  # 1-based rank; 0: unbounded below
    upper = int(binom.ppf(1 - alpha / 2, n, q)) + 1
    low = float(arr[lower - 1]) if lower >= 1 else -math.inf
    high = float(arr[upper - 1]) if upper <= n else math.inf
    return value, min(low, value), max(high, value)


def mean_interval(samples: Sequence[float] | np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(mean, low, high): the t interval of the mean (unbounded below two samples)."""
    from scipy.stats import t

    arr = np.asarray(samples, dtype=float)
    n = arr.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(arr.mean())
    if n < 2:
        return mean, -math.inf, math.inf
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * float(arr.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def batch_interval(blocks: Sequence[float] | np.ndarray, confidence: float) -> tuple[float, float]:
    """(low, high): the t interval of the mean of per-block statistics (batch means), unbounded below two."""
    from scipy.stats import t

    arr = np.asarray(blocks, dtype=float)
    if arr.size < 2:
        return -math.inf, math.inf
    mean = float(arr.mean())
    half = float(t.ppf(0.5 + confidence / 2, arr.size - 1)) * float(arr.std(ddof=1)) / math.sqrt(arr.size)
    return mean - half, mean + half


def block_statistics(samples: np.ndarray, statistic: str, threshold: float) -> list[float]:
    """One measurement's requests (in send order) in ``BLOCKS`` consecutive blocks: each block's share over
    ``threshold`` (a percentile) or its mean (a mean); one block below ``2 x BLOCKS`` requests."""
    parts = np.array_split(samples, BLOCKS if samples.size >= 2 * BLOCKS else 1) if samples.size else []
    if statistic == "mean":
        return [float(part.mean()) for part in parts if part.size]
    return [float((part > threshold).mean()) for part in parts if part.size]


def sized_step_requests(slo: Slo | None, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """Requests a step needs for its tightest percentile SLO to be able to hold with ``confidence``: the least n
    whose order-statistic interval of that percentile closes above with no request over the threshold,
    ``ceil(ln((1 - confidence) / 2) / ln(q))`` (P99: 368, P95: 72, P90: 36 at 95%); ``MIN_STEP_REQUESTS``
    for means and medians."""
    need = MIN_STEP_REQUESTS
    if slo is None:
        return need
    alpha = 1 - confidence
    for _metric, statistic, _limit in slo.checks():
        if statistic.startswith("p"):
            q = float(statistic[1:]) / 100
            need = max(need, math.ceil(math.log(alpha / 2) / math.log(q)))
    return need


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
            down = math.floor(hi / 2) if self.integer else self._grid(math.ceil(self._index(hi) - 1e-9) + self._halving)
            if down <= limits.min:
                return self._measure_min()
            return float(down)
        if self.integer:
            if hi - lo <= 1:
                return self._measure_min()
            nxt = float(round(math.sqrt(lo * hi)))
            nxt = min(max(nxt, lo + 1), hi - 1)
        else:
            # the grid points strictly inside the bracket (a higher load has a lower index)
            first, last = math.floor(self._index(hi) + 1e-9) + 1, math.ceil(self._index(lo) - 1e-9) - 1
            if first > last:
                return self._measure_min()
            middle = round((self._index(hi) + self._index(lo)) / 2)
            nxt = self._grid(min(max(middle, first), last))
        if self._tried(nxt):
            return self._measure_min()
        return nxt

    # Rate loads lie on one geometric grid, ``max x 2 ** (-k / m)`` with ``m`` steps to a halving (the fewest whose
    # ratio is within ``tolerance``: 15 at 5%): every run of a configuration bisects over the same candidate loads,
    # so two runs can differ only where a step's verdict differs, not because a slightly faster first step moved
    # every later load (issue 29: benchmarks/capacity_repeatability.py).

    @property
    def _halving(self) -> int:
        return max(1, math.ceil(math.log(2) / math.log(1 + max(self.limits.tolerance, 1e-3)) - 1e-9))

    def _index(self, load: float) -> float:
        return self._halving * math.log2(self.limits.max / load)

    def _grid(self, index: int) -> float:
        return self.limits.max * 2.0 ** (-index / self._halving)

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
    *,
    max_error_rate: float,
    min_completed: int | None,
    slo: Slo | None,
    confidence: float = DEFAULT_CONFIDENCE,
    final: bool = True,
    repeats: int = 1,
) -> Step:
    """Whether one step held, and why not: ``cells`` are every cell of its measurements (one per scenario per
    measurement), judged pooled per scenario.

    It breaks when a measurement's cell was overloaded (fewer than ``min_completed`` of its requests finished,
    default half: a queue outliving the step is no sampling accident), its error rate is above
    ``max_error_rate``, or an SLO statistic's interval (``Interval``, at ``confidence``) lies wholly above its
    threshold; it holds when every interval lies within. Otherwise the sample cannot tell: with ``final`` False
    the step asks to be measured again (``extend``), else the point estimates decide (``decided`` False).

    Its SLO checks (what a capacity's score, the summary and the report show for the step) are those pooled
    statistics, one per scenario and SLO: a held step's every check passes, whatever one measurement said alone."""
    reasons: list[str] = []
    checks: list[SloCheck] = []
    for cell in cells:
        sent = len(cell.records)
        need = min(sent, min_completed if min_completed is not None else max(1, math.ceil(sent / 2)))
        if not sent or cell.finished < need:
            reasons.append(f"{cell.label}: only {cell.finished} of {sent} requests finished (overloaded)")
    by_scenario: dict[str, list[CellMetrics]] = {}
    for cell in cells:
        by_scenario.setdefault(cell.scenario, []).append(cell)
    intervals: list[Interval] = []
    for group in by_scenario.values():
        label = group[0].label
        errors = sum(c.error_rate * c.finished for c in group if c.finished)
        finished = sum(c.finished for c in group)
        if finished and errors / finished > max_error_rate:
            reasons.append(f"{label}: error rate {errors / finished:.2f} > {max_error_rate:g}")
        for metric, statistic, limit in slo.checks() if slo is not None else ():
            samples = np.concatenate([c.samples(metric) for c in group])
            threshold = limit.threshold
            if statistic == "mean":
                value, low, high = mean_interval(samples, confidence)
                allowed = threshold
            else:
                q = float(statistic[1:]) / 100
                value, low, high = percentile_interval(samples, q, confidence)
                allowed = 1 - q
            blocks = [b for c in group for b in block_statistics(c.samples(metric), statistic, threshold)]
            block_low, block_high = batch_interval(blocks, confidence)
            intervals.append(
                Interval(
                    label,
                    metric,
                    statistic,
                    value,
                    low,
                    high,
                    threshold,
                    int(samples.size),
                    confidence,
                    block_low,
                    block_high,
                    allowed,
                )
            )
            censored = sum(c.summary(metric).censored for c in group)
            checks.append(SloCheck.against(limit, label, metric, statistic, value, censored))
    straddling = [i for i in intervals if i.outcome == "straddles"]
    sure = bool(reasons) or any(i.outcome == "over" for i in intervals)  # broken whatever else straddles
    extend = not sure and bool(straddling) and not final
    decided = sure or not straddling
    for interval in intervals:
        # over with confidence; or, once the budget is spent and nothing else broke it, over on the point estimate
        if interval.outcome == "over" or (not decided and not extend and not interval.value <= interval.threshold):
            shown = "no samples" if math.isnan(interval.value) else f"{interval.value * 1000:.0f} ms"
            reasons.append(
                f"{interval.cell}: {interval.name} {shown} > {interval.threshold * 1000:g} ms "
                f"({interval.confidence:.0%} interval [{_ms(interval.low)}, {_ms(interval.high)}], n={interval.n})"
            )
    limits = goodput_limits(slo)
    throughput = min((c.request_throughput for c in cells), default=math.nan)
    goodput = min((c.goodput(limits) for c in cells), default=math.nan)
    incomplete = sum(c.incomplete for c in cells)
    return Step(
        load,
        not reasons and not extend,
        "; ".join(reasons),
        throughput,
        goodput,
        tuple(checks),
        incomplete,
        intervals=tuple(intervals),
        requests=sum(len(c.records) for c in cells),
        repeats=repeats,
        decided=decided,
        extend=extend,
    )
