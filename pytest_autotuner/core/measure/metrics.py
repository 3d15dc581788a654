"""Per-request records and per-cell aggregates, computed from raw samples.

Definitions follow SGLang's ``bench_serving``: TTFT is send -> first chunk with content, ITL the gaps between
content chunks, TPOT ``(E2E - TTFT) / (output_tokens - 1)``, throughput = tokens / cell duration. Percentiles
use numpy's default (linear) method, as ``bench_serving`` does. All times are in seconds (simulated seconds
when the server is the simulator: the client scales wall time by the server's speed-up).

Incomplete requests are right-censored: a request still running when its cell ends is kept as a record with
``error="incomplete"`` (``INCOMPLETE``) and ``waited``, the seconds from its send to that moment. Its E2E is at
least ``waited``; so is its TTFT when no first token came (when one came, its TTFT is known exactly); its TPOT is
at least ``(waited - ttft) / (requested_output_tokens - 1)`` (the client asks for exactly that many tokens); and
the gap after its last chunk is an inter-token latency of at least ``waited`` minus that chunk's time. These
bounds enter every latency sample (``samples``), and every statistic of a cell (``summary``: mean, each
percentile, max) is the larger of the statistic over the finished requests alone and over the finished requests
with each censored one at its bound. Statistics only grow with each sample, so the true value is at least the
second figure, and a censored request can only make a statistic worse, never vanish from it: a cell whose
unfinished requests decide an SLO fails it. An incomplete request is not an error (``errors`` and
``error_rate`` count only requests that finished badly), and the cell's duration runs to the moment it ended,
so throughput covers the whole window. The tokens it received by then count toward output throughput.

Prefix cache: ``cached_tokens`` is the server's ``usage.prompt_tokens_details.cached_tokens`` (SGLang with
``--enable-cache-report``; the simulator always), None when the server did not say. A cell's
``cache_hit_rate`` is cached / prompt tokens over the completed requests that reported it (NaN when none did);
for multi-turn traffic ``cache_hit_rate_by_turn`` is the same per turn number (each turn resends more history).

Why one module of about 570 lines: the records, the cell aggregates and their definitions (bench_serving's, with
censored requests in every statistic) are read together.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pytest_autotuner.core.measure.plan import CellKey

if TYPE_CHECKING:
    import pandas as pd

    from pytest_autotuner.core.measure.capacity import CapacityResult

__all__ = [
    "ERROR_KINDS",
    "INCOMPLETE",
    "LATENCY_METRICS",
    "BenchResult",
    "CellMetrics",
    "CellSummary",
    "RequestRecord",
    "Summary",
    "json_safe",
    "summarize",
]

LatencyMetric = Literal["ttft", "itl", "tpot", "e2e"]
LATENCY_METRICS: tuple[LatencyMetric, ...] = ("ttft", "itl", "tpot", "e2e")

#: Error kinds a request can end with; anything else is reported as ``other``.
ERROR_KINDS = (
    "http_status",  # non-2xx answer (the status is in ``error_detail``)
    "connection",  # refused or reset connection
    "timeout",  # per-request timeout
    "malformed_sse",  # a data line that is not JSON or not an OpenAI chunk
    "truncated_stream",  # stream ended without a finish reason / [DONE]
    "other",
)

#: The outcome of a request still running when its cell ended: not an error, and not a latency sample.
INCOMPLETE = "incomplete"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What one request did, as measured by the client."""

    send_time: float  # seconds since the cell started
    requested_input_tokens: int
    requested_output_tokens: int
    input_tokens: int = 0  # from usage.prompt_tokens (0 when unknown)
    output_tokens: int = 0  # from usage.completion_tokens, else the sum of chunk tokens
    ttft: float | None = None  # seconds from send to the first chunk with content
    e2e: float | None = None  # seconds from send to the last byte
    chunk_times: tuple[float, ...] = ()  # seconds since send of each content chunk
    chunk_tokens: tuple[int, ...] = ()  # tokens carried by each content chunk
    scheduled_time: float | None = None  # open loop: when the schedule wanted it sent
    error: str | None = None  # one of ERROR_KINDS, INCOMPLETE, None on success
    error_detail: str = ""
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens (None when not reported)
    turn: int | None = None  # multi-turn traffic (C, dataset): the request's turn in its session, from 0
    waited: float | None = None  # incomplete: seconds from send to the end of its cell (a lower bound on its E2E)
    #: seconds from arrival to the start of its prefill (admission to a batch), when the server says (the
    #: simulator's ``: sim-prefill`` stamp); None for a server that does not (real SGLang's client timings)
    queue_time: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def incomplete(self) -> bool:
        """Still running when the cell ended (its output_tokens are those received by then)."""
        return self.error == INCOMPLETE

    @property
    def failed(self) -> bool:
        """Finished badly: an HTTP, connection, timeout or stream error (not an incomplete request)."""
        return self.error is not None and self.error != INCOMPLETE

    @property
    def prefill_time(self) -> float | None:
        """Seconds from the start of its prefill to its first token (``ttft - queue_time``); None unless both
        are known."""
        if self.ttft is None or self.queue_time is None:
            return None
        return max(0.0, self.ttft - self.queue_time)

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first; None with fewer than two output tokens."""
        if self.ttft is None or self.e2e is None or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)

    def bound(self, metric: str) -> float | None:
        """An incomplete request's lower bound on ``ttft``, ``tpot`` or ``e2e`` (None: not censored, or no
        bound: a TTFT that is known exactly, a TPOT of a one-token request or before its first token)."""
        if not self.incomplete or self.waited is None:
            return None
        if metric == "e2e":
            return self.waited
        if metric == "ttft":
            return self.waited if self.ttft is None else None
        if metric == "tpot":
            if self.ttft is None or self.requested_output_tokens < 2:
                return None
            return max(0.0, self.waited - self.ttft) / (self.requested_output_tokens - 1)
        if metric == "itl":
            return self.waited - self.chunk_times[-1] if self.chunk_times else None
        raise KeyError(f"unknown metric {metric!r}; known: {', '.join(LATENCY_METRICS)}")

    @property
    def itls(self) -> list[float]:
        """Gaps between consecutive content chunks (one gap per chunk after the first)."""
        times = self.chunk_times
        return [b - a for a, b in itertools.pairwise(times)]

    @property
    def e2e_from_schedule(self) -> float | None:
        """E2E counted from the scheduled send time (open loop), so client-side queueing shows."""
        if self.e2e is None:
            return None
        start = self.scheduled_time if self.scheduled_time is not None else self.send_time
        return self.send_time - start + self.e2e


@dataclass(frozen=True, slots=True)
class Summary:
    """Distribution summary of one metric in one cell."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float
    censored: int = 0  # samples that are lower bounds (requests still running when the cell ended)

    def stat(self, name: str) -> float:
        """``mean``, ``p50`` ... by name."""
        return float(getattr(self, name))

    def as_dict(self) -> dict[str, float]:
        keys = ("n", "mean", "std", "min", "max", "p50", "p90", "p95", "p99")
        return {k: getattr(self, k) for k in keys} | ({"censored": self.censored} if self.censored else {})


