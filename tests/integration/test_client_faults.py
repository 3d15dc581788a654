"""The benchmark client against a small in-test server that streams like SGLang and fails on purpose."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_proto import ResponseHandler

from pytest_autotuner.bench import cell as cell_module
from pytest_autotuner.bench import client, stream
from pytest_autotuner.bench.client import run_benchmark, run_cell
from pytest_autotuner.bench.stream import StreamParser, new_session, paused_gc
from pytest_autotuner.core.measure.metrics import CellMetrics
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, TrialFailure
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.runtimes.base import Endpoint


@dataclass
class FakeSglang:
    """Streams ``max_tokens`` words like SGLang; every ``fault_every``-th request (1-based) gets ``fault``."""

    fault: str = "none"  # http_500, reset, malformed, stall, truncated
    fault_every: int = 1
    fault_from: int = 1  # no fault before this request (1-based)
    token_delay: float = 0.0  # wall seconds before each content chunk
    stream_interval: int = 1
    server_info: bool = True
    requests: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    gc_enabled: list[bool] = field(default_factory=list)  # gc.isenabled() as each request arrived

    async def completions(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.gc_enabled.append(gc.isenabled())  # same process as the client
        body = await request.json()
        self.bodies.append(body)
        faulty = self.fault != "none" and self.requests >= self.fault_from and self.requests % self.fault_every == 0
        if faulty and self.fault == "http_500":
            return web.Response(status=500, text="internal error")
        chat = request.path.endswith("/chat/completions")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(obj: Any) -> None:
            await resp.write(b"data: " + json.dumps(obj).encode() + b"\n\n")

        def chunk(text: str | None, finish: str | None = None, role: bool = False) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {"content": text}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish}
            return {"id": "x", "choices": [choice]}

        out = int(body["max_tokens"])
        if chat:
            await send(chunk(None, role=True))
        for j in range(0, out, self.stream_interval):
            if faulty and j >= out // 2:
                if self.fault == "reset":
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                if self.fault == "malformed":
                    await resp.write(b"data: {not json\n\n")
                if self.fault == "stall":
                    await asyncio.sleep(3600)
                if self.fault == "truncated":
                    await resp.write_eof()
                    return resp
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            await send(chunk("tok " * min(self.stream_interval, out - j)))
        await send(chunk("", finish="length"))
        prompt = body["messages"][0]["content"] if chat else body["prompt"]
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": out, "total_tokens": 0}
        await send({"id": "x", "choices": [], "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def info(self, request: web.Request) -> web.Response:
        if not self.server_info:
            raise web.HTTPNotFound()
        return web.json_response({"version": "fake", "max_total_num_tokens": 1234})


class ServerThread:
    """Runs a FakeSglang on 127.0.0.1 in its own thread and event loop (the client runs asyncio.run)."""

    def __init__(self, fake: FakeSglang) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", fake.completions)
        app.router.add_post("/v1/completions", fake.completions)
        app.router.add_get("/server_info", fake.info)
        self.runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.2)
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)

    async def _start(self) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def fake() -> FakeSglang:
    return FakeSglang()


@pytest.fixture
def server(fake: FakeSglang) -> Iterator[ServerThread]:
    thread = ServerThread(fake)
    yield thread
    thread.stop()


def endpoint(server: ServerThread | None, time_scale: float = 1.0) -> Endpoint:
    port = server.port if server else _closed_port()
    return Endpoint(f"http://127.0.0.1:{port}", "fake-model", time_scale=time_scale)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_plan(scenario: str = "D(8,6)", **kwargs: Any) -> BenchmarkPlan:
    options: dict[str, Any] = {"concurrencies": (4,), "max_requests": 20, "warmup_requests": 0}
    options.update(max_time=10.0, request_timeout=5.0, max_error_rate=1.0)
    options.update(kwargs)
    return BenchmarkPlan(scenarios=(parse_scenario(scenario),), **options)


@pytest.fixture(params=["protocol", "task"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Who reads the stream: the connection's protocol (``new_session``), or the request's task (any session)."""
    if request.param == "task":
        plain = lambda: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))  # noqa: E731
        monkeypatch.setattr(client, "new_session", plain)
    return str(request.param)


