"""Determinism, noise and bookkeeping of the simulator's scheduler and in-process runs."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_autotuner.core.plan import BenchmarkPlan
from pytest_autotuner.core.scenarios import parse_scenario
from pytest_autotuner.sim.inprocess import run_benchmark_in_process
from pytest_autotuner.sim.scheduler import stream_chunk_sizes

MODEL = "Llama-3.1-8B"
PLAN = BenchmarkPlan(
    (parse_scenario("N(400,100)/(120,30)"),), (1, 8), request_rates=(4.0,), max_requests=24, max_time=1e9
)


def _timeline(seed: int, noise: float) -> list[tuple[float, float | None, float | None]]:
    result = run_benchmark_in_process(MODEL, {}, PLAN, seed=seed, noise=noise)
    return [(r.send_time, r.ttft, r.e2e) for cell in result.cells for r in cell.records]


def test_same_seed_same_timeline() -> None:
    assert _timeline(3, 0.03) == _timeline(3, 0.03)


def test_different_seeds_differ_by_a_few_percent() -> None:
    def tpot(seed: int) -> float:
        plan = BenchmarkPlan((parse_scenario("D(400,120)"),), (8,), max_requests=24, max_time=1e9)
        return run_benchmark_in_process(MODEL, {}, plan, seed=seed, noise=0.03).cells[0].summary("tpot").mean

    values = np.array([tpot(seed) for seed in range(8)])
    spread = values.std() / values.mean()
    assert 0.005 < spread < 0.08


def test_zero_noise_ignores_the_seed_for_step_times() -> None:
    plan = BenchmarkPlan((parse_scenario("D(400,120)"),), (4,), max_requests=8, max_time=1e9)
    a = run_benchmark_in_process(MODEL, {}, plan, seed=1).cells[0].summary("tpot").mean
    b = run_benchmark_in_process(MODEL, {}, plan, seed=2).cells[0].summary("tpot").mean
    assert a == b


def test_slowdown_multiplies_step_times() -> None:
    plan = BenchmarkPlan((parse_scenario("D(400,120)"),), (4,), max_requests=8, max_time=1e9)
    base = run_benchmark_in_process(MODEL, {}, plan).cells[0].summary("tpot").mean
    slow = run_benchmark_in_process(MODEL, {"sim-slowdown": 1.15}, plan).cells[0].summary("tpot").mean
    assert slow == pytest.approx(1.15 * base, rel=1e-9)


def test_warmups_are_excluded_and_max_requests_bounds_the_cell() -> None:
    plan = BenchmarkPlan((parse_scenario("D(100,20)"),), (4,), max_requests=10, warmup_requests=3)
    cell = run_benchmark_in_process(MODEL, {}, plan).cells[0]
    assert len(cell.records) == 10
    assert all(r.output_tokens == 20 and r.input_tokens == 100 for r in cell.records)


def test_max_time_stops_sending() -> None:
    plan = BenchmarkPlan((parse_scenario("D(100,200)"),), (1,), max_requests=1000, max_time=5.0)
    cell = run_benchmark_in_process(MODEL, {}, plan).cells[0]
    assert 1 < len(cell.records) < 1000
    assert max(r.send_time for r in cell.records) <= 5.0


def test_open_loop_records_carry_the_scheduled_time() -> None:
    result = run_benchmark_in_process(MODEL, {}, PLAN)
    open_cell = next(c for c in result.cells if c.request_rate is not None)
    assert open_cell.request_rate == 4.0
    assert all(r.scheduled_time == r.send_time for r in open_cell.records)


def test_requests_longer_than_the_context_fail_as_http_errors() -> None:
    plan = BenchmarkPlan((parse_scenario("D(3000,2000)"),), (1,), max_requests=2, warmup_requests=0)
    cell = run_benchmark_in_process(MODEL, {"context-length": 4096}, plan).cells[0]
    assert cell.errors == {"http_status": 2}


@pytest.mark.parametrize(
    ("n", "interval", "sizes"), [(1, 3, [1]), (7, 3, [1, 3, 3]), (8, 3, [1, 3, 3, 1]), (5, 1, [1] * 5)]
)
def test_stream_chunk_sizes(n: int, interval: int, sizes: list[int]) -> None:
    assert stream_chunk_sizes(n, interval) == sizes