_NAN = math.nan
_NAN_SUMMARY = Summary(0, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN)
_WORSE_STATS = ("mean", "max", "p50", "p90", "p95", "p99")  # statistics a censored sample may only raise


def censored_summary(exact: Sequence[float] | np.ndarray, bounds: Sequence[float] | np.ndarray) -> Summary:
    """The summary of exact samples and right-censored ones (lower bounds): each statistic the larger of the
    exact samples' and all samples' (bounds as values), so that a censored sample can only make it worse."""
    every = summarize(np.concatenate([np.asarray(exact, dtype=float), np.asarray(bounds, dtype=float)]))
    if len(bounds) == 0:
        return every
    alone = summarize(exact)
    worse = {k: max(every.stat(k), alone.stat(k)) if alone.n else every.stat(k) for k in _WORSE_STATS}
    return dataclasses.replace(every, censored=len(bounds), **worse)  # type: ignore[arg-type]


def summarize(samples: Sequence[float] | np.ndarray) -> Summary:
    """Summary of raw samples; NaN statistics for an empty sample."""
    arr = np.asarray(samples, dtype=float)
    if arr.size == 0:
        return _NAN_SUMMARY
    p50, p90, p95, p99 = np.percentile(arr, [50, 90, 95, 99])
    return Summary(
        n=int(arr.size),
        mean=float(arr.mean()),
        std=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        min=float(arr.min()),
        max=float(arr.max()),
        p50=float(p50),
        p90=float(p90),
        p95=float(p95),
        p99=float(p99),
    )


