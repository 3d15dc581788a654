"""Determinism, noise and bookkeeping of the simulator's scheduler and in-process runs."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.spec.scenarios import parse_scenario
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


def test_the_requests_come_from_the_plans_seed_and_the_seed_only_moves_the_server() -> None:
    def lengths(plan_seed: int, seed: int) -> list[tuple[int | None, int | None]]:
        plan = BenchmarkPlan(
            (parse_scenario("N(400,100)/(120,30)"),), (4,), max_requests=12, max_time=1e9, seed=plan_seed
        )
        cell = run_benchmark_in_process(MODEL, {}, plan, seed=seed, noise=0.03).cells[0]
        return [(r.input_tokens, r.output_tokens) for r in cell.records]

    assert lengths(0, 1) == lengths(0, 2)  # the same prompts for every trial, as the client sends them
    assert lengths(0, 1) != lengths(1, 1)


def _simulate(next_arrivals):  # type: ignore[no-untyped-def]
    from pytest_autotuner.sim.cli import engine_config, parse_argv
    from pytest_autotuner.sim.inprocess import simulate_requests
    from pytest_autotuner.sim.perf_model import plan_memory

    cfg = engine_config(parse_argv(["--model-path", MODEL], raising=True))
    return simulate_requests(cfg, plan_memory(cfg), seed=0, noise=0.0, next_arrivals=next_arrivals)


def test_an_idle_server_starts_a_step_with_the_first_of_a_burst_alone() -> None:
    from pytest_autotuner.sim.scheduler import SimRequest

    burst = [SimRequest(rid=i, arrival=0.0, input_tokens=512, output_tokens=4) for i in range(4)]
    done = _simulate(lambda finished, now: burst if finished is None else [])
    first = [r.first_token_time for r in done]
    # SGLang's scheduler starts a step as soon as it has a request; a client's requests never arrive together
    assert first[0] is not None and all(t is not None and t > first[0] for t in first[1:])
    assert len(set(first[1:])) == 1  # the rest arrived during that step and are prefilled together after it


def test_a_request_arriving_as_a_step_begins_waits_for_the_next_step() -> None:
    from pytest_autotuner.sim.scheduler import SimRequest

    long = SimRequest(rid=0, arrival=0.0, input_tokens=256, output_tokens=40)
    short = SimRequest(rid=1, arrival=0.0, input_tokens=256, output_tokens=2)
    follower: list[SimRequest] = []

    def arrivals(finished: SimRequest | None, now: float) -> list[SimRequest]:
        if finished is None:
            return [long, short]
        if finished is short:  # a closed loop's next request, sent the instant `short` ends
            follower.append(SimRequest(rid=2, arrival=now, input_tokens=256, output_tokens=2))
            return follower
        return []

    _simulate(arrivals)
    assert short.finish_time is not None
    end = short.finish_time
    # the step that begins at `end` decodes `long` without the follower (prefill first would have taken it)
    next_token = min(t for t in long.token_times if t > end)
    assert follower[0].first_token_time is not None and follower[0].first_token_time > next_token