def only_cell(server: ServerThread | None, plan: BenchmarkPlan, time_scale: float = 1.0) -> CellMetrics:
    result = run_benchmark(endpoint(server, time_scale), plan)
    assert len(result.cells) == 1
    return result.cells[0]


def test_normal_stream_gives_one_ok_record_per_request(server: ServerThread, fake: FakeSglang, reader: str) -> None:
    cell = only_cell(server, make_plan())
    assert len(cell.records) == 20 and cell.errors == {}
    for record in cell.records:
        assert record.output_tokens == 6 and len(record.chunk_times) == 6
        assert record.input_tokens == 8  # the synthetic prompt is 8 whitespace words
        assert record.ttft is not None and record.e2e is not None and 0 < record.ttft <= record.e2e
    assert fake.requests == 20


def test_request_body_follows_the_openai_streaming_contract(server: ServerThread, fake: FakeSglang) -> None:
    only_cell(server, make_plan(max_requests=3, additional_params={"temperature": 0.5}))
    body = fake.bodies[0]
    assert body["model"] == "fake-model" and body["stream"] is True and body["ignore_eos"] is True
    assert body["stream_options"] == {"include_usage": True} and body["max_tokens"] == 6
    assert body["temperature"] == 0.5
    assert len({b["messages"][0]["content"] for b in fake.bodies}) == 3  # prompts differ


def test_completions_api_reads_text_chunks(server: ServerThread) -> None:
    cell = only_cell(server, make_plan(api="completions", max_requests=4))
    assert cell.completed == 4 and all(len(r.chunk_times) == 6 for r in cell.records)


def test_server_info_is_fetched_and_its_absence_tolerated(server: ServerThread, fake: FakeSglang) -> None:
    assert run_benchmark(endpoint(server), make_plan(max_requests=1)).server_info["version"] == "fake"
    fake.server_info = False
    assert run_benchmark(endpoint(server), make_plan(max_requests=1)).server_info == {}


@pytest.mark.parametrize(
    ("fault", "every", "kind", "count"),
    [
        ("http_500", 4, "http_status", 5),
        ("reset", 5, "connection", 4),
        ("malformed", 4, "malformed_sse", 5),
        ("truncated", 4, "truncated_stream", 5),
    ],
)
def test_faults_are_counted_by_kind_and_the_cell_goes_on(
    server: ServerThread, fake: FakeSglang, reader: str, fault: str, every: int, kind: str, count: int
) -> None:
    fake.fault, fake.fault_every = fault, every
    cell = only_cell(server, make_plan())
    assert len(cell.records) == 20
    assert cell.errors == {kind: count}
    assert cell.completed == 20 - count


def test_http_status_error_keeps_the_status(server: ServerThread, fake: FakeSglang, reader: str) -> None:
    fake.fault = "http_500"
    cell = only_cell(server, make_plan(max_requests=2))
    assert all("500" in r.error_detail for r in cell.records)


def test_stalled_stream_times_out_per_request(server: ServerThread, fake: FakeSglang, reader: str) -> None:
    fake.fault, fake.fault_every = "stall", 10  # a stalled stream would hang for an hour
    cell = only_cell(server, make_plan(request_timeout=0.3))
    assert cell.errors == {"timeout": 2} and len(cell.records) == 20


def test_recorded_times_are_scaled_to_server_seconds(server: ServerThread, fake: FakeSglang, reader: str) -> None:
    """Lower bounds from the server's sleeps (a busy machine only adds); upper bounds catch a double scaling."""
    fake.token_delay = 0.02  # wall seconds before each of 5 chunks: 0.1 wall s a request, 1.0 server s
    cell = only_cell(server, make_plan("D(4,5)", concurrencies=(1,), max_requests=3), time_scale=10.0)
    assert cell.completed == 3
    for record in cell.records:
        assert record.ttft is not None and record.e2e is not None
        assert record.ttft >= 0.19  # one sleep: 0.2 server s, less 5% for timer granularity
        assert 0.95 <= record.e2e < 10.0  # five sleeps: 1.0 server s; scaled twice would be 10 or more
    assert 2.85 <= cell.duration < 30.0  # three requests one after the other