@dataclass
class CellMetrics:
    """All requests of one (scenario, concurrency) cell, with aggregates computed from the raw samples."""

    scenario: str
    concurrency: int
    duration: float  # seconds from the first send to the last completion, or to the cut when requests still ran
    records: list[RequestRecord]
    request_rate: float | None = None  # open loop only
    precision_stop: bool = False  # ended early: its metric's interval reached ``benchmark.precision``
    half_width: float | None = None  # achieved relative 95% half-width of that metric (None: precision unset)
    ladder: bool = False  # a load step of the capacity search (``CellKey.ladder``)
    # (seconds, requests): the server's queue-time histogram over the cell (SGLang --enable-metrics), else None
    server_queue: tuple[float, int] | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> CellKey:
        return CellKey(self.scenario, self.concurrency, self.request_rate, self.ladder)

    @property
    def label(self) -> str:
        return self.key.label

    @property
    def ok_records(self) -> list[RequestRecord]:
        return [r for r in self.records if r.ok]

    def exact_samples(self, metric: str) -> np.ndarray:
        """Measured samples of ``ttft``, ``itl``, ``tpot`` or ``e2e``: the finished requests', and what an
        incomplete request measured exactly (its TTFT when its first token came, the gaps between its chunks)."""
        key = f"exact:{metric}"
        if key not in self._cache:
            ok = self.ok_records
            values: list[float | None]
            if metric == "itl":
                values = [gap for r in self.records if r.ok or r.incomplete for gap in r.itls]
            elif metric == "ttft":
                values = [r.ttft for r in self.records if r.ok or r.incomplete]
            elif metric in ("tpot", "e2e"):
                values = [getattr(r, metric) for r in ok]
            else:
                raise KeyError(f"unknown metric {metric!r}; known: {', '.join(LATENCY_METRICS)}")
            self._cache[key] = np.array([v for v in values if v is not None], dtype=float)
        return self._cache[key]

    def censored_bounds(self, metric: str) -> np.ndarray:
        """Lower bounds on ``metric`` of the requests still running when the cell ended (``RequestRecord.bound``)."""
        key = f"bounds:{metric}"
        if key not in self._cache:
            bounds = (r.bound(metric) for r in self.records if r.incomplete)
            self._cache[key] = np.array([b for b in bounds if b is not None], dtype=float)
        return self._cache[key]

    def samples(self, metric: str) -> np.ndarray:
        """Every sample of ``metric``: the exact ones, then each censored request's lower bound."""
        key = f"samples:{metric}"
        if key not in self._cache:
            self._cache[key] = np.concatenate([self.exact_samples(metric), self.censored_bounds(metric)])
        return self._cache[key]

    def summary(self, metric: str) -> Summary:
        """Statistics of ``metric`` in which censored requests count and can only make a statistic worse."""
        key = f"summary:{metric}"
        if key not in self._cache:
            self._cache[key] = censored_summary(self.exact_samples(metric), self.censored_bounds(metric))
        return self._cache[key]

    @property
    def censored(self) -> int:
        """Requests still running when the cell ended: their latencies are lower bounds (``waited``)."""
        return self.incomplete

    @property
    def censored_wait(self) -> tuple[float, float] | None:
        """(shortest, longest) wait of the censored requests, in seconds; None when none was censored."""
        waits = [r.waited for r in self.records if r.incomplete and r.waited is not None]
        return (min(waits), max(waits)) if waits else None

    @property
    def completed(self) -> int:
        return len(self.ok_records)

    @property
    def incomplete(self) -> int:
        """Requests still running when the cell ended."""
        return sum(r.incomplete for r in self.records)

    @property
    def finished(self) -> int:
        """Requests that ended within the cell, successfully or with an error."""
        return len(self.records) - self.incomplete

    @property
    def output_tokens(self) -> int:
        """Tokens delivered within the cell: all of a completed request's, and what incomplete ones received."""
        return sum(r.output_tokens for r in self.records if r.ok or r.incomplete)

    @property
    def input_tokens(self) -> int:
        return sum(r.input_tokens for r in self.ok_records)

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens the server took from its prefix cache, over completed requests that reported them."""
        return sum(r.cached_tokens for r in self.ok_records if r.cached_tokens is not None)

    @property
    def cache_hit_rate(self) -> float:
        """Cached share of the prompt tokens of completed requests that reported cached tokens; NaN if none did."""
        reported = [r for r in self.ok_records if r.cached_tokens is not None]
        prompt = sum(r.input_tokens for r in reported)
        return sum(r.cached_tokens or 0 for r in reported) / prompt if prompt else math.nan

    @property
    def output_throughput(self) -> float:
        """Output tokens per second over the cell."""
        return self.output_tokens / self.duration if self.duration > 0 else 0.0

    @property
    def total_throughput(self) -> float:
        return (self.output_tokens + self.input_tokens) / self.duration if self.duration > 0 else 0.0

    @property
    def request_throughput(self) -> float:
        return self.completed / self.duration if self.duration > 0 else 0.0

    @property
    def errors(self) -> Counter[str]:
        """Failed requests by kind; incomplete requests are not errors."""
        return Counter(r.error for r in self.records if r.error is not None and r.failed)

    @property
    def error_rate(self) -> float:
        """Failed share of the requests that finished (1 when nothing was sent, 0 when none finished yet)."""
        if not self.records:
            return 1.0
        return sum(self.errors.values()) / self.finished if self.finished else 0.0

    def goodput(self, limits: Mapping[str, float]) -> float:
        """Requests per second meeting every per-request limit (``ttft``, ``tpot``, ``e2e`` in seconds)."""
        if self.duration <= 0:
            return 0.0
        good = 0
        for record in self.ok_records:
            values = {"ttft": record.ttft, "tpot": record.tpot, "e2e": record.e2e}
            if all(values.get(m) is None or values[m] <= limit for m, limit in limits.items()):  # type: ignore[operator]
                good += 1
        return good / self.duration

    def cache_hit_rate_by_turn(self) -> list[float]:
        """Multi-turn traffic: ``cache_hit_rate`` of the requests of each turn number (0, 1, ...); [] otherwise."""
        turns: dict[int, list[RequestRecord]] = {}
        for r in self.ok_records:
            if r.turn is not None and r.cached_tokens is not None:
                turns.setdefault(r.turn, []).append(r)
        rates = []
        for turn in range(max(turns, default=-1) + 1):
            prompt = sum(r.input_tokens for r in turns.get(turn, []))
            rates.append(sum(r.cached_tokens or 0 for r in turns.get(turn, [])) / prompt if prompt else math.nan)
        return rates

    def as_dict(self) -> dict[str, Any]:
        """Plain aggregates (no raw samples) for reports and JSON."""
        by_turn = self.cache_hit_rate_by_turn()
        return {
            "label": self.label,
            "scenario": self.scenario,
            "concurrency": self.concurrency,
            "request_rate": self.request_rate,
            "duration": self.duration,
            "requests": len(self.records),
            "completed": self.completed,
            "incomplete": self.incomplete,
            "censored_wait": list(self.censored_wait) if self.censored_wait else None,
            "output_throughput": self.output_throughput,
            "total_throughput": self.total_throughput,
            "request_throughput": self.request_throughput,
            "error_rate": self.error_rate,
            "errors": dict(self.errors),
            "precision_stop": self.precision_stop,
            "half_width": self.half_width,
            "server_queue_mean": self.server_queue[0] / self.server_queue[1] if self.server_queue else None,
            "cached_tokens": self.cached_tokens,
            "cache_hit_rate": self.cache_hit_rate,
            **({"cache_hit_rate_by_turn": by_turn} if by_turn else {}),
            **({"ladder": True} if self.ladder else {}),
            **{m: self.summary(m).as_dict() for m in LATENCY_METRICS},
        }


@dataclass(frozen=True)
class CellSummary:
    """A cell's aggregates as a trial stores them (``CellMetrics.as_dict()``, without raw samples), read back."""

    key: CellKey
    requests: int
    completed: int
    incomplete: int
    duration: float
    output_throughput: float
    error_rate: float
    latency: Mapping[str, Mapping[str, float]]  # metric -> statistic -> seconds (NaN when unknown)
    precision_stop: bool = False
    half_width: float = math.nan  # NaN: precision unset (or not stored)
    cache_hit_rate: float = math.nan
    censored_wait: tuple[float, float] | None = None  # (shortest, longest) wait of the censored requests

    @property
    def label(self) -> str:
        return self.key.label

    def value(self, metric: str, statistic: str = "mean") -> float:
        """``output_throughput``, ``error_rate``, ``cache_hit_rate`` or a latency statistic; NaN when unknown."""
        if metric in ("output_throughput", "error_rate", "cache_hit_rate"):
            return float(getattr(self, metric))
        return float(self.latency.get(metric, {}).get(statistic, math.nan))

    def as_dict(self) -> dict[str, Any]:
        """The stored form again (``from_dict``'s input, the fields it reads)."""
        return {
            "label": self.label,
            "scenario": self.key.scenario,
            "concurrency": self.key.concurrency,
            "request_rate": self.key.rate,
            "duration": self.duration,
            "requests": self.requests,
            "completed": self.completed,
            "incomplete": self.incomplete,
            "censored_wait": list(self.censored_wait) if self.censored_wait else None,
            "output_throughput": self.output_throughput,
            "error_rate": self.error_rate,
            "precision_stop": self.precision_stop,
            "half_width": self.half_width,
            **({"ladder": True} if self.key.ladder else {}),
            **{m: dict(stats) for m, stats in self.latency.items()},
        }

    @classmethod
    def from_dict(cls, cell: Mapping[str, Any]) -> CellSummary:
        def number(value: Any) -> float:
            return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan

        latency: dict[str, dict[str, float]] = {
            m: {str(k): number(v) for k, v in stats.items()}
            for m in LATENCY_METRICS
            if isinstance(stats := cell.get(m), dict)
        }
        return cls(
            key=CellKey.from_dict(cell),
            requests=int(cell.get("requests") or 0),
            completed=int(cell.get("completed") or 0),
            incomplete=int(cell.get("incomplete") or 0),
            duration=number(cell.get("duration")),
            output_throughput=number(cell.get("output_throughput")),
            error_rate=number(cell.get("error_rate")),
            latency=latency,
            precision_stop=bool(cell.get("precision_stop", False)),
            half_width=number(cell.get("half_width")),
            cache_hit_rate=number(cell.get("cache_hit_rate")),
            censored_wait=_wait_range(cell.get("censored_wait")),
        )


