"""What one trial is and how it can end: shared by the core, the runtimes and the report."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.metrics import CellMetrics, CellSummary

__all__ = ["CellRule", "Deadline", "FailureClass", "ParamValue", "Params", "TrialFailure"]

_CANCEL_POLL_S = 0.02  #: ``Deadline.wait`` sleeps in slices this long, so a cancel ends it within one

ParamValue = bool | int | float | str
Params = dict[str, ParamValue]


class FailureClass(str, Enum):
    """Why a trial produced no usable measurement, ordered from 'got least far' to 'got furthest'.

    The order grades failed trials for the sampler: a configuration that crashed under load is closer to
    working than one that could not even allocate its KV cache.
    """

    INFEASIBLE = "infeasible"  # rejected before launch (needs more GPUs than the runner has, ...)
    IMAGE_MISSING = "image_missing"
    INVALID_PARALLELISM = "invalid_parallelism"
    KV_CACHE_OOM = "kv_cache_oom"  # "Not enough memory" for the KV cache: mem-fraction too low
    OOM = "oom"  # CUDA out of memory at graph capture or load: mem-fraction too high
    LAUNCH_FAILED = "launch_failed"  # exited during startup for another reason
    READINESS_TIMEOUT = "readiness_timeout"
    TRIAL_TIMEOUT = "trial_timeout"
    CRASHED = "crashed"  # died during the benchmark
    STALLED = "stalled"  # alive, but too few requests finished within a cell's time limit
    BENCHMARK_ERRORS = "benchmark_errors"  # too many failed requests
    HOST_TOO_SLOW = "host_too_slow"  # the simulator's speed-up outran this host's client: its load was not the plan's
    PRUNED = "pruned"  # stopped after a cell because it could not win (core/measure/pruning.py): measured partly
    UNKNOWN = "unknown"

    @property
    def progress(self) -> int:
        """How far a trial that ended this way got (0 = nowhere); used to grade failure scores."""
        return _PROGRESS[self]


_PROGRESS = {
    FailureClass.INFEASIBLE: 0,
    FailureClass.IMAGE_MISSING: 0,
    FailureClass.INVALID_PARALLELISM: 1,
    FailureClass.KV_CACHE_OOM: 2,
    FailureClass.OOM: 3,
    FailureClass.LAUNCH_FAILED: 2,
    FailureClass.UNKNOWN: 2,
    FailureClass.READINESS_TIMEOUT: 3,
    FailureClass.TRIAL_TIMEOUT: 4,
    FailureClass.HOST_TOO_SLOW: 4,
    FailureClass.STALLED: 5,
    FailureClass.CRASHED: 5,
    FailureClass.BENCHMARK_ERRORS: 5,
    FailureClass.PRUNED: 5,
}


class TrialFailure(Exception):
    """A trial that ended without a usable measurement; raised by evaluate functions and runtimes."""

    def __init__(self, failure_class: FailureClass, message: str, *, log_tail: str = "") -> None:
        super().__init__(f"{failure_class.value}: {message}")
        self.failure_class = failure_class
        self.message = message
        self.log_tail = log_tail

    def __reduce__(self) -> tuple[Any, ...]:
        # the default rebuilds from ``args`` (the joined text): keep the parts, so a failure raised in a
        # benchmark child process comes back as the same TrialFailure
        return (_rebuild_failure, (self.failure_class, self.message, self.log_tail))


def _rebuild_failure(failure_class: FailureClass, message: str, log_tail: str) -> TrialFailure:
    return TrialFailure(failure_class, message, log_tail=log_tail)


#: Decides after each reported cell whether a trial goes on: the reason to stop it, or None.
CellRule = Callable[["Sequence[CellSummary]"], "str | None"]


class Deadline:
    """A trial's allotment: its time budget, a cancel flag checked cooperatively by runtimes and the client,
    the GPU device ids the trial was given (empty when no GPU pool is in use), and the early-stopping rule.

    ``report_cell`` is called by the evaluate function (the benchmark client does it) after each finished cell;
    the cells' aggregates are kept (``cells``, with the wall time of each report in ``cell_times``) and ``rule``
    may stop the trial there by raising ``TrialFailure(PRUNED)``. A benchmark in a child process sends each
    cell's aggregates back (``CellSummary``, small), so both kinds are accepted.
    """

    def __init__(self, seconds: float | None, devices: tuple[int, ...] = (), rule: CellRule | None = None) -> None:
        self.devices = devices
        self.rule = rule
        self.started = time.monotonic()
        self.benchmark_started: float | None = None  # set by ``start_benchmark`` (after the launch)
        self.cells: list[CellSummary] = []
        self.cell_times: list[float] = []  # time.monotonic() of each report_cell
        self._end = None if seconds is None else time.monotonic() + seconds
        self._cancelled = False  # set from another thread (the session's, on Ctrl-C): a plain flag is enough

    def start_benchmark(self) -> None:
        """The server is up and the benchmark begins now (separates launch from benchmark time for costs)."""
        self.benchmark_started = time.monotonic()

    def report_cell(self, cell: CellMetrics | CellSummary) -> None:
        """One more finished cell; raises ``TrialFailure(PRUNED, reason)`` when the rule stops the trial."""
        from pytest_autotuner.core.measure.metrics import CellSummary, json_safe

        if not isinstance(cell, CellSummary):
            cell = CellSummary.from_dict(json_safe(cell.as_dict()))
        self.cells.append(cell)
        self.cell_times.append(time.monotonic())
        if self.rule is None:
            return
        reason = self.rule(tuple(self.cells))
        if reason:
            raise TrialFailure(FailureClass.PRUNED, reason)

    def remaining(self) -> float:
        """Seconds left (inf without a limit, 0 once cancelled or expired)."""
        if self._cancelled:
            return 0.0
        if self._end is None:
            return float("inf")
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` (bounded by the budget); True if the deadline passed or was cancelled."""
        end = time.monotonic() + min(seconds, self.remaining())
        while not self._cancelled and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, _CANCEL_POLL_S))  # a cancel is seen within this long
        return self.expired
