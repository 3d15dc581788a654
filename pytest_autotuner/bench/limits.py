"""A cell's limits and the checks of what it measured: ``supervise`` runs a cell's loads to its time limit
(``catch_up``: for the simulator, in its own time), ``stall_watch`` fails a trial whose server stopped answering,
``check_host_kept_up`` one whose host could not keep up with the simulator, and ``check_stalled`` and
``check_errors`` judge a finished cell. How the client measures is described in ``client.py``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from pytest_autotuner.bench.cell import SIM_HOST_LAG, Cell
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, TrialFailure

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.metrics import CellMetrics
    from pytest_autotuner.runtimes.base import Endpoint

__all__ = [
    "DEADLINE_POLL",
    "catch_up",
    "check_errors",
    "check_host_kept_up",
    "check_stalled",
    "stall_watch",
    "supervise",
]

DEADLINE_POLL = 0.05  # wall seconds between checks of the trial deadline (and of the stall watchdog)
_STALL_WALL_FLOOR = 0.5  # wall seconds: the least silence of a real server taken for a stall
_STALL_WALL_FLOOR_UNANSWERED = 2.0  # the same for a simulator whose clock does not answer
_STALL_CONFIRM = 0.5  # wall seconds a simulator seen silent must go on doing nothing for the cell (``stall_watch``)
_CLOCK_STUCK = 2.5  # wall seconds a clock stands still, held by none of the cell's promises (a hung step)


async def supervise(
    coros: Sequence[Coroutine[Any, Any, None]],
    wall_limit: float,
    deadline: Deadline | None,
    on_cut: Callable[[float], None] | None = None,
    *,
    stop: asyncio.Event | None = None,
    on_stop: Callable[[float], None] | None = None,
    watch: Callable[[float], Awaitable[None]] | None = None,
    until: Callable[[float], Awaitable[float]] | None = None,
) -> None:
    """Run ``coros`` until done or ``wall_limit``; then cancel what is left. Raises on the trial deadline.

    ``on_cut(now)`` is called when ``wall_limit`` ends with coroutines still running, before they are
    cancelled (so their requests can be recorded as incomplete at that moment). ``stop`` ends the run early
    the same way once set (the precision rule), calling ``on_stop(now)`` instead. ``watch(now)`` is called at
    least every ``DEADLINE_POLL`` seconds and may raise (the stall watchdog). At ``wall_limit``, ``until(now)``
    may ask for more wall seconds (a simulator whose clock the host held has not reached the limit in its time).
    """
    tasks = [asyncio.ensure_future(c) for c in coros]
    end = time.perf_counter() + wall_limit
    pending: set[asyncio.Future[Any]] = set(tasks)
    waiter: asyncio.Future[Any] | None = asyncio.ensure_future(stop.wait()) if stop is not None else None
    try:
        while pending:
            wait = end - time.perf_counter()
            if deadline is not None:
                wait = min(wait, DEADLINE_POLL, deadline.remaining())
            if watch is not None:
                wait = min(wait, DEADLINE_POLL)
            watched = pending | {waiter} if waiter is not None else pending
            done, pending = await asyncio.wait(watched, timeout=max(0.0, wait), return_when=asyncio.FIRST_COMPLETED)
            if waiter is not None:
                pending.discard(waiter)
            for task in done:
                if task is not waiter:
                    task.result()  # bugs in the client surface instead of hanging
            if deadline is not None and deadline.expired:
                why = "cancelled" if deadline.cancelled else "expired"
                raise TrialFailure(FailureClass.TRIAL_TIMEOUT, f"trial deadline {why} during the benchmark")
            now = time.perf_counter()
            if watch is not None and pending:
                await watch(now)
            if stop is not None and stop.is_set():
                if pending and on_stop is not None:
                    on_stop(now)
                break
            if now >= end:
                extra = await until(now) if pending and until is not None else 0.0
                if extra > 0:
                    end = time.perf_counter() + extra
                    continue
                if pending and on_cut is not None:
                    on_cut(now)
                break
    finally:
        if waiter is not None:
            waiter.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *([waiter] if waiter is not None else []), return_exceptions=True)


def catch_up(cell: Cell) -> Callable[[float], Awaitable[float]]:
    """The simulator's cell limit in its own time: the measured phase ends ``max_time`` server seconds after its
    first arrival, at ``limit``, whatever this host's pace. At the wall limit (``max_time`` / k) this asks for more
    wall time while the simulator's clock has not reached ``limit`` (a busy host held it), or while a request
    still running here has writes stamped before ``limit`` that this client has not read yet (at a high speed-up
    the client reads behind the server); at most ``SIM_HOST_LAG`` wall seconds in all, and no longer once its
    clock has stood still for ``_CLOCK_STUCK`` wall seconds, held for none of the cell's promises (a hung
    replica's step holds it; the watchdog and ``min_completed`` judge that server). Then the cut is at ``limit``
    (``server_cut``; ``censor_at_cut`` judges the records against it), or, given up, now."""
    backstop: list[float] = []
    clock: list[tuple[float, float]] = []  # (its clock, wall time) when the clock last moved

    async def more(now: float) -> float:
        if not backstop:
            backstop.append(now + SIM_HOST_LAG)
        if now >= backstop[0]:
            return 0.0
        view = await cell.server_view()
        limit = cell.server_limit(live=True)
        if view is None or limit is None:  # the host is still busy: no answer, or nothing arrived yet
            return DEADLINE_POLL
        if view.now < limit:
            if not clock or view.now > clock[0][0] or view.owed:  # held for this client's arrival: not stuck
                clock[:] = [(view.now, now)]
            elif now - clock[0][1] >= _CLOCK_STUCK:
                return 0.0
            return max(DEADLINE_POLL, (limit - view.now) / cell.k)
        if not cell.live and (cell.next_scheduled is None or cell.next_scheduled <= cell.plan.max_time):
            return DEADLINE_POLL  # between requests (all answered, or the next one due before the limit)
        if view.progress is not None:
            for index, parser in cell.live.items():
                written = view.progress.get(cell.token(index))
                if written is None:
                    return DEADLINE_POLL  # not there yet, or finished there and not yet read here
                arrival = cell.live_arrivals.get(index)
                read = parser.server_at if parser.server_at is not None else arrival
                if (read is None and written <= limit) or (read is not None and read < min(written, limit)):
                    return DEADLINE_POLL  # what it did before the limit is still on its way here
        cell.server_cut = limit
        return 0.0

    return more


def stall_watch(cell: Cell, label: str, endpoint: Endpoint) -> Callable[[float], Awaitable[None]]:
    """The stall watchdog of a cell: fails the trial as ``stalled`` once the server has sent nothing for
    ``plan.stall_seconds()`` server seconds while requests wait on it, however many finished before.

    The simulator's silence is read on its own clock (``/sim/now``), which never runs ahead of what it did (a
    busy host, or a step not yet emitted, holds it), so neither this machine's load nor the speed-up can make a
    healthy simulator look silent. A real server's is wall seconds, at least ``_STALL_WALL_FLOOR`` of them.

    One exception: a simulator this host froze (a busy runner) finds its clock ahead when it runs again, until its
    driver has emitted the steps now overdue. So a simulator's silence is a stall only once what it says it last
    did for the cell (``ServerView.last``) has not moved for ``_STALL_CONFIRM`` wall seconds since it was first
    seen silent: a frozen one catching up writes meanwhile, a hung one does not."""
    limit_s = cell.plan.stall_seconds()
    wall = limit_s / cell.k
    suspect: list[tuple[float | None, float]] = []  # (what it last did, wall time) when first seen silent

    async def watch(now: float) -> None:
        silent = cell.silence(now)  # wall seconds
        quiet = silent * cell.k
        if quiet < limit_s:
            return
        if cell.simulated:
            view = await cell.server_view()
            if not cell.live:  # the last waiting request ended while the clock was read: nothing waits
                return
            if view is not None:
                if cell.server_progress == -math.inf:  # its clock did not answer when the cell began
                    cell.server_progress = view.now
                if view.progress is not None and not view.progress:
                    return  # it runs none of them: all written, this host is still reading (nothing waits on it)
                quiet = cell.server_silence(view)
                if quiet < limit_s:
                    suspect.clear()
                    return
                if view.last is not None or view.progress is not None:  # it says what it did: confirm
                    if not suspect or suspect[0][0] != view.last:
                        suspect[:] = [(view.last, now)]
                        return
                    if now - suspect[0][1] < _STALL_CONFIRM:
                        return
            elif silent < max(wall, _STALL_WALL_FLOOR_UNANSWERED):
                return
        elif silent < max(wall, _STALL_WALL_FLOOR):
            return
        finished = sum(1 for r in cell.records if r.ok or r.failed)
        raise TrialFailure(
            FailureClass.STALLED,
            f"cell {label}: the server at {endpoint.base_url} sent nothing for {quiet:.1f} s while "
            f"{len(cell.live)} request(s) waited on it ({finished} finished before); it stopped answering "
            f"(benchmark.stall_timeout {limit_s:g} s)",
        )

    return watch


async def check_host_kept_up(cell: Cell, label: str) -> None:
    """Fail the cell when the simulator placed some of its arrivals late: this client fell more than the
    simulator's ``--sim-promise-patience`` (10 wall s) behind its clock, so the load it served was lighter and
    later than the plan's, and its figures would not be the configuration's. A host too slow for the speed-up is
    not the configuration's fault; the operator lowers ``simulator.speedup``."""
    view = await cell.server_view()
    if view is not None and view.late:
        raise TrialFailure(
            FailureClass.HOST_TOO_SLOW,
            f"cell {label}: this host could not keep up with the simulator at speed-up {cell.k:g}: {view.late} "
            "request(s) reached it after it had stopped waiting for them, so it did not serve the planned load; "
            "lower `simulator.speedup` (or run fewer trials at once)",
        )


