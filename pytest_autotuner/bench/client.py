"""Benchmark client: drives an OpenAI-compatible streaming server (SGLang) through a BenchmarkPlan.

Here: the run of a plan's cells, one after another (``run_cell``). Beside it: ``cell.py`` (one cell in flight:
sending, recording, censoring at the cut), ``loads.py`` (closed loop, open loop, sessions), ``limits.py`` (the
cell's time limit in the server's time, the stall watchdog, host lag, the stalled and error checks),
``requests.py`` (what each request sends), ``stream.py`` (SSE parsing and the stamping of reads),
``server_control.py`` (drain and flush between load steps), ``server_metrics.py`` (SGLang's queue-time
histogram), ``prompts.py`` and ``datasets.py`` (the texts sent). Metric definitions match SGLang's
``bench_serving`` (see ``metrics.py``).
One aiohttp session with an unlimited connector is shared by all cells; the SSE stream is read in large blocks
and split into lines, with one ``json.loads`` per data line and no tokenizing on the event loop.

Times are server seconds. The built-in simulator says when each request arrived and each chunk was produced
on its own clock (response header ``X-Sim-Arrival``, an SSE comment ``: sim-time <s>`` before each write); then
TTFT, ITL, E2E, send times and the cell's duration are differences of those stamps, exactly what the simulated
server did, whatever its speed-up and however busy this machine is. A server without stamps (real SGLang) is
timed by this client's clock: wall seconds times ``endpoint.time_scale`` k (1 for real servers).
The simulator's first write of a request also says when its prefill started (``: sim-prefill <s>``): the
record's ``queue_time`` is that minus its arrival (None for a server that does not say). Sent in the stream,
not fetched from ``/sim/timeline`` afterwards: it is on the same clock as the other stamps, needs no matching of
requests to timeline rows, and is there for an incomplete request too.
``plan.max_time`` and ``plan.request_timeout`` are server seconds. For a real server the wall limits are those
(k = 1). For the simulator the verdicts are in its time: a request is timed out when its stamps say it took
longer, and the cell is cut once the simulator's clock is ``max_time`` past the first arrival and this client
has read what was written before then (``limits.catch_up``; what it read later is censored at the cut). The wall
limits (those divided by k) are only where that check begins, plus ``cell.SIM_HOST_LAG`` wall seconds of backstop:
at speed-up 1,000 a busy host or this client's own reading falls behind the simulator by more than
request_timeout / k, and wall limits alone timed healthy requests out.

Arrivals the simulator can count on: each request names itself (``X-Sim-Token``) and announces the request
that will follow it (``X-Sim-Then``: at its end in a closed loop, ``+gap`` after its arrival in an open loop
and in a closed loop's first burst); the follower says which promise it keeps (``X-Sim-After``). The
simulator then holds its clock until the follower is there, so this client's reaction time (tens of wall ms
on a loaded machine, times the speed-up) does not thin the simulated batch (see ``sim/server.py``). Real
servers ignore these headers.

What is sent (each request's lengths and body, multi-turn sessions with the replies received) is prepared by
``requests.py`` (``CellRequests``) before the cell's first request; ``loads.sessions`` runs sessions as users,
one per worker, turns in order (``X-Sim-Think`` announces the think time). Each record keeps the server's
``usage.prompt_tokens_details.cached_tokens``.

Tokens per chunk: OpenAI chunks do not say how many tokens they carry. When the server sends ``usage`` on
content chunks the deltas of ``completion_tokens`` are used; otherwise each chunk counts one token and, when
``usage.completion_tokens`` exceeds the number of chunks (``--stream-interval`` > 1 puts several tokens in one
chunk), the surplus is spread evenly over the chunks, earliest chunks first.

Arrival times: every socket read is stamped with ``time.perf_counter()`` the moment the event loop hands it
to the connection's protocol (``stream._StampingHandler``, installed by ``stream.StampingConnector``; the
request's parser reaches the connection through a context variable). Its bytes are parsed soon after, one
connection per loop iteration with a poll in between (``_Burst``), so a burst of reads (a decode step writing to
every stream) does not stamp the last read after parsing all the others. The request's
task sleeps until the end of the response instead of waking once per chunk. Reading chunks in the task (the
usual ``async for`` over the body) would stamp each chunk after every task woken before it in that loop
iteration: with hundreds of streams that is milliseconds of error in ITL (p99 lag 1-40 ms against 0.7-1.3 ms at
512 streams x 20,000 chunks/s), and the wake-ups cost about a quarter of the client's CPU per chunk (see
``benchmarks/RESULTS.md``). If aiohttp's internals ever stop matching
(``BaseConnector._factory``, ``ResponseHandler._payload``), the client logs it once and stamps in the task.

Cell limits: a cell ends when its requests are done or at ``plan.max_time``. A measured request still running
at that moment is recorded as incomplete (``metrics.INCOMPLETE``: its send time and the tokens received so far,
no latencies) and the cell's duration runs to that moment, so throughput covers the whole window. A cell in
which fewer than ``plan.min_completed`` requests finished (default: half of those sent) fails the trial as
``stalled``: a server that stops answering is not a fast server with few samples.

Garbage collection: a full collection of a big heap (the pytest process holds pandas, Optuna, matplotlib)
stops the event loop for tens of milliseconds, and every chunk that arrives meanwhile is stamped late: that
is measurement error in TTFT and ITL, in bursts. Automatic collection is therefore off while any cell runs
(``paused_gc``, shared by concurrent trials) and back on when the last one ends; the client leaves about two
cyclic objects per request behind, so nothing piles up meanwhile (see ``benchmarks/bench_client.py``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from pytest_autotuner.bench.cell import Cell
from pytest_autotuner.bench.limits import (
    catch_up,
    check_errors,
    check_host_kept_up,
    check_stalled,
    stall_watch,
    supervise,
)
from pytest_autotuner.bench.loads import closed_loop, open_loop
from pytest_autotuner.bench.server_metrics import read_queue_times
from pytest_autotuner.bench.stream import new_session, paused_gc
from pytest_autotuner.core.measure.metrics import BenchResult, CellMetrics
from pytest_autotuner.core.measure.plan import CellKey
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, TrialFailure

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.plan import BenchmarkPlan
    from pytest_autotuner.core.spec.scenarios import Scenario
    from pytest_autotuner.runtimes.base import Endpoint

__all__ = ["run_benchmark", "run_cell"]

logger = logging.getLogger(__name__)

_SERVER_INFO_TIMEOUT = 10.0  # wall seconds, at most
_METRICS_TIMEOUT = 5.0  # one read of /metrics (Prometheus text of a few hundred series)


async def run_cell(
    session: aiohttp.ClientSession,
    endpoint: Endpoint,
    plan: BenchmarkPlan,
    scenario: Scenario,
    concurrency: int,
    request_rate: float | None = None,
    *,
    deadline: Deadline | None = None,
    server_metrics: bool = False,
) -> CellMetrics:
    """Measure one cell: closed loop at ``concurrency``, or open loop at ``request_rate`` when given.

    With ``server_metrics`` (the server answers ``/metrics`` with SGLang's queue-time histogram) the histogram is
    read before and after the measured requests, for the cell's mean queueing time (``server_metrics.py``)."""
    # a ladder step draws from its seed alone, so every load sends the same requests (``common_arrivals``)
    key = (scenario.text if plan.common_arrivals else f"{scenario.text}|{concurrency}|{request_rate}").encode()
    cell = Cell(session, endpoint, plan)
    cell.requests.prepare(scenario, seed=plan.seed * 1_000_003 + zlib.crc32(key))
    warm_workers = concurrency if request_rate is None else plan.warmup_requests
    label = CellKey(scenario.text, concurrency, request_rate).label
    watch = stall_watch(cell, label, endpoint)
    if cell.simulated:  # the watchdog measures the simulator's silence from here on its clock
        started = await cell.sim_now()
        cell.server_progress = -math.inf if started is None else started
    with paused_gc():
        if plan.warmup_requests:
            warmup = closed_loop(cell, plan.max_requests, plan.warmup_requests, warm_workers, keep=False)
            await supervise([warmup], float("inf"), deadline, watch=watch)
            await cell.withdraw_owed()
        cell.reset_clock()
        cell.track_precision(concurrency)
        queue_before = await read_queue_times(session, endpoint.base_url, _METRICS_TIMEOUT) if server_metrics else None
        if request_rate is None:
            measured = closed_loop(cell, 0, plan.max_requests, concurrency, keep=True)
        else:
            measured = open_loop(cell, request_rate)
        await supervise(
            [measured],
            plan.max_time / cell.k,
            deadline,
            on_cut=cell.cut,
            stop=cell.enough,
            on_stop=cell.precision_cut,
            watch=watch,
            until=catch_up(cell) if cell.simulated else None,
        )
        await cell.withdraw_owed()
        queue_after = await read_queue_times(session, endpoint.base_url, _METRICS_TIMEOUT) if queue_before else None
    window = queue_after.since(queue_before) if queue_after and queue_before else None
    limit = cell.server_limit() if cell.simulated and not cell.stopped_for_precision else None
    if cell.server_cut is None and limit is not None and cell.server_end > limit:
        # done while the wall limit waited on its clock: past max_time all the same
        cell.server_cut = limit
        cell.cut(time.perf_counter())
    cell.censor_at_cut()
    if cell.simulated:
        await check_host_kept_up(cell, label)
    records = sorted(cell.in_server_time(cell.records), key=lambda r: r.send_time)
    duration = cell.server_duration()
    if duration is None:
        duration = (cell.last_end - cell.t0) * cell.k
    if cell.cut_at is not None:
        # cut at the time limit: the window runs to the cut (requests still running were part of it)
        if cell.server_cut is not None and (origin := cell.origin()) is not None:  # the cell's max_time, server time
            duration = cell.server_cut - origin
        else:
            duration = max(duration, (cell.cut_at - cell.t0) * cell.k)
    tracker = cell.tracker
    metrics = CellMetrics(
        scenario.text,
        concurrency,
        duration,
        records,
        request_rate,
        precision_stop=cell.stopped_for_precision,
        half_width=None if tracker is None else tracker.half_width,
        server_queue=(window.seconds, window.requests) if window is not None and window.requests else None,
    )
    logger.debug("cell %s: %d requests, errors %s", metrics.label, len(records), dict(metrics.errors))
    return metrics


async def _server_info(session: aiohttp.ClientSession, endpoint: Endpoint, timeout: float) -> dict[str, Any]:
    url = endpoint.base_url.rstrip("/") + "/server_info"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status == 200:
                info = await resp.json(content_type=None)
                if isinstance(info, dict):
                    return info
    except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ValueError) as exc:
        logger.debug("no /server_info from %s: %s", endpoint.base_url, exc)
    return dict(endpoint.server_info)