def _wait_range(value: Any) -> tuple[float, float] | None:
    """A stored ``censored_wait`` ([shortest, longest] seconds) read back; None when absent or malformed."""
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        return float(value[0]), float(value[1])
    return None


def json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON: they become None, recursively (for storages, results.json, reports)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


@dataclass
class BenchResult:
    """The cells of one benchmark run (one server configuration), plus what the server said about itself."""

    cells: list[CellMetrics]
    server_info: dict[str, Any] = field(default_factory=dict)
    #: maximize_goodput: each run's load ladder (one per run; a merged result keeps every run's)
    capacities: tuple[CapacityResult, ...] = ()

    def cell(self, key: CellKey) -> CellMetrics:
        for cell in self.cells:
            if cell.key == key:
                return cell
        raise KeyError(key)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per request, with its cell's scenario and concurrency."""
        import pandas as pd

        rows = []
        for cell in self.cells:
            for r in cell.records:
                rows.append(
                    {
                        "scenario": cell.scenario,
                        "concurrency": cell.concurrency,
                        "request_rate": cell.request_rate,
                        "send_time": r.send_time,
                        "ttft": r.ttft,
                        "tpot": r.tpot,
                        "e2e": r.e2e,
                        "input_tokens": r.input_tokens,
                        "output_tokens": r.output_tokens,
                        "cached_tokens": r.cached_tokens,
                        "chunks": len(r.chunk_times),
                        "error": r.error,
                    }
                )
        return pd.DataFrame(rows)

    @staticmethod
    def merge(results: Sequence[BenchResult]) -> BenchResult:
        """Pool repeat runs of one configuration: records of the same cell are concatenated.

        A pooled cell stopped for precision when every run of it did; its half-width is the widest run's."""
        by_key: dict[CellKey, CellMetrics] = {}
        for result in results:
            for cell in result.cells:
                key = cell.key
                if key not in by_key:
                    by_key[key] = CellMetrics(
                        cell.scenario,
                        cell.concurrency,
                        0.0,
                        [],
                        cell.request_rate,
                        precision_stop=True,
                        ladder=cell.ladder,
                    )
                merged = by_key[key]
                merged.duration += cell.duration
                merged.records.extend(cell.records)
                merged.precision_stop = merged.precision_stop and cell.precision_stop
                if cell.server_queue is not None:
                    seconds, requests = merged.server_queue or (0.0, 0)
                    merged.server_queue = (seconds + cell.server_queue[0], requests + cell.server_queue[1])
                if cell.half_width is not None:
                    merged.half_width = max(merged.half_width or 0.0, cell.half_width)
        info = results[0].server_info if results else {}
        capacities = tuple(c for result in results for c in result.capacities)
        return BenchResult(list(by_key.values()), dict(info), capacities)