def check_stalled(cell: CellMetrics, min_completed: int | None, max_time: float) -> None:
    """Too few requests finished within the cell's time limit: nothing trustworthy was measured.

    A cell the precision rule stopped has enough samples by definition, however many were still running."""
    if cell.precision_stop:
        return
    sent = len(cell.records)
    need = min(sent, min_completed if min_completed is not None else max(1, math.ceil(sent / 2)))
    if cell.finished >= need:
        return
    raise TrialFailure(
        FailureClass.STALLED,
        f"cell {cell.label}: only {cell.finished} of {sent} requests finished within max_time_per_iteration "
        f"({max_time:g} s); {cell.incomplete} still running: the server stopped answering or is far too slow "
        f"for this load",
    )


def check_errors(cell: CellMetrics, max_error_rate: float) -> None:
    if cell.error_rate <= max_error_rate:
        return
    errors = cell.errors
    if not cell.records:
        raise TrialFailure(
            FailureClass.BENCHMARK_ERRORS,
            f"cell {cell.label}: no request finished within `max_time`; raise `max_time` or lower the load",
        )
    counts = ", ".join(f"{kind}={n}" for kind, n in errors.most_common())
    message = (
        f"cell {cell.label}: {sum(errors.values())} of {cell.finished} finished requests failed ({counts}), "
        f"error rate {cell.error_rate:.2f} above `max_error_rate` {max_error_rate:g}"
    )
    examples = sorted({r.error_detail for r in cell.records if r.error_detail})[:3]
    if examples:
        message += "; e.g. " + " | ".join(examples)
    crashed = errors.get("connection", 0) * 2 >= sum(errors.values())
    raise TrialFailure(FailureClass.CRASHED if crashed else FailureClass.BENCHMARK_ERRORS, message)
