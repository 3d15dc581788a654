"""Requests still running when a cell ends are right-censored: they count, at their wait, and never vanish."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_autotuner.core.measure.metrics import (
    INCOMPLETE,
    CellMetrics,
    CellSummary,
    RequestRecord,
    censored_summary,
    summarize,
)
from pytest_autotuner.core.measure.scoring import cell_checks
from pytest_autotuner.core.outcome.verdict import slo_table
from pytest_autotuner.core.spec.benchmark_settings import Slo

STATS = ("mean", "p50", "p90", "p95", "p99", "max")
seconds = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)


def done(ttft: float, e2e: float, out: int = 16) -> RequestRecord:
    return RequestRecord(0.0, 64, out, 64, out, ttft=ttft, e2e=e2e, chunk_times=(ttft, e2e))


def running(waited: float, first: float | None = None, out: int = 16) -> RequestRecord:
    chunks = (first,) if first is not None else ()
    return RequestRecord(
        0.0, 64, out, output_tokens=len(chunks), ttft=first, chunk_times=chunks, error=INCOMPLETE, waited=waited
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(seconds, max_size=40), st.lists(seconds, min_size=1, max_size=40))
def test_a_censored_sample_can_only_make_a_statistic_worse(exact: list[float], bounds: list[float]) -> None:
    both = censored_summary(exact, bounds)
    alone, every = summarize(exact), summarize(exact + bounds)
    assert both.n == len(exact) + len(bounds)
    assert both.censored == len(bounds)
    for stat in STATS:
        assert both.stat(stat) >= every.stat(stat)
        if exact:
            assert both.stat(stat) >= alone.stat(stat)


@settings(max_examples=200, deadline=None)
@given(st.lists(seconds, max_size=30), st.lists(st.tuples(seconds, seconds), min_size=1, max_size=30))
def test_the_true_statistic_is_at_least_the_one_with_censored_requests_at_their_wait(
    exact: list[float], censored: list[tuple[float, float]]
) -> None:
    bounds = [b for b, _ in censored]
    truth = summarize(exact + [b + extra for b, extra in censored])  # each finished, later than it had waited
    lower = summarize(exact + bounds)
    for stat in STATS:
        assert truth.stat(stat) >= lower.stat(stat) - 1e-9 * max(1.0, abs(truth.stat(stat)))


def test_an_unfinished_request_bounds_its_ttft_e2e_and_tpot() -> None:
    silent, started = running(7.5), running(7.5, first=0.5, out=16)
    assert (silent.bound("ttft"), silent.bound("e2e"), silent.bound("tpot")) == (7.5, 7.5, None)
    assert started.bound("ttft") is None  # its first token came: its TTFT is measured, not bounded
    assert started.bound("e2e") == 7.5
    assert started.bound("tpot") == (7.5 - 0.5) / 15
    assert started.bound("itl") == 7.0  # the gap after its last chunk is at least that
    assert done(0.1, 0.4).bound("e2e") is None


def test_the_reported_hang_fails_its_ttft_slo_on_the_requests_that_never_answered() -> None:
    """1B at c=4: four requests answered in 0.1 s, four never did within the 8 s cell."""
    cell = CellMetrics("D(64,16)", 4, 8.0, [done(0.1, 0.4) for _ in range(4)] + [running(7.7) for _ in range(4)])
    slo = Slo.model_validate({"ttft": {"p90": {"threshold": 1.0}}})
    (check,) = cell_checks([cell], slo)
    assert not check.passed
    assert check.value >= 7.7
    assert check.censored == 4
    assert cell.exact_samples("ttft").tolist() == [0.1] * 4  # without censoring it would have passed
    assert "* includes up to 4 request(s) still running" in "\n".join(slo_table([check]))


def test_a_first_token_of_an_unfinished_request_is_a_measured_ttft() -> None:
    cell = CellMetrics("D(64,16)", 2, 8.0, [done(0.1, 0.4), running(7.0, first=3.0)])
    assert sorted(cell.exact_samples("ttft").tolist()) == [0.1, 3.0]
    assert cell.summary("ttft").censored == 0
    assert cell.summary("e2e").censored == 1
    assert cell.summary("e2e").max == 7.0


def test_short_waits_do_not_pull_a_statistic_below_what_the_finished_requests_give() -> None:
    """A request sent just before a time cut waited little: it may not make the cell look faster."""
    cell = CellMetrics("D(64,16)", 4, 8.0, [done(0.5, 2.0) for _ in range(4)] + [running(0.01) for _ in range(4)])
    assert cell.summary("e2e").mean == 2.0
    assert cell.summary("e2e").censored == 4


def test_results_and_stored_cells_say_how_many_were_censored_and_how_long_they_waited() -> None:
    cell = CellMetrics("D(64,16)", 4, 8.0, [done(0.1, 0.4), running(7.7), running(6.5)])
    data = cell.as_dict()
    assert data["incomplete"] == 2
    assert data["censored_wait"] == [6.5, 7.7]
    assert data["e2e"]["censored"] == 2
    stored = CellSummary.from_dict(data)
    assert stored.censored_wait == (6.5, 7.7)
    assert stored.as_dict()["censored_wait"] == [6.5, 7.7]
    assert math.isclose(stored.value("ttft", "p99"), cell.summary("ttft").p99)
    assert np.all(cell.samples("e2e") >= 0)