def measure_cell(server: ServerThread, plan: BenchmarkPlan, time_scale: float = 1.0) -> CellMetrics:
    """The first cell of ``plan`` as measured, without the checks that fail a trial."""

    async def one() -> CellMetrics:
        async with new_session() as session:
            ep = endpoint(server, time_scale)
            return await run_cell(session, ep, plan, plan.scenarios[0], plan.concurrencies[0])

    return asyncio.run(one())


def test_max_time_is_in_server_seconds(server: ServerThread, fake: FakeSglang) -> None:
    fake.token_delay = 0.05  # a request takes at least 0.25 wall s, 2.5 server s: one round fits in 4 server s
    cell = measure_cell(server, make_plan("D(4,5)", max_requests=1000, max_time=4.0), time_scale=10.0)
    assert cell.duration >= 4.0 and cell.incomplete > 0  # cut at the limit, in server seconds
    # 4 s of wall time would let each of the 4 workers finish ~16 requests; 4 server s, at most one each (plus
    # the one each still had running at the cut)
    assert len(cell.records) <= 8 and fake.requests <= 8


def test_requests_in_flight_at_max_time_are_recorded_as_incomplete(server: ServerThread, fake: FakeSglang) -> None:
    fake.fault, fake.fault_from = "stall", 3  # the first round finishes at once; the second stalls mid-stream
    # a stall timeout past the cell's end: this is about the cut at max_time (the watchdog has its own tests)
    plan = make_plan("D(4,10)", concurrencies=(2,), max_requests=100, max_time=2.0, request_timeout=60,
                     stall_timeout=60.0)  # fmt: skip
    cell = measure_cell(server, plan)
    assert fake.requests == 4 and len(cell.records) == 4
    assert cell.completed == 2 and cell.incomplete == 2 and cell.errors == {} and cell.error_rate == 0
    assert cell.duration >= 2.0  # runs to the cut, not to the last completion
    for record in cell.records[2:]:
        assert record.incomplete and record.e2e is None
        assert record.ttft is not None and record.ttft < 2.0  # its first token came: a measured TTFT
        assert record.waited is not None and record.waited >= 2.0 - record.send_time - 0.05
        assert 0 < record.output_tokens < 10  # what it received by the cut
    assert cell.output_tokens == 20 + sum(r.output_tokens for r in cell.records[2:])
    assert cell.exact_samples("e2e").size == 2 and cell.as_dict()["incomplete"] == 2
    assert cell.samples("e2e").size == 4  # the unfinished ones at their wait
    assert cell.summary("e2e").censored == 2 and cell.summary("ttft").censored == 0


def test_a_server_silent_for_the_stall_timeout_stalls_the_trial_however_many_finished(
    server: ServerThread, fake: FakeSglang
) -> None:
    """The count rule (half of the requests finished) cannot see this one: two of four finished, two stall."""
    fake.fault, fake.fault_from = "stall", 3
    plan = make_plan("D(4,10)", concurrencies=(2,), max_requests=4, max_time=30.0, request_timeout=60,
                     stall_timeout=0.6)  # fmt: skip
    with pytest.raises(TrialFailure) as info:
        measure_cell(server, plan)
    assert info.value.failure_class is FailureClass.STALLED
    message = info.value.message
    assert "sent nothing for" in message and "2 request(s) waited on it (2 finished before)" in message
    assert f"the server at http://127.0.0.1:{server.port}" in message


def test_open_loop_requests_running_at_max_time_are_incomplete(server: ServerThread, fake: FakeSglang) -> None:
    fake.fault, fake.fault_every = "stall", 2
    plan = make_plan(concurrencies=(), request_rates=(40.0,), max_requests=6, max_time=0.5, request_timeout=60)
    cell = measure_cell_open(server, plan)
    assert len(cell.records) == 6 and cell.completed == 3 and cell.incomplete == 3
    assert all(r.scheduled_time is not None for r in cell.records)
    assert cell.duration >= 0.5