async def _run(
    endpoint: Endpoint,
    plan: BenchmarkPlan,
    deadline: Deadline | None,
    on_cell: Callable[[CellMetrics], None] | None,
) -> BenchResult:
    info_timeout = min(_SERVER_INFO_TIMEOUT, deadline.remaining() if deadline else _SERVER_INFO_TIMEOUT)
    async with new_session() as session:
        result = BenchResult([], await _server_info(session, endpoint, max(0.1, info_timeout)))
        server_metrics = await read_queue_times(session, endpoint.base_url, max(0.1, info_timeout)) is not None
        for scenario, concurrency, rate in plan.cells():
            if deadline is not None and deadline.expired:
                raise TrialFailure(FailureClass.TRIAL_TIMEOUT, "trial deadline passed between cells")
            cell = await run_cell(
                session, endpoint, plan, scenario, concurrency, rate, deadline=deadline, server_metrics=server_metrics
            )
            result.cells.append(cell)
            if on_cell is not None:
                on_cell(cell)
            check_stalled(cell, plan.min_completed, plan.max_time)
            check_errors(cell, plan.max_error_rate)
            if deadline is not None:
                deadline.report_cell(cell)  # early stopping: may end the trial here (TrialFailure PRUNED)
        return result


def run_benchmark(
    endpoint: Endpoint,
    plan: BenchmarkPlan,
    *,
    deadline: Deadline | None = None,
    on_cell: Callable[[CellMetrics], None] | None = None,
) -> BenchResult:
    """Run every cell of ``plan`` against ``endpoint`` in order; raises TrialFailure on errors or deadline.

    Runs its own event loop (``asyncio.run``, which installs no signal handler outside the main thread), so
    call it from a worker thread or plain synchronous code, not from inside a running loop. ``on_cell`` sees
    each finished cell before it is checked for stalling (too few requests finished) and its error rate;
    ``deadline.report_cell`` sees each cell that passed those checks, and its rule may prune the trial there.
    """
    return asyncio.run(_run(endpoint, plan, deadline, on_cell))
