"""The client reads the simulator's time stamps: chunk and end times in server seconds, send times and duration."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_autotuner.bench.cell import Cell
from pytest_autotuner.bench.stream import StreamParser
from pytest_autotuner.core.measure.metrics import RequestRecord
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.runtimes.base import Endpoint


def chunk(text: str, finish: str | None = None) -> bytes:
    obj = {"id": "1", "choices": [{"index": 0, "text": text, "finish_reason": finish}]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def stamped(at: float, *parts: bytes) -> bytes:
    return b": sim-time %.9f\n" % at + b"".join(parts)


def test_stamped_chunks_take_the_servers_time_not_their_arrival() -> None:
    parser = StreamParser("completions")
    parser.feed(stamped(10.5, chunk("a")), now=1000.0)
    parser.feed(stamped(10.52, chunk("b")) + stamped(10.54, chunk("c", "length"), b"data: [DONE]\n\n"), now=1000.9)
    assert parser.chunk_times == [10.5, 10.52, 10.54]
    assert parser.done and parser.done_at == 10.54
    assert parser.server_at == 10.54
    assert parser.last_at == 1000.9  # the wall clock still says when bytes came


def test_a_stamp_split_from_its_chunk_across_reads_still_applies() -> None:
    parser = StreamParser("completions")
    data = stamped(3.25, chunk("a"))
    parser.feed(data[:5], now=50.0)
    parser.feed(data[5:30], now=50.1)
    parser.feed(data[30:], now=50.2)
    assert parser.chunk_times == [3.25]


def test_without_stamps_chunks_take_their_arrival_time() -> None:
    parser = StreamParser("completions")
    parser.feed(chunk("a") + b": keep-alive\n\n", now=7.0)
    parser.feed(chunk("b", "length") + b"data: [DONE]\n\n", now=7.5)
    assert parser.server_at is None
    assert parser.chunk_times == [7.0, 7.5] and parser.done_at == 7.5


def test_an_unreadable_stamp_is_a_malformed_stream() -> None:
    parser = StreamParser("completions")
    assert parser.feed(b": sim-time soon\n" + chunk("a"), now=1.0)
    assert parser.error == "malformed_sse"


def make_cell(time_scale: float = 10.0) -> Cell:
    plan = BenchmarkPlan((parse_scenario("N(16,0)/(4,0)"),), (1,), max_requests=3, warmup_requests=0)
    cell = Cell(None, Endpoint("http://127.0.0.1:1", "m", time_scale=time_scale), plan)  # type: ignore[arg-type]
    cell.requests.prepare(plan.scenarios[0], seed=1)
    return cell


def parsed(*writes: tuple[float, bytes]) -> StreamParser:
    parser = StreamParser("completions")
    for at, data in writes:
        parser.feed(stamped(at, data), now=123.0)
    return parser


def test_a_stamped_record_counts_from_the_servers_arrival_without_the_speedup() -> None:
    cell = make_cell(time_scale=10.0)
    parser = parsed((20.1, chunk("a")), (20.15, chunk("b") + chunk("c", "length") + b"data: [DONE]\n\n"))
    record = cell._record(0, parser, None, "", None, send_time=20.0, start=20.0, end=parser.done_at)
    assert record.ttft == pytest.approx(0.1)
    assert record.e2e == pytest.approx(0.15)
    assert record.chunk_times == pytest.approx((0.1, 0.15, 0.15))


def record_at(send: float) -> RequestRecord:
    return RequestRecord(send, 16, 4, output_tokens=4, ttft=0.1, e2e=0.5)


def test_send_times_and_duration_count_from_the_first_server_arrival() -> None:
    cell = make_cell()
    cell.reset_clock()
    records = [record_at(52.0), record_at(50.0), record_at(51.0)]
    for r in records:
        cell.arrivals[id(r)] = r.send_time
    cell.server_end = 53.5
    assert [r.send_time for r in cell.in_server_time(records)] == [2.0, 0.0, 1.0]
    assert cell.server_duration() == pytest.approx(3.5)


def test_without_stamps_records_and_duration_stay_as_the_client_measured() -> None:
    cell = make_cell()
    cell.reset_clock()
    records: list[Any] = [record_at(0.3)]
    assert cell.in_server_time(records) == records
    assert cell.server_duration() is None