def measure_cell_open(server: ServerThread, plan: BenchmarkPlan) -> CellMetrics:
    async def one() -> CellMetrics:
        async with new_session() as session:
            return await run_cell(session, endpoint(server), plan, plan.scenarios[0], 0, plan.request_rates[0])

    return asyncio.run(one())


def test_a_server_that_stops_answering_stalls_the_trial(server: ServerThread, fake: FakeSglang) -> None:
    fake.fault, fake.fault_every = "stall", 1  # every request stops halfway
    seen: list[CellMetrics] = []
    with pytest.raises(TrialFailure) as info:
        run_benchmark(endpoint(server), make_plan(max_time=0.5, request_timeout=60), on_cell=seen.append)
    assert info.value.failure_class is FailureClass.STALLED
    assert info.value.message == (
        "cell D(8,6) c=4: only 0 of 4 requests finished within max_time_per_iteration (0.5 s); 4 still running: "
        "the server stopped answering or is far too slow for this load"
    )
    assert seen[0].incomplete == 4 and seen[0].error_rate == 0


def test_min_completed_sets_how_many_requests_must_finish(server: ServerThread, fake: FakeSglang) -> None:
    fake.fault, fake.fault_every = "stall", 2  # half the requests stop halfway
    plan = make_plan(concurrencies=(2,), max_requests=4, max_time=0.5, request_timeout=60)
    cell = run_benchmark(endpoint(server), plan).cells[0]  # default: half of those sent
    assert cell.finished == 2 and cell.incomplete == 2  # one worker stalls at once, the other at its second
    with pytest.raises(TrialFailure) as info:
        run_benchmark(endpoint(server), dataclasses.replace(plan, min_completed=3))
    assert info.value.failure_class is FailureClass.STALLED


def test_warmup_requests_are_sent_but_not_recorded(server: ServerThread, fake: FakeSglang) -> None:
    cell = only_cell(server, make_plan(max_requests=5, warmup_requests=3))
    assert len(cell.records) == 5 and fake.requests == 8


def test_open_loop_records_a_reproducible_poisson_schedule(server: ServerThread) -> None:
    plan = make_plan(concurrencies=(), request_rates=(40.0,), max_requests=10)
    first = only_cell(server, plan)
    again = only_cell(server, plan)
    scheduled = [r.scheduled_time for r in first.records]
    assert scheduled == [r.scheduled_time for r in again.records]
    assert scheduled[0] == 0.0 and all(b is not None and b > 0 for b in scheduled[1:])
    assert all(r.send_time >= r.scheduled_time - 1e-3 for r in first.records)  # type: ignore[operator]
    assert first.request_rate == 40.0 and first.completed == 10


def test_run_cell_can_share_a_session(server: ServerThread) -> None:
    plan = make_plan(max_requests=5)

    async def two_cells() -> list[CellMetrics]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            return [await run_cell(session, endpoint(server), plan, plan.scenarios[0], c) for c in (1, 3)]

    assert [len(c.records) for c in asyncio.run(two_cells())] == [5, 5]


def test_new_session_feeds_parsers_from_the_connection_protocol(server: ServerThread, fake: FakeSglang) -> None:
    fake.stream_interval = 2  # several reads per response, and one read carries headers and the first chunk
    parsers: list[StreamParser] = []

    class Spy(StreamParser):
        def __init__(self, api: str = "chat") -> None:
            super().__init__(api)
            parsers.append(self)

    plan = make_plan(max_requests=6)

    async def cell() -> CellMetrics:
        async with new_session() as session:
            return await run_cell(session, endpoint(server), plan, plan.scenarios[0], 2)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cell_module, "StreamParser", Spy)
        metrics = asyncio.run(cell())
    assert metrics.completed == 6 and len(parsers) == 6 and all(p.attached and p.done for p in parsers)
    assert all(r.output_tokens == 6 and sum(r.chunk_tokens) == 6 for r in metrics.records)


