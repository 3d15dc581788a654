"""What to run against one server: the cells of a benchmark and their limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pytest_autotuner.core.spec.scenarios import Scenario

if TYPE_CHECKING:
    from pytest_autotuner.core.spec.benchmark_settings import Slo
    from pytest_autotuner.core.spec.capacity_limits import CapacityLimits

__all__ = ["STALL_BASE", "STALL_PREFILL_RATE", "BenchmarkPlan", "CellKey"]

#: the default stall timeout: this many server seconds, plus the longest request's tokens at the rate below
STALL_BASE = 5.0
#: tokens per second of prefill assumed for the default stall timeout (far below any serving GPU's)
STALL_PREFILL_RATE = 2000.0
_UNKNOWN_LENGTH = 32768  # a dataset's requests: lengths known only from its file; a long context's worth


@dataclass(frozen=True)
class CellKey:
    """Which cell of a plan: a scenario under one load. Closed loop has ``concurrency`` > 0 and no rate; open
    loop (Poisson arrivals) has ``concurrency`` 0 and a ``rate``. Every cell carries its key; merging, baselines,
    the report and results.json match cells on it, so two rates (both concurrency 0) never pool."""

    scenario: str
    concurrency: int
    rate: float | None = None
    #: a step of the capacity search's load ladder (``core/measure/capacity.py``), never pooled or compared with the
    #: spec's own cell at the same load (with ``maximize_goodput`` among several objectives a trial runs both)
    ladder: bool = False

    @property
    def label(self) -> str:
        if not self.rate and not self.concurrency:
            return f"{self.scenario} (capacity)"  # no one load: the capacity search's answer over its ladder
        load = f"rate={self.rate:g}/s" if self.rate else f"c={self.concurrency}"
        return f"{self.scenario} {load}" + (" (ladder)" if self.ladder else "")

    @classmethod
    def from_dict(cls, cell: Mapping[str, Any]) -> CellKey:
        """The key of a stored cell (``CellMetrics.as_dict()``, a baseline cell)."""
        rate = cell.get("request_rate")
        return cls(
            str(cell.get("scenario")),
            int(cell.get("concurrency") or 0),
            float(rate) if rate else None,
            bool(cell.get("ladder", False)),
        )


@dataclass(frozen=True)
class BenchmarkPlan:
    """Scenarios x loads with their stop conditions; times are in server seconds (simulated for the sim)."""

    scenarios: tuple[Scenario, ...]
    concurrencies: tuple[int, ...]
    max_requests: int = 100
    max_time: float = 30.0
    request_rates: tuple[float, ...] = ()  # open loop cells (Poisson arrivals), in addition to closed loop
    warmup_requests: int = 2
    additional_params: Mapping[str, Any] = field(default_factory=dict)
    api: Literal["chat", "completions"] = "chat"
    seed: int = 0
    request_timeout: float = 120.0
    max_error_rate: float = 0.1  # a cell with more failed requests fails the trial
    min_completed: int | None = None  # a cell with fewer finished requests stalls the trial; None: half of those sent
    # server seconds without a byte from the server while requests are in flight that stall the trial
    # (``stall_seconds``); None: derived from the plan
    stall_timeout: float | None = None
    tokenizer: str | None = None  # local tokenizer directory for exact prompt lengths
    # A cell stops once its metric's 95% interval is within this relative half-width (core/measure/precision.py)
    precision: float | None = None
    min_requests_for_precision: int = 20
    precision_metric: str = "e2e"  # e2e | ttft | tpot | throughput (``precision.PRECISION_METRICS``)
    cell_order: Literal["lightest_first", "heaviest_first"] = "heaviest_first"
    dataset_root: str = "."  # the folder ``dataset(...)`` scenario paths are relative to (the spec file's)
    # maximize_goodput: run a ladder of load steps instead of the cells (core/measure/capacity.py); each step judged
    # against ``slo``
    capacity: CapacityLimits | None = None
    slo: Slo | None = None
    # a capacity ladder's step: draw requests from ``seed`` alone (not the cell's load) and the Poisson gaps from
    # a stream of their own, so every load meets the same unit-rate arrivals, scaled (common random numbers)
    common_arrivals: bool = False

    def stall_seconds(self) -> float:
        """Server seconds of silence (requests in flight, no byte from the server) that stall the trial.

        ``stall_timeout`` when set; else ``STALL_BASE`` seconds plus the longest request's tokens at
        ``STALL_PREFILL_RATE`` tokens/s (a serving GPU emits a token for some request at least once per prefill
        batch, and no batch needs more than one prompt's prefill), at most half of ``max_time``, so a server that
        stops answering in the first half of a cell is caught within it whatever the concurrency."""
        if self.stall_timeout is not None:
            return self.stall_timeout
        longest = max((s.max_total_tokens or _UNKNOWN_LENGTH for s in self.scenarios), default=0)
        return min(STALL_BASE + longest / STALL_PREFILL_RATE, self.max_time / 2)

    def cells(self) -> list[tuple[Scenario, int, float | None]]:
        """(scenario, concurrency, request_rate) of every cell, heaviest load first (``cell_order``).

        Heaviest first: open loop by falling rate, then closed loop by falling concurrency; scenarios in the spec's
        order at each load. It is the most telling cell for early stopping (``core/measure/pruning.py``): a
        configuration fails a hard latency SLO mostly under load (queueing behind too few running requests, small
        batches or chunks), which a light cell cannot show, and a trial infeasible in one cell is infeasible. It is also
        the cheapest when a request count bounds the cells: a heavy closed-loop cell runs its requests many at a time, a
        light one a few at a time. On the hard spaces of ``benchmarks/tuning_efficiency.py`` (20 seeds each) heaviest
        first stopped 20.8 (H1) and 11.9 (H2) of 50 trials per study early against 12.7 and 1.8, and never a trial that
        would have become the best; lightest first stopped such trials (2 of random's on H2, 3 of ours on H1 with an
        earlier simulator): its margin rule compares light cells, which do not show the heavy cell's SLO penalty.

        ``cell_order`` "lightest_first" reverses the order: closed loop by rising concurrency, then open loop by
        rising rate; it stops configurations too slow even when idle after the cheapest cell of a time-bounded
        plan.
        """
        out: list[tuple[Scenario, int, float | None]] = [
            (s, c, None) for c in sorted(self.concurrencies) for s in self.scenarios
        ]
        out += [(s, 0, r) for r in sorted(self.request_rates) for s in self.scenarios]
        return out[::-1] if self.cell_order == "heaviest_first" else out
