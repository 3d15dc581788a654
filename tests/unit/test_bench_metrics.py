"""Metric definitions on hand-made timelines, and the client's SSE parser on canned bytes."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from pytest_autotuner.bench.stream import StreamParser
from pytest_autotuner.core.measure.metrics import (
    INCOMPLETE,
    BenchResult,
    CellMetrics,
    CellSummary,
    RequestRecord,
    summarize,
)
from pytest_autotuner.core.measure.plan import CellKey


def sse(*objs: Any, done: bool = True) -> bytes:
    lines = [b"data: " + json.dumps(o).encode() + b"\n\n" for o in objs]
    return b"".join(lines) + (b"data: [DONE]\n\n" if done else b"")


def chat(content: str | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {"role": "assistant", "content": ""} if content is None else {"content": content}
    return {"id": "1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


USAGE = {"id": "1", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}


def feed_timed(parser: StreamParser, events: list[tuple[float, bytes]]) -> None:
    for now, data in events:
        parser.feed(data, now)


def test_ttft_skips_the_empty_role_chunk() -> None:
    parser = StreamParser("chat")
    feed_timed(
        parser,
        [
            (0.10, sse(chat(None), done=False)),
            (0.30, sse(chat("a"), done=False)),
            (0.35, sse(chat("b"), chat("c"), chat("", "length"), USAGE)),
        ],
    )
    assert parser.chunk_times == [0.30, 0.35, 0.35]
    assert parser.done and parser.finished and parser.error is None
    assert parser.completion_tokens == 3 and parser.prompt_tokens == 7


def test_parser_joins_lines_split_across_reads() -> None:
    parser = StreamParser("chat")
    data = sse(chat(None), chat("hello"), chat("", "stop"), USAGE)
    for i in range(0, len(data), 7):
        parser.feed(data[i : i + 7], float(i))
    assert len(parser.chunk_times) == 1 and parser.done


def test_parser_reads_completions_text_and_crlf_lines() -> None:
    parser = StreamParser("completions")
    obj = {"choices": [{"index": 0, "text": "x", "finish_reason": None}]}
    parser.feed(b"data: " + json.dumps(obj).encode() + b"\r\n\r\ndata: [DONE]\r\n\r\n", 1.0)
    assert parser.chunk_times == [1.0] and parser.done


@pytest.mark.parametrize("line", [b"data: {not json", b'data: {"error": {"message": "boom"}}', b"data: 3"])
def test_malformed_data_line_is_an_error(line: bytes) -> None:
    parser = StreamParser("chat")
    assert parser.feed(sse(chat("a"), done=False) + line + b"\n\n", 0.0)
    assert parser.error == "malformed_sse"


def test_stream_interval_spreads_usage_tokens_evenly_over_chunks() -> None:
    parser = StreamParser("chat")
    usage = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 7}}
    parser.feed(sse(chat("aaa"), chat("bbb"), chat("c"), chat("", "length"), usage), 0.0)
    assert parser.chunk_tokens() == [3, 2, 2]
    assert sum(parser.chunk_tokens()) == parser.completion_tokens


def test_per_chunk_usage_gives_exact_chunk_tokens() -> None:
    parser = StreamParser("chat")

    def with_usage(text: str, n: int) -> dict[str, Any]:
        return chat(text, usage={"prompt_tokens": 1, "completion_tokens": n})

    parser.feed(sse(with_usage("a", 1), with_usage("bcd", 4), with_usage("ef", 6)), 0.0)
    assert parser.chunk_tokens() == [1, 3, 2]


def record(chunks: list[float], tokens: int | None = None, send: float = 0.0, **kw: Any) -> RequestRecord:
    return RequestRecord(
        send_time=send,
        requested_input_tokens=10,
        requested_output_tokens=tokens or len(chunks),
        input_tokens=10,
        output_tokens=tokens if tokens is not None else len(chunks),
        ttft=chunks[0],
        e2e=chunks[-1],
        chunk_times=tuple(chunks),
        **kw,
    )


def test_tpot_excludes_the_first_token() -> None:
    assert record([0.5, 0.6, 0.7, 0.8, 0.9]).tpot == pytest.approx(0.1)


def test_tpot_with_one_output_token_is_none() -> None:
    assert record([0.5]).tpot is None


def test_itl_with_multi_token_chunks_is_one_gap_per_chunk() -> None:
    rec = record([0.2, 0.5, 0.8], tokens=9, chunk_tokens=(3, 3, 3))
    assert rec.itls == pytest.approx([0.3, 0.3])
    assert rec.tpot == pytest.approx(0.6 / 8)


def test_e2e_from_schedule_counts_client_queueing() -> None:
    assert record([0.1, 0.4], send=2.5, scheduled_time=2.0).e2e_from_schedule == pytest.approx(0.9)


def test_percentiles_match_numpy_on_raw_samples() -> None:
    samples = np.random.default_rng(3).exponential(1.0, 501)
    summary = summarize(samples)
    assert [summary.p50, summary.p90, summary.p95, summary.p99] == pytest.approx(
        np.percentile(samples, [50, 90, 95, 99])
    )
    assert summary.std == pytest.approx(np.std(samples, ddof=1)) and summary.n == 501


def test_empty_sample_summary_is_nan() -> None:
    assert summarize([]).n == 0 and math.isnan(summarize([]).p99)


def make_cell() -> CellMetrics:
    records = [
        record([0.1, 0.2, 0.3]),
        record([0.5, 0.6, 0.7]),
        record([0.1, 1.1, 2.1]),
        RequestRecord(0.0, 10, 3, error="http_status", error_detail="HTTP 500"),
    ]
    return CellMetrics("D(10,3)", 4, 2.0, records)


def test_cell_throughput_and_error_rate() -> None:
    cell = make_cell()
    assert cell.completed == 3 and cell.output_tokens == 9
    assert cell.output_throughput == pytest.approx(4.5)
    assert cell.total_throughput == pytest.approx((9 + 30) / 2.0)
    assert cell.request_throughput == pytest.approx(1.5)
    assert cell.errors == {"http_status": 1} and cell.error_rate == pytest.approx(0.25)


def test_goodput_counts_requests_meeting_every_limit() -> None:
    cell = make_cell()
    assert cell.goodput({"ttft": 0.2}) == pytest.approx(1.0)  # two of three
    assert cell.goodput({"ttft": 0.2, "e2e": 1.0}) == pytest.approx(0.5)


def test_itl_samples_pool_gaps_of_successful_requests() -> None:
    assert sorted(make_cell().samples("itl")) == pytest.approx([0.1, 0.1, 0.1, 0.1, 1.0, 1.0])


def test_merge_concatenates_records_of_the_same_cell() -> None:
    a, b = make_cell(), make_cell()
    merged = BenchResult.merge([BenchResult([a], {"v": 1}), BenchResult([b])])
    cell = merged.cell(CellKey("D(10,3)", 4))
    assert len(cell.records) == 8 and cell.duration == pytest.approx(4.0)
    assert merged.server_info == {"v": 1}


def test_merge_keeps_open_loop_cells_of_different_rates_apart() -> None:
    def open_loop(rate: float) -> CellMetrics:
        cell = make_cell()
        return CellMetrics(cell.scenario, 0, cell.duration, list(cell.records), request_rate=rate)

    runs = [BenchResult([make_cell(), open_loop(1.0), open_loop(8.0)]) for _ in range(2)]
    merged = BenchResult.merge(runs)
    assert [c.key for c in merged.cells] == [CellKey("D(10,3)", 4), CellKey("D(10,3)", 0, 1.0),
                                            CellKey("D(10,3)", 0, 8.0)]  # fmt: skip
    assert [len(c.records) for c in merged.cells] == [8, 8, 8]
    assert merged.cell(CellKey("D(10,3)", 0, 8.0)).label == "D(10,3) rate=8/s"


def cut_cell() -> CellMetrics:
    """Two completed requests, one HTTP error and two requests still running when the 4 s cell was cut."""
    records = [
        record([0.1, 0.2, 0.3]),
        record([0.5, 0.6, 0.7]),
        RequestRecord(0.0, 10, 3, error="http_status", error_detail="HTTP 500"),
        RequestRecord(0.2, 10, 3, output_tokens=1, error=INCOMPLETE),
        RequestRecord(0.4, 10, 3, error=INCOMPLETE),
    ]
    return CellMetrics("D(10,3)", 4, 4.0, records)


def test_incomplete_requests_are_counted_but_are_not_latency_samples() -> None:
    cell = cut_cell()
    assert cell.completed == 2 and cell.incomplete == 2 and cell.finished == 3
    for metric in ("ttft", "itl", "tpot", "e2e"):
        assert cell.summary(metric).n == (4 if metric == "itl" else 2)
    assert cell.goodput({"e2e": 10.0}) == pytest.approx(2 / 4.0)
    as_dict = cell.as_dict()
    assert (as_dict["requests"], as_dict["completed"], as_dict["incomplete"]) == (5, 2, 2)


def test_incomplete_requests_are_not_errors() -> None:
    cell = cut_cell()
    assert cell.errors == {"http_status": 1}
    assert cell.error_rate == pytest.approx(1 / 3)  # of the requests that finished


def test_tokens_received_by_incomplete_requests_count_over_the_whole_window() -> None:
    cell = cut_cell()
    assert cell.output_tokens == 3 + 3 + 1
    assert cell.output_throughput == pytest.approx(7 / 4.0)
    assert cell.request_throughput == pytest.approx(2 / 4.0)


def test_a_cell_of_only_incomplete_requests_has_no_samples_and_no_error_rate() -> None:
    cell = CellMetrics("D(10,3)", 4, 8.0, [RequestRecord(0.0, 10, 3, error=INCOMPLETE)] * 3)
    assert cell.finished == 0 and cell.error_rate == 0.0 and cell.errors == {}
    assert math.isnan(cell.summary("e2e").p50) and cell.output_throughput == 0.0


def test_the_parser_reads_cached_tokens_from_the_usage_details() -> None:
    parser = StreamParser("chat")
    usage = {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 7}}
    parser.feed(sse(chat("a", finish="stop"), {"choices": [], "usage": usage}), 0.0)
    assert parser.cached_tokens == 7
    bare = StreamParser("chat")
    bare.feed(sse(chat("a", finish="stop"), {"choices": [], "usage": {"prompt_tokens": 10}}), 0.0)
    assert bare.cached_tokens is None


def test_cache_hit_rate_is_cached_over_prompt_tokens_of_requests_that_reported() -> None:
    records = [record([0.1, 0.2], cached_tokens=8), record([0.1, 0.2], cached_tokens=2), record([0.1, 0.2])]
    cell = CellMetrics("P(1,2,8,2,2)", 2, 1.0, records)
    assert cell.cached_tokens == 10
    assert cell.cache_hit_rate == pytest.approx(0.5)
    assert cell.as_dict()["cache_hit_rate"] == pytest.approx(0.5)
    assert CellSummary.from_dict(cell.as_dict()).value("cache_hit_rate") == pytest.approx(0.5)
    assert math.isnan(CellMetrics("D(10,2)", 1, 1.0, [record([0.1, 0.2])]).cache_hit_rate)