def test_an_aiohttp_that_does_not_fit_keeps_its_protocol_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Renamed:  # a future ResponseHandler without the ``_payload`` the stamping handler reads
        def __init__(self) -> None:
            self.payload = None

    monkeypatch.setattr(stream, "ResponseHandler", Renamed)
    stream._warn_unstamped.cache_clear()

    async def factory_name() -> str:
        connector = stream.StampingConnector(limit=0)
        await connector.close()
        return str(connector._factory.func.__name__)  # type: ignore[attr-defined]

    assert asyncio.run(factory_name()) == "ResponseHandler"
    assert "chunks stamped in tasks" in caplog.text
    stream._warn_unstamped.cache_clear()


def test_reads_are_stamped_on_arrival_and_parsed_one_connection_per_loop_iteration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed: list[tuple[str, float, bytes]] = []

    def record(self: stream._StampingHandler, now: float, data: bytes) -> None:
        parsed.append((self.name, now, data))  # type: ignore[attr-defined]

    monkeypatch.setattr(stream._StampingHandler, "_parse", record)

    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        burst = stream._Burst(loop)
        first, second = stream._StampingHandler(loop, burst=burst), stream._StampingHandler(loop, burst=burst)
        first.name, second.name = "first", "second"  # type: ignore[attr-defined]
        first.sink = second.sink = StreamParser()
        before = time.perf_counter()
        first.data_received(b"a")
        second.data_received(b"b")
        first.data_received(b"c")
        arrived = time.perf_counter()
        assert parsed == []  # stamped only: nothing parsed while the loop has reads to hand over
        await asyncio.sleep(0)  # one loop iteration: the first connection's reads, in order
        assert [(name, data) for name, _now, data in parsed] == [("first", b"a"), ("first", b"c")]
        await asyncio.sleep(0)  # the next: the second's
        assert [data for _name, _now, data in parsed] == [b"a", b"c", b"b"]
        return [before, arrived]

    before, arrived = asyncio.run(scenario())
    assert all(before <= now <= arrived for _name, now, _data in parsed)  # the stamps are the arrival times


def test_the_end_of_a_stream_parses_its_waiting_reads_first(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(stream._StampingHandler, "_parse", lambda self, now, data: events.append(data.decode()))
    monkeypatch.setattr(ResponseHandler, "eof_received", lambda self: events.append("eof"))

    async def scenario() -> None:
        handler = stream._StampingHandler(asyncio.get_running_loop())
        handler.sink = StreamParser()
        handler.data_received(b"last")
        handler.eof_received()
        assert events == ["last", "eof"]  # not overtaken by the end of the stream
        await asyncio.sleep(0)  # the scheduled parse finds nothing left
        assert events == ["last", "eof"]

    asyncio.run(scenario())


class _Body:
    """The part of aiohttp's StreamReader that ``_read_body`` uses, ending when ``end`` is resolved."""

    def __init__(self, rest: bytes = b"") -> None:
        self.end: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.rest = rest  # still in the buffer at the end (aiohttp resumed its parser after the last read)

    def read_nowait(self) -> bytes:
        rest, self.rest = self.rest, b""
        return rest

    def exception(self) -> BaseException | None:
        return None

    def is_eof(self) -> bool:
        return self.end.done()

    async def wait_eof(self) -> None:
        await self.end


def test_cancelling_a_request_as_its_body_ends_still_cancels_it() -> None:
    """asyncio.wait_for before 3.12 returns the result instead: a cancelled closed-loop worker would go on."""

    async def scenario() -> None:
        body, parser = _Body(), StreamParser()
        parser.attached = True
        reading = asyncio.create_task(cell_module.Cell._read_body(body, parser, 10.0))  # type: ignore[arg-type]
        await asyncio.sleep(0)  # now waiting for the end of the body
        body.end.set_result(None)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading

    asyncio.run(scenario())


def test_bytes_left_in_the_body_at_its_end_are_parsed() -> None:
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"length"}]}\n\ndata: [DONE]\n\n'

    async def scenario() -> StreamParser:
        body, parser = _Body(rest=chunk), StreamParser()
        parser.attached = True
        body.end.set_result(None)
        await cell_module.Cell._read_body(body, parser, 10.0)  # type: ignore[arg-type]
        return parser

    parser = asyncio.run(scenario())
    assert parser.done and parser.finished and len(parser.chunk_times) == 1


