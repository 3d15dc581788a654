"""One benchmark cell in flight (``Cell``): its requests, its clocks and its records.

``send`` sends one request and turns what came back into a ``RequestRecord`` in server time when the server
stamps (the simulator), else in this client's time; a request cut off by the end of its cell is kept as
incomplete (right-censored). The cell also reads the simulator's clock and what it did for the cell's requests
(``server_view``, ``/sim/now?tag=``) for its limits (``limits.py``). The loads that drive it are ``loads.py``; the
whole client is described in ``client.py``.

Why one module of about 480 lines: sending, recording and censoring share the cell's clocks (its wall start,
the server's arrival stamps, the cut) and its in-flight state, which the limits read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import sys
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

import aiohttp

if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
else:  # pragma: no cover - aiohttp requires async-timeout before 3.11
    from async_timeout import timeout as _timeout

from pytest_autotuner.bench.requests import CellRequests
from pytest_autotuner.bench.stream import SINK, StreamParser, StreamStopped
from pytest_autotuner.core.measure.metrics import INCOMPLETE, RequestRecord
from pytest_autotuner.core.measure.precision import PrecisionTracker

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.plan import BenchmarkPlan
    from pytest_autotuner.runtimes.base import Endpoint

__all__ = ["SIM_HOST_LAG", "Cell", "ServerView"]

_READ_BUFSIZE = 1 << 21
_HEADERS = {"Content-Type": "application/json"}
# wall seconds the host may fall behind a simulator's clock before the client's wall limits (a request's timeout,
# a cell's max_time: server seconds / speed-up) give up on it; the verdicts themselves are in server time
SIM_HOST_LAG = 30.0


def _classify(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout", "request timed out"
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError, OSError)):
        return "connection", f"{type(exc).__name__}: {exc}"
    return "other", f"{type(exc).__name__}: {exc}"


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: object) -> int:
    return value if type(value) is int and value > 0 else 0


def _promised(token: str, then: str) -> list[str]:
    """The promise keys an ``X-Sim-Then`` header makes (``sim/server.py``): ``end`` and ``+<s>`` parts."""
    parts = [part.strip() for part in then.split(",")]
    return [f"{token}@end" for p in parts if p == "end"] + [f"{token}@start" for p in parts if p.startswith("+")]


@dataclasses.dataclass(frozen=True)
class ServerView:
    """What ``/sim/now?tag=`` says: the simulator's clock; for a simulator that tracks them (else None), the
    simulated time of the latest write to each of the cell's requests it still runs, by token, and the latest
    write to any of the cell's requests."""

    now: float
    progress: Mapping[str, float] | None = None
    last: float | None = None
    late: int = 0  # the cell's arrivals the simulator could not place where their promise said (this host lagged)
    owed: int = 0  # the cell's promised arrivals its clock is held for: it waits on this client, not a hung step

    @classmethod
    def of(cls, body: object) -> ServerView | None:
        if not isinstance(body, dict) or (now := _seconds(body.get("now"))) is None:
            return None
        raw = body.get("progress")
        progress = (
            {str(k): t for k, v in raw.items() if (t := _seconds(v)) is not None} if isinstance(raw, dict) else None
        )
        late, owed = body.get("late"), body.get("owed")
        return cls(now, progress, _seconds(body.get("last")), _count(late), _count(owed))


class Cell:
    """One (scenario, load) cell: its precomputed requests, its clock and its records."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: Endpoint, plan: BenchmarkPlan) -> None:
        self.session, self.plan, self.model, self.k = session, plan, endpoint.model_name, endpoint.time_scale
        path = "/v1/chat/completions" if plan.api == "chat" else "/v1/completions"
        self.url = endpoint.base_url.rstrip("/") + path
        self.simulated = "sim_speedup" in endpoint.server_info
        # The simulator's clock does not run while the host keeps it from working, so a wall limit of
        # request_timeout / k would time requests out for the host's lag (0.12 s at speed-up 1000): its wall
        # limit is a backstop and a request is judged on its server time (``_over_time``).
        self.timeout_s = plan.request_timeout / self.k + (SIM_HOST_LAG if self.simulated else 0.0)
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
        #: arrivals announced to the simulator (``X-Sim-Then``) and not yet kept or withdrawn: withdrawn when the
        #: cell ends (``withdraw_owed``), or the simulator would hold its clock for them into the next cell
        self.owed: set[str] = set()
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
        name = self.token(index)
        headers = {**_HEADERS, "X-Sim-Token": name}
        if then:
            headers["X-Sim-Then"] = then
            if self.simulated:
                self.owed.update(_promised(name, then))
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
                    self.owed.discard(after or "")  # stamped: the simulator placed it, keeping that promise
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
        if after and arrival is None and after in self.owed:  # it never reached the simulator's clock (an error
            await asyncio.shield(self.withdraw(after))  # answer before it was placed): do not let that promise hold it
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

    async def withdraw_if_failed(self, index: int, record: RequestRecord) -> None:
        """A request the simulator took in that failed on this side (a malformed or cut stream, a timeout): its
        end no longer brings the next request, so withdraw that promise, or the simulator would hold its clock
        for it (``PROMISE_GRACE``) and the silence would read as a stall."""
        if record.failed and id(record) in self.arrivals:
            await asyncio.shield(self.withdraw(f"{self.token(index)}@end"))

    async def withdraw_owed(self) -> None:
        """At the end of a cell's phase (done, cut or stopped for precision): withdraw every promise of its that no
        request kept, such as an open loop's next arrival after the cut, so none holds the simulator's clock."""
        owed, self.owed = sorted(self.owed), set()
        await asyncio.gather(*(self.withdraw(promise) for promise in owed))

    async def withdraw(self, promise: str) -> None:
        """Tell the simulator that the request promised as ``promise`` will not come."""
        self.owed.discard(promise)
        url = self.base_url + "/sim/release"
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, TimeoutError):
            async with self.session.post(url, headers={"X-Sim-After": promise}, timeout=self.timeout):
                pass
