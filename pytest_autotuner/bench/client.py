"""Benchmark client: drives an OpenAI-compatible streaming server (SGLang) through a BenchmarkPlan.

Here: the cell (closed and open loops, sessions, limits, the stall watchdog) and the run of a plan's cells.
Beside it: ``requests.py`` (what each request sends), ``stream.py`` (SSE parsing and the stamping of reads),
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
has read what was written before then (``_catch_up``; what it read later is censored at the cut). The wall
limits (those divided by k) are only where that check begins, plus ``_SIM_HOST_LAG`` wall seconds of backstop:
at speed-up 1,000 a busy host or this client's own reading falls behind the simulator by more than
request_timeout / k, and wall limits alone timed healthy requests out.

Arrivals the simulator can count on: each request names itself (``X-Sim-Token``) and announces the request
that will follow it (``X-Sim-Then``: at its end in a closed loop, ``+gap`` after its arrival in an open loop
and in a closed loop's first burst); the follower says which promise it keeps (``X-Sim-After``). The
simulator then holds its clock until the follower is there, so this client's reaction time (tens of wall ms
on a loaded machine, times the speed-up) does not thin the simulated batch (see ``sim/server.py``). Real
servers ignore these headers.

What is sent (each request's lengths and body, multi-turn sessions with the replies received) is prepared by
``requests.py`` (``CellRequests``) before the cell's first request; ``_Cell.sessions`` runs sessions as users,
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

Why one module of about 1,030 lines: a cell's loops (closed, open, sessions), its limits and its watchdog share the
cell's in-flight state; what is sent is requests.py, parsing and stamping stream.py, draining server_control.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import sys
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np

if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
else:  # pragma: no cover - aiohttp requires async-timeout before 3.11
    from async_timeout import timeout as _timeout

from pytest_autotuner.bench.requests import CellRequests
from pytest_autotuner.bench.server_metrics import read_queue_times
from pytest_autotuner.bench.stream import (
    SINK,
    StreamParser,
    StreamStopped,
    new_session,
    paused_gc,
)
from pytest_autotuner.core.measure.metrics import INCOMPLETE, BenchResult, CellMetrics, RequestRecord
from pytest_autotuner.core.measure.plan import CellKey
from pytest_autotuner.core.measure.precision import PrecisionTracker
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, TrialFailure

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.plan import BenchmarkPlan
    from pytest_autotuner.core.spec.scenarios import Scenario
    from pytest_autotuner.runtimes.base import Endpoint

__all__ = ["run_benchmark", "run_cell"]

logger = logging.getLogger(__name__)

_READ_BUFSIZE = 1 << 21
_HEADERS = {"Content-Type": "application/json"}
_CONNECTION_BACKOFF = 0.01  # wall seconds a closed-loop worker waits after a connection error
_DEADLINE_POLL = 0.05  # wall seconds between checks of the trial deadline (and of the stall watchdog)
_STALL_WALL_FLOOR = 0.5  # wall seconds: the least silence of a real server taken for a stall
_STALL_WALL_FLOOR_UNANSWERED = 2.0  # the same for a simulator whose clock does not answer
_STALL_CONFIRM = 0.5  # wall seconds a simulator seen silent must go on doing nothing for the cell (``_stall_watch``)
_SERVER_INFO_TIMEOUT = 10.0  # wall seconds, at most
# wall seconds the host may fall behind a simulator's clock before the client's wall limits (a request's timeout,
# a cell's max_time: server seconds / speed-up) give up on it; the verdicts themselves are in server time
_SIM_HOST_LAG = 30.0
_CLOCK_STUCK = 2.5  # wall seconds: longer than a promise is held for a late client (``sim.server.PROMISE_GRACE``)


def _classify(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout", "request timed out"
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError, OSError)):
        return "connection", f"{type(exc).__name__}: {exc}"
    return "other", f"{type(exc).__name__}: {exc}"


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclasses.dataclass(frozen=True)
class ServerView:
    """What ``/sim/now?tag=`` says: the simulator's clock; for a simulator that tracks them (else None), the
    simulated time of the latest write to each of the cell's requests it still runs, by token, and the latest
    write to any of the cell's requests."""

    now: float
    progress: Mapping[str, float] | None = None
    last: float | None = None
    late: int = 0  # the cell's arrivals the simulator could not place where their promise said (this host lagged)

    @classmethod
    def of(cls, body: object) -> ServerView | None:
        if not isinstance(body, dict) or (now := _seconds(body.get("now"))) is None:
            return None
        raw = body.get("progress")
        progress = (
            {str(k): t for k, v in raw.items() if (t := _seconds(v)) is not None} if isinstance(raw, dict) else None
        )
        late = body.get("late")
        return cls(now, progress, _seconds(body.get("last")), late if type(late) is int and late > 0 else 0)