def test_deadline_expiry_mid_cell_raises_trial_timeout(server: ServerThread, fake: FakeSglang) -> None:
    fake.fault = "stall"  # only the deadline can end the cell before the 60 s request timeout
    started = time.monotonic()
    with pytest.raises(TrialFailure) as info:
        run_benchmark(endpoint(server), make_plan(request_timeout=60), deadline=Deadline(0.3))
    assert info.value.failure_class is FailureClass.TRIAL_TIMEOUT
    assert time.monotonic() - started < 30


def test_deadline_cancelled_from_another_thread_stops(server: ServerThread, fake: FakeSglang) -> None:
    fake.fault = "stall"
    deadline = Deadline(None)
    threading.Timer(0.2, deadline.cancel).start()
    with pytest.raises(TrialFailure) as info:
        run_benchmark(endpoint(server), make_plan(request_timeout=60), deadline=deadline)
    assert info.value.failure_class is FailureClass.TRIAL_TIMEOUT


def test_error_rate_above_threshold_fails_the_trial(server: ServerThread, fake: FakeSglang) -> None:
    fake.fault, fake.fault_every = "http_500", 2
    seen: list[CellMetrics] = []
    with pytest.raises(TrialFailure) as info:
        run_benchmark(endpoint(server), make_plan(max_error_rate=0.1), on_cell=seen.append)
    assert info.value.failure_class is FailureClass.BENCHMARK_ERRORS
    assert "http_status=10" in info.value.message and len(seen) == 1


def test_error_rate_at_threshold_passes(server: ServerThread, fake: FakeSglang) -> None:
    fake.fault, fake.fault_every = "http_500", 10
    assert run_benchmark(endpoint(server), make_plan(max_error_rate=0.1)).cells[0].error_rate == 0.1


def test_dead_server_fails_as_crashed_without_spinning() -> None:
    seen: list[CellMetrics] = []
    started = time.monotonic()
    plan = make_plan(max_error_rate=0.1, max_requests=50, max_time=600.0)
    with pytest.raises(TrialFailure) as info:
        run_benchmark(endpoint(None), plan, on_cell=seen.append)
    assert info.value.failure_class is FailureClass.CRASHED
    assert "connection=50" in info.value.message
    assert len(seen[0].records) == 50
    assert time.monotonic() - started < 60  # ended by its 50 refused requests, not by the 600 s max_time


def test_run_benchmark_works_from_a_worker_thread(server: ServerThread) -> None:
    results: list[int] = []
    worker = threading.Thread(target=lambda: results.append(len(only_cell(server, make_plan()).records)))
    worker.start()
    worker.join(120)
    assert results == [20]


def test_automatic_gc_is_off_while_a_cell_runs_and_back_on_after(server: ServerThread, fake: FakeSglang) -> None:
    assert gc.isenabled()
    only_cell(server, make_plan(warmup_requests=4))
    assert fake.gc_enabled == [False] * 24
    assert gc.isenabled()


def test_gc_comes_back_on_when_the_trial_deadline_ends_a_cell(server: ServerThread, fake: FakeSglang) -> None:
    fake.fault = "stall"
    with pytest.raises(TrialFailure):
        run_benchmark(endpoint(server), make_plan(request_timeout=60), deadline=Deadline(0.3))
    assert fake.gc_enabled and not any(fake.gc_enabled)
    assert gc.isenabled()


def test_gc_pause_is_shared_by_concurrent_cells_and_keeps_a_disabled_gc_disabled() -> None:
    first, second = paused_gc(), paused_gc()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the other cell is still measuring
    second.__exit__(None, None, None)
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # a caller that turned GC off keeps it off
    finally:
        gc.enable()