class _Cell:
    """One (scenario, load) cell: its precomputed requests, its clock and its records."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: Endpoint, plan: BenchmarkPlan) -> None:
        self.session, self.plan, self.model, self.k = session, plan, endpoint.model_name, endpoint.time_scale
        path = "/v1/chat/completions" if plan.api == "chat" else "/v1/completions"
        self.url = endpoint.base_url.rstrip("/") + path
        self.simulated = "sim_speedup" in endpoint.server_info
        # The simulator's clock does not run while the host keeps it from working, so a wall limit of
        # request_timeout / k would time requests out for the host's lag (0.12 s at speed-up 1000): its wall
        # limit is a backstop and a request is judged on its server time (``_over_time``).
        self.timeout_s = plan.request_timeout / self.k + (_SIM_HOST_LAG if self.simulated else 0.0)
        self.timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        self.t0 = self.last_end = 0.0
        self.records: list[RequestRecord] = []
        self.cut_at: float | None = None  # when the measured phase was cut at its time limit
        self.tag = uuid.uuid4().hex[:8]  # names this cell's requests to the simulator (X-Sim-Token)
        self.base_url = endpoint.base_url.rstrip("/")
        # Server time (requests the server stamped): absolute arrival of each record, and the latest end.
        self.arrivals: dict[int, float] = {}  # id(record) -> the server's arrival stamp
        self.server_end = -math.inf
        self.server_stamps = False  # the server stamps its responses (the simulator): it keeps promises
        # ``plan.precision``: the running estimate of the objective's metric, and the signal that it is enough
        self.tracker: PrecisionTracker | None = None
        self.enough: asyncio.Event | None = None
        self.in_flight = 0  # measured requests sent and not yet answered
        # The stall watchdog: every request sent and not yet answered (warm-ups too), by index, and when the
        # server last did something for this cell (a response ended, or a request was sent to an idle cell).
        self.live: dict[int, StreamParser] = {}
        self.progress_at = 0.0
        # The same in the simulator's time (it stamps): its clock when the cell began, the latest stamp of a
        # finished request, and the arrival stamp of each request still running.
        self.server_progress = -math.inf
        self.server_cut: float | None = None  # the simulator's clock when the measured phase was cut
        #: an open loop's next request not yet sent: its scheduled server seconds after the cell start
        self.next_scheduled: float | None = None
        self.live_arrivals: dict[int, float] = {}
        self.server_info = endpoint.server_info
        #: what is sent: each request's lengths and body, and the sessions of multi-turn traffic
        self.requests = CellRequests(plan, endpoint.model_name, endpoint.server_info)

    def track_precision(self, concurrency: int) -> None:
        """Stop the measured phase once the objective's metric is precise enough (``core/measure/precision.py``); at
        least one completed request per concurrent stream, so a closed loop's first wave is not the sample."""
        plan = self.plan
        if plan.precision is None:
            return
        need = max(plan.min_requests_for_precision, concurrency)
        self.tracker = PrecisionTracker(plan.precision_metric, plan.precision, need)
        self.enough = asyncio.Event()

    @property
    def stopped_for_precision(self) -> bool:
        return self.enough is not None and self.enough.is_set()

    def keep(self, record: RequestRecord) -> None:
        """A measured request's record; tells the precision rule about it."""
        self.records.append(record)
        self.last_end = time.perf_counter()
        tracker = self.tracker
        if tracker is None or not record.ok or self.enough is None or self.enough.is_set():
            return
        value = None if tracker.metric == "throughput" else getattr(record, tracker.metric)
        if tracker.add(value, record.output_tokens, record.e2e):
            self.enough.set()

    def precision_cut(self, now: float) -> None:
        """The precision rule ended the measured phase: requests still running are incomplete, as at a cut."""
        if self.in_flight:
            self.cut(now)

    def token(self, index: int) -> str:
        return f"{self.tag}.{index}"

    def reset_clock(self) -> None:
        """The measured part of the cell starts now."""
        self.t0 = self.last_end = time.perf_counter()
        self.arrivals.clear()
        self.server_end = -math.inf

    def censor_at_cut(self) -> None:
        """The measured phase was cut at ``server_cut`` (server time): what this client read after that instant
        did not happen within the cell. A request that arrived later is left out (the load would not have sent
        it); one that finished later is still running at the cut (incomplete, with what it had by then)."""
        cut = self.server_cut
        if cut is None:
            return
        kept: list[RequestRecord] = []
        for record in self.records:
            arrival = self.arrivals.get(id(record))
            if arrival is not None and arrival > cut:
                del self.arrivals[id(record)]
                continue
            if arrival is not None and record.ok and record.e2e is not None and arrival + record.e2e > cut:
                waited = cut - arrival
                had = [(t, n) for t, n in zip(record.chunk_times, record.chunk_tokens, strict=False) if t <= waited]
                censored = dataclasses.replace(
                    record,
                    output_tokens=sum(n for _, n in had),
                    ttft=had[0][0] if had else None,
                    e2e=None,
                    chunk_times=tuple(t for t, _ in had),
                    chunk_tokens=tuple(n for _, n in had),
                    error=INCOMPLETE,
                    error_detail=f"still running {waited:.3g} s after it was sent when the cell ended",
                    waited=waited,
                )
                del self.arrivals[id(record)]
                self.arrivals[id(censored)] = arrival
                record = censored
            kept.append(record)
        self.records[:] = kept

    def origin(self, *, live: bool = False) -> float | None:
        """Server time of the measured phase's first arrival (with ``live``, counting requests not yet answered);
        None before any arrived or when the server does not stamp."""
        return min([*self.arrivals.values(), *(self.live_arrivals.values() if live else ())], default=None)

    def server_limit(self, *, live: bool = False) -> float | None:
        """Server time at which the measured phase reaches ``max_time``: the cell's limit in the server's time."""
        origin = self.origin(live=live)
        return None if origin is None else origin + self.plan.max_time

    def server_duration(self) -> float | None:
        """Server seconds from the first arrival to the last end of the measured requests, if the server stamps."""
        origin = self.origin()
        if origin is None or self.server_end == -math.inf:
            return None
        return self.server_end - origin

    def in_server_time(self, records: list[RequestRecord]) -> list[RequestRecord]:
        """Records with send times counted from the first server arrival (stamped ones; the others as measured)."""
        origin = self.origin()
        if origin is None:
            return records
        return [
            dataclasses.replace(r, send_time=self.arrivals[id(r)] - origin) if id(r) in self.arrivals else r
            for r in records
        ]

    async def sessions(self, count: int, workers: int, keep: bool) -> None:
        """``workers`` users, each running one session's turns in order (thinking between them), then the next.

        To the simulator: like ``closed_loop``, with the next turn promised ``think`` seconds after a reply ends
        (``X-Sim-Think``) and the next session's first turn at the end of the last.
        """
        sessions = [r for r in self.requests.sessions_of if r.start < count]
        claim = itertools.count()
        n = max(1, min(workers, len(sessions)))
        starters = [next(claim) for _ in range(n)]
        think_s = self.requests.think

        async def worker(k: int) -> None:
            session = starters[k]
            after = f"{self.token(sessions[starters[k - 1]].start)}@start" if k else None
            then = "end, +0" if k + 1 < n else "end"
            while True:
                turns = sessions[session]
                last = min(count, turns.stop) - 1
                for i in range(turns.start, last + 1):
                    think = think_s if i < last else 0.0
                    self.requests.bodies[i] = self.requests.turn_body(i)
                    record = await self.send(i, then=then, after=after, think=think)
                    if keep:
                        self.keep(record)
                    await self._withdraw_if_failed(i, record)
                    promised = record.ok and self.server_stamps
                    after, then = (f"{self.token(i)}@end" if promised else None), "end"
                    if i < last and think > 0:
                        await asyncio.sleep(think / self.k)  # the user reads the reply (server seconds / k)
                session = next(claim)
                if session >= len(sessions):
                    if after is not None:
                        await self._withdraw(after)
                    return

        await _supervise([worker(k) for k in range(n)], float("inf"), None)

    async def send(
        self,
        index: int,
        scheduled: float | None = None,
        *,
        then: str | None = None,
        after: str | None = None,
        think: float = 0.0,
    ) -> RequestRecord:
        """Send request ``index`` (warm-ups come after the measured ones) and return its record.

        ``then`` and ``after`` announce arrivals to the simulator (``X-Sim-Then`` / ``X-Sim-After``, see the
        module docstring); the record is in server time when the response is stamped.
        """
        parser = (
            StreamParser(self.plan.api, keep_text=True) if self.requests.multi_turn else StreamParser(self.plan.api)
        )
        error: str | None = None
        detail = ""
        arrival: float | None = None
        headers = {**_HEADERS, "X-Sim-Token": self.token(index)}
        if then:
            headers["X-Sim-Then"] = then
        if after:
            headers["X-Sim-After"] = after
        if think:
            headers["X-Sim-Think"] = repr(think)
        token = SINK.set(parser)
        start = time.perf_counter()
        measured = index < self.plan.max_requests
        self.in_flight += measured
        if not self.live:
            self.progress_at = start  # the server owes nothing before this
        self.live[index] = parser
        try:
            async with self.session.post(
                self.url,
                data=self.requests.bodies[index],
                headers=headers,
                timeout=self.timeout,
                read_bufsize=_READ_BUFSIZE,
            ) as resp:
                stamp = resp.headers.get("X-Sim-Arrival")
                if stamp is not None:
                    with contextlib.suppress(ValueError):
                        arrival = self.live_arrivals[index] = float(stamp)
                if resp.status // 100 != 2:
                    error = "http_status"
                    with contextlib.suppress(asyncio.TimeoutError, TimeoutError, aiohttp.ClientError, StreamStopped):
                        await self._read_body(resp.content, parser, min(1.0, self._left(start)))
                    detail = f"HTTP {resp.status}: {parser.head.decode(errors='replace')}"
                else:
                    await self._read_body(resp.content, parser, self._left(start))
        except asyncio.CancelledError:
            self._record_incomplete(index, start, parser, scheduled, arrival)
            raise
        except StreamStopped:
            pass  # parser.error says why
        except Exception as exc:
            if not (parser.done and isinstance(exc, (asyncio.TimeoutError, TimeoutError))):
                error, detail = _classify(exc)
        finally:
            SINK.reset(token)
            self.in_flight -= measured
            self.live.pop(index, None)
            self.live_arrivals.pop(index, None)
            self.progress_at = time.perf_counter()
            if parser.server_at is not None or arrival is not None:
                stamps = [t for t in (parser.server_at, arrival) if t is not None]  # 0.0 is a time too
                self.server_progress = max(self.server_progress, *stamps)
        if parser.texts is not None:
            self.requests.replies[index] = "".join(parser.texts).strip()
        if error is None and parser.error is not None:
            error, detail = parser.error, parser.error_detail
        elif error is None and not (parser.done or parser.finished):
            error, detail = "truncated_stream", "stream ended without finish_reason or [DONE]"
        if arrival is not None and (parser.server_at is not None or error is not None):  # server time
            end = parser.done_at if parser.done else (parser.server_at or arrival)
            if error is None and end - arrival > self.plan.request_timeout:
                error, detail = "timeout", self._over_time(end - arrival)
            record = self._record(index, parser, error, detail, scheduled, send_time=arrival, start=arrival, end=end)
            if record.ok and parser.prefill_at is not None:
                record = dataclasses.replace(record, queue_time=max(0.0, parser.prefill_at - arrival))
            self.arrivals[id(record)] = arrival  # made relative to the cell's first arrival in run_cell
            self.server_stamps = True
            if error is None:
                self.server_end = max(self.server_end, end)
            return record
        # [DONE] is the last byte that counts; the chunked terminator after it only lets the connection be reused.
        end = parser.done_at or (parser.last_at if error is None else 0.0) or time.perf_counter()
        k = self.k
        return self._record(
            index, parser, error, detail, scheduled, send_time=(start - self.t0) * k, start=start, end=end, scale=k
        )

    def _record(
        self,
        index: int,
        parser: StreamParser,
        error: str | None,
        detail: str,
        scheduled: float | None,
        *,
        send_time: float,
        start: float,
        end: float,
        scale: float = 1.0,
    ) -> RequestRecord:
        """The record of request ``index``: chunk times and E2E counted from ``start``, times ``scale``."""
        req_in, req_out = self.requests.lengths[index]
        if error is not None:
            return RequestRecord(send_time, req_in, req_out, scheduled_time=scheduled, error=error, error_detail=detail)
        times = tuple((t - start) * scale for t in parser.chunk_times)
        return RequestRecord(
            send_time=send_time,
            requested_input_tokens=req_in,
            requested_output_tokens=req_out,
            input_tokens=parser.prompt_tokens,
            output_tokens=parser.completion_tokens,
            ttft=times[0] if times else None,
            e2e=(end - start) * scale,
            chunk_times=times,
            chunk_tokens=tuple(parser.chunk_tokens()),
            scheduled_time=scheduled,
            cached_tokens=parser.cached_tokens,
            turn=index - self.requests.session_starts[index]
            if self.requests.multi_turn and index < len(self.requests.session_starts)
            else None,
        )

    def _over_time(self, waited: float) -> str:
        limit = self.plan.request_timeout
        return f"request timed out: {waited:.3g} s of server time, over the request timeout {limit:g} s"

    def _record_incomplete(
        self, index: int, start: float, parser: StreamParser, scheduled: float | None, arrival: float | None
    ) -> None:
        """A measured request cut off by the end of its cell: kept, right-censored (``metrics``): how long it had
        waited, and what it received so far (its chunk times, so its TTFT when the first token came)."""
        if index >= self.plan.max_requests or self.cut_at is None:
            return  # a warm-up, or a trial deadline (the trial fails anyway)
        k = self.k
        req_in, req_out = self.requests.lengths[index]
        waited = (self.cut_at - start) * k
        queued = None
        if arrival is not None and (self.server_cut is not None or parser.server_at is not None):  # server time
            times = tuple(t - arrival for t in parser.chunk_times)
            queued = None if parser.prefill_at is None else max(0.0, parser.prefill_at - arrival)
            if self.server_cut is not None:  # the simulator's clock at the cut
                waited = max(parser.server_at or arrival, self.server_cut) - arrival
            else:  # its stamps, then wall seconds since the last
                assert parser.server_at is not None
                waited = parser.server_at - arrival + max(0.0, self.cut_at - parser.last_at) * k
        else:
            times = tuple((t - start) * k for t in parser.chunk_times)
        waited = max([waited, *times])
        if arrival is not None and waited > self.plan.request_timeout:  # as it would have ended, in server time
            detail, send_time = self._over_time(waited), (start - self.t0) * k
            record = self._record(
                index, parser, "timeout", detail, scheduled, send_time=send_time, start=start, end=start
            )
            self.records.append(record)
            self.arrivals[id(record)] = arrival
            return
        record = RequestRecord(
            send_time=(start - self.t0) * k,
            requested_input_tokens=req_in,
            requested_output_tokens=req_out,
            output_tokens=sum(parser.chunk_tokens()),
            ttft=times[0] if times else None,
            chunk_times=times,
            chunk_tokens=tuple(parser.chunk_tokens()),
            scheduled_time=scheduled,
            error=INCOMPLETE,
            error_detail=f"still running {waited:.3g} s after it was sent when the cell ended",
            waited=waited,
            queue_time=queued,
        )
        self.records.append(record)
        if arrival is not None:
            self.arrivals[id(record)] = arrival  # its send time in server time, as a finished request's

    def server_silence(self, view: ServerView) -> float:
        """Simulated seconds since the server last did anything for this cell (a stamp of a finished request,
        the arrival or the latest write of one still running, as read here or as the server says), at its time."""
        stamps = [p.server_at for p in self.live.values() if p.server_at is not None]
        said = [] if view.last is None else [view.last]
        last = max([self.server_progress, *stamps, *self.live_arrivals.values(), *said])
        return max(0.0, view.now - last)

    async def sim_now(self) -> float | None:
        """The simulator's clock (``/sim/now``); None when it does not answer within a wall second."""
        view = await self.server_view()
        return None if view is None else view.now

    async def server_view(self) -> ServerView | None:
        """The simulator's clock and what it did for this cell's requests (``/sim/now?tag=``); None when it does
        not answer within a wall second."""
        try:
            url = f"{self.base_url}/sim/now?tag={self.tag}"
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=1.0)) as r:
                body = await r.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ValueError):
            return None
        return ServerView.of(body)

    def silence(self, now: float) -> float:
        """Wall seconds since the server last did anything for this cell while requests wait on it (0: none
        waits): the latest byte received, response ended, or send to an idle cell."""
        if not self.live:
            return 0.0
        last = max(self.progress_at, max(p.last_at for p in self.live.values()))
        return max(0.0, now - last)

    def cut(self, now: float) -> None:
        """The measured phase ends at ``now`` with requests still running."""
        self.cut_at = now

    def _left(self, start: float) -> float:
        """Wall seconds left of the request timeout for a request sent at ``start``."""
        return max(0.0, self.timeout_s - (time.perf_counter() - start))

    @staticmethod
    async def _read_body(content: aiohttp.StreamReader, parser: StreamParser, timeout: float) -> None:
        """Wait up to ``timeout`` for the end of the body; the connection's protocol feeds ``parser`` meanwhile.

        Unattached (a session without StampingConnector), this task reads and stamps the chunks itself. Not
        asyncio.wait_for: before 3.12 it can swallow a cancellation that lands as the body ends, and a
        closed-loop worker would then carry on past the end of its cell.
        """
        async with _timeout(timeout):
            if not parser.attached:
                async for data in content.iter_any():
                    if parser.feed(data, time.perf_counter()) and parser.error is not None:
                        return
                return
            if content.exception() is None and not content.is_eof():
                await content.wait_eof()
        if (exc := content.exception()) is not None:
            raise exc
        if rest := content.read_nowait():  # fed by aiohttp resuming its parser, not by a socket read
            parser.feed(rest, time.perf_counter())

    async def closed_loop(self, first: int, count: int, workers: int, keep: bool) -> None:
        """``workers`` loops over requests ``first .. first + count - 1``, each sending when its last ends.

        To the simulator: the first burst is one instant (each first request promises the next at ``+0``), and
        every request promises a follower at its end; a worker that runs out of requests withdraws its promise.
        """
        claim = itertools.count(first)
        if self.requests.multi_turn and first < self.plan.max_requests:
            await self.sessions(count, workers, keep)
            return
        stop = first + count
        n = max(1, min(workers, count))
        burst = [next(claim) for _ in range(n)]

        async def worker(k: int) -> None:
            i = burst[k]
            after = f"{self.token(burst[k - 1])}@start" if k else None
            then = "end, +0" if k + 1 < n else "end"
            while True:
                record = await self.send(i, then=then, after=after)
                if keep:
                    self.keep(record)
                await self._withdraw_if_failed(i, record)
                if record.error == "connection" and not self.stopped_for_precision:
                    await asyncio.sleep(_CONNECTION_BACKOFF)
                j = next(claim)
                promised = record.ok and self.server_stamps
                if j >= stop or (keep and self.stopped_for_precision):
                    if promised:  # shielded: the cell may be cut (cancelled) while it is said
                        await asyncio.shield(self._withdraw(f"{self.token(i)}@end"))
                    return
                i, after, then = j, (f"{self.token(i)}@end" if promised else None), "end"

        await _supervise([worker(k) for k in range(n)], float("inf"), None)

    async def _withdraw_if_failed(self, index: int, record: RequestRecord) -> None:
        """A request the simulator took in that failed on this side (a malformed or cut stream, a timeout): its
        end no longer brings the next request, so withdraw that promise, or the simulator would hold its clock
        for it (``PROMISE_GRACE``) and the silence would read as a stall."""
        if record.failed and id(record) in self.arrivals:
            await asyncio.shield(self._withdraw(f"{self.token(index)}@end"))

    async def _withdraw(self, promise: str) -> None:
        """Tell the simulator that the request promised as ``promise`` will not come."""
        url = self.base_url + "/sim/release"
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, TimeoutError):
            async with self.session.post(url, headers={"X-Sim-After": promise}, timeout=self.timeout):
                pass

    async def open_loop(self, rate: float) -> None:
        """Poisson arrivals at ``rate`` requests per server second, from a schedule fixed in advance.

        Each request tells the simulator when the next one arrives (``X-Sim-Then: +gap``), so the schedule holds
        in server time even when this client sends late.
        """
        # a ladder step: the same unit-rate arrivals at every load, scaled (``BenchmarkPlan.common_arrivals``)
        arrivals = np.random.default_rng([self.plan.seed, 7]) if self.plan.common_arrivals else self.requests.rng
        gaps = arrivals.exponential(1.0 / rate, self.plan.max_requests)
        schedule = np.cumsum(gaps) - gaps[0]  # server seconds after the cell start; first at 0
        times = schedule.tolist()
        tasks: list[asyncio.Task[None]] = []

        async def one(i: int, at: float) -> None:
            then = f"+{times[i + 1] - at!r}" if i + 1 < len(times) else None
            after = f"{self.token(i - 1)}@start" if i else None
            self.keep(await self.send(i, scheduled=at, then=then, after=after))

        try:
            for i, at in enumerate(times):
                self.next_scheduled = at
                delay = self.t0 + at / self.k - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.stopped_for_precision:
                    if i and self.server_stamps:  # request i-1 promised this one
                        await asyncio.shield(self._withdraw(f"{self.token(i - 1)}@start"))
                    break
                tasks.append(asyncio.create_task(one(i, at)))
            self.next_scheduled = None
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _supervise(
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
    least every ``_DEADLINE_POLL`` seconds and may raise (the stall watchdog). At ``wall_limit``, ``until(now)``
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
                wait = min(wait, _DEADLINE_POLL, deadline.remaining())
            if watch is not None:
                wait = min(wait, _DEADLINE_POLL)
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
    cell = _Cell(session, endpoint, plan)
    cell.requests.prepare(scenario, seed=plan.seed * 1_000_003 + zlib.crc32(key))
    warm_workers = concurrency if request_rate is None else plan.warmup_requests
    watch = _stall_watch(cell, CellKey(scenario.text, concurrency, request_rate).label, endpoint)
    if cell.simulated:  # the watchdog measures the simulator's silence from here on its clock
        started = await cell.sim_now()
        cell.server_progress = -math.inf if started is None else started
    with paused_gc():
        if plan.warmup_requests:
            warmup = cell.closed_loop(plan.max_requests, plan.warmup_requests, warm_workers, keep=False)
            await _supervise([warmup], float("inf"), deadline, watch=watch)
        cell.reset_clock()
        cell.track_precision(concurrency)
        queue_before = await read_queue_times(session, endpoint.base_url, _METRICS_TIMEOUT) if server_metrics else None
        if request_rate is None:
            measured = cell.closed_loop(0, plan.max_requests, concurrency, keep=True)
        else:
            measured = cell.open_loop(request_rate)
        await _supervise(
            [measured],
            plan.max_time / cell.k,
            deadline,
            on_cut=cell.cut,
            stop=cell.enough,
            on_stop=cell.precision_cut,
            watch=watch,
            until=_catch_up(cell) if cell.simulated else None,
        )
        queue_after = await read_queue_times(session, endpoint.base_url, _METRICS_TIMEOUT) if queue_before else None
    window = queue_after.since(queue_before) if queue_after and queue_before else None
    limit = cell.server_limit() if cell.simulated and not cell.stopped_for_precision else None
    if cell.server_cut is None and limit is not None and cell.server_end > limit:
        # done while the wall limit waited on its clock: past max_time all the same
        cell.server_cut = limit
        cell.cut(time.perf_counter())
    cell.censor_at_cut()
    if cell.simulated:
        await _check_host_kept_up(cell, CellKey(scenario.text, concurrency, request_rate).label)
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


_METRICS_TIMEOUT = 5.0  # one read of /metrics (Prometheus text of a few hundred series)


async def _check_host_kept_up(cell: _Cell, label: str) -> None:
    """Fail the cell when the simulator placed some of its arrivals late: this client fell more than
    ``sim.server.PROMISE_GRACE`` wall seconds behind the simulator's clock, so the load it served was lighter and
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


def _catch_up(cell: _Cell) -> Callable[[float], Awaitable[float]]:
    """The simulator's cell limit in its own time: the measured phase ends ``max_time`` server seconds after its
    first arrival, at ``limit``, whatever this host's pace. At the wall limit (``max_time`` / k) this asks for more
    wall time while the simulator's clock has not reached ``limit`` (a busy host held it), or while a request
    still running here has writes stamped before ``limit`` that this client has not read yet (at a high speed-up
    the client reads behind the server); at most ``_SIM_HOST_LAG`` wall seconds in all, and no longer once its
    clock has stood still for ``_CLOCK_STUCK`` wall seconds (a hung replica's step holds it; the watchdog and
    ``min_completed`` judge that server). Then the cut is at ``limit`` (``server_cut``; ``censor_at_cut`` judges
    the records against it), or, given up, now."""
    backstop: list[float] = []
    clock: list[tuple[float, float]] = []  # (its clock, wall time) when the clock last moved

    async def more(now: float) -> float:
        if not backstop:
            backstop.append(now + _SIM_HOST_LAG)
        if now >= backstop[0]:
            return 0.0
        view = await cell.server_view()
        limit = cell.server_limit(live=True)
        if view is None or limit is None:  # the host is still busy: no answer, or nothing arrived yet
            return _DEADLINE_POLL
        if view.now < limit:
            if not clock or view.now > clock[0][0]:
                clock[:] = [(view.now, now)]
            elif now - clock[0][1] >= _CLOCK_STUCK:
                return 0.0
            return max(_DEADLINE_POLL, (limit - view.now) / cell.k)
        if not cell.live and (cell.next_scheduled is None or cell.next_scheduled <= cell.plan.max_time):
            return _DEADLINE_POLL  # between requests (all answered, or the next one due before the limit)
        if view.progress is not None:
            for index, parser in cell.live.items():
                written = view.progress.get(cell.token(index))
                if written is None:
                    return _DEADLINE_POLL  # not there yet, or finished there and not yet read here
                arrival = cell.live_arrivals.get(index)
                read = parser.server_at if parser.server_at is not None else arrival
                if (read is None and written <= limit) or (read is not None and read < min(written, limit)):
                    return _DEADLINE_POLL  # what it did before the limit is still on its way here
        cell.server_cut = limit
        return 0.0

    return more


def _stall_watch(cell: _Cell, label: str, endpoint: Endpoint) -> Callable[[float], Awaitable[None]]:
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


def _check_stalled(cell: CellMetrics, min_completed: int | None, max_time: float) -> None:
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


def _check_errors(cell: CellMetrics, max_error_rate: float) -> None:
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
            _check_stalled(cell, plan.min_completed, plan.max_time)
            _check_errors(cell, plan.max_error_rate)
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
