"""Shapes the simulated server must show (sglang.md), measured through the in-process API."""

from __future__ import annotations

import itertools

import pytest

from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.sim.inprocess import run_benchmark_in_process

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _plan(scenario: str, *concurrencies: int, requests: int = 64) -> BenchmarkPlan:
    return BenchmarkPlan(
        (parse_scenario(scenario),),
        concurrencies,
        max_requests=requests,
        max_time=1e9,
        warmup_requests=0,
        cell_order="lightest_first",  # the cells in load order, as the assertions read them
    )


def test_itl_rises_with_concurrency() -> None:
    result = run_benchmark_in_process(MODEL, {}, _plan("D(512,128)", 1, 16, 64, 128, requests=128))
    itl = [cell.summary("itl").mean for cell in result.cells]
    assert itl == sorted(itl)
    assert itl[-1] > 1.5 * itl[0]


def test_itl_rises_with_context() -> None:
    short = run_benchmark_in_process(MODEL, {}, _plan("D(256,64)", 32)).cells[0]
    long = run_benchmark_in_process(MODEL, {}, _plan("D(4096,64)", 32)).cells[0]
    assert long.summary("tpot").mean > 1.2 * short.summary("tpot").mean


def test_throughput_saturates_then_ttft_grows_with_load() -> None:
    # A small KV pool (mem-fraction 0.3 -> ~60k tokens) binds the batch at ~50 requests of 1.3k tokens.
    plan = BenchmarkPlan(
        (parse_scenario("D(1024,256)"),),
        (),
        request_rates=(2, 8, 32, 128),
        max_requests=400,
        max_time=1e9,
        cell_order="lightest_first",
    )
    cells = run_benchmark_in_process(MODEL, {"mem-fraction-static": 0.3}, plan).cells
    throughput = [c.output_throughput for c in cells]
    ttft = [c.summary("ttft").p50 for c in cells]
    assert throughput[1] > 3 * throughput[0]  # below saturation throughput follows the offered load
    assert throughput[3] < 1.1 * throughput[2]  # saturated: four times the load adds nothing
    assert ttft[1] < 2 * ttft[0]  # unsaturated: no queueing
    assert ttft[2] > 20 * ttft[1] and ttft[3] > ttft[2]  # saturated: requests queue, more with more load


#: Pins a shape to the roofline where aiconfigurator-core's kernel tables (the default pricing) give another figure.
ROOFLINE = {"sim-pricing": "roofline"}


def test_smaller_chunks_raise_long_prompt_ttft_and_with_mixed_chunk_lower_itl_p99() -> None:
    plan = _plan("D(8000,256)", 16)
    # The roofline's GEMM efficiency ramps with the tokens of a step; the kernel tables price a 1,024-token
    # chunk at 22.8 ms against 205.7 ms for 8,192 (H100, 8B), so there 1,024-token chunks lower the TTFT p50
    # (1.74 against 1.92 s): the tables hold no per-step scheduler cost that would make small chunks dearer.
    big = run_benchmark_in_process(MODEL, {"chunked-prefill-size": 8192, **ROOFLINE}, plan).cells[0]
    small = run_benchmark_in_process(MODEL, {"chunked-prefill-size": 1024, **ROOFLINE}, plan).cells[0]
    assert small.summary("ttft").p50 > 1.1 * big.summary("ttft").p50
    # SGLang runs prefill first, so without --enable-mixed-chunk a prompt's chunks run back to back and the
    # decode stall is the whole prompt at any chunk size; with it, each chunk rides with a decode step
    mixed = {"enable-mixed-chunk": True}
    big = run_benchmark_in_process(MODEL, {"chunked-prefill-size": 8192, **mixed}, plan).cells[0]
    small = run_benchmark_in_process(MODEL, {"chunked-prefill-size": 1024, **mixed}, plan).cells[0]
    assert small.summary("itl").p99 < 0.5 * big.summary("itl").p99


def test_tp2_lowers_8b_itl_by_25_to_45_percent() -> None:
    plan = _plan("D(512,128)", 8)
    tp1 = run_benchmark_in_process(MODEL, {"tp-size": 1}, plan, num_gpus=2).cells[0].summary("itl").mean
    tp2 = run_benchmark_in_process(MODEL, {"tp-size": 2}, plan, num_gpus=2).cells[0].summary("itl").mean
    assert 0.25 <= 1 - tp2 / tp1 <= 0.45


def test_tp_has_diminishing_returns() -> None:
    plan = _plan("D(512,128)", 8)
    itl = [
        run_benchmark_in_process(MODEL, {"tp-size": tp}, plan, num_gpus=8).cells[0].summary("itl").mean
        for tp in (1, 2, 4, 8)
    ]
    gains = [a / b for a, b in itertools.pairwise(itl)]
    assert all(g > 1.0 for g in gains)
    assert gains == sorted(gains, reverse=True)


def test_too_low_mem_fraction_starves_the_batch() -> None:
    plan = _plan("D(1024,512)", 64, requests=128)
    ample = run_benchmark_in_process(MODEL, {}, plan).cells[0].output_throughput
    starved = run_benchmark_in_process(MODEL, {"mem-fraction-static": 0.22}, plan).cells[0].output_throughput
    assert starved < 0.5 * ample


def test_max_running_requests_caps_throughput() -> None:
    plan = _plan("D(512,256)", 64)
    free = run_benchmark_in_process(MODEL, {}, plan).cells[0].output_throughput
    capped = run_benchmark_in_process(MODEL, {"max-running-requests": 8}, plan).cells[0].output_throughput
    assert capped < 0.4 * free


@pytest.mark.parametrize(("pricing", "gain"), [("roofline", 1.4), ("auto", 1.3)])
def test_dp_replicas_scale_throughput_not_latency(pricing: str, gain: float) -> None:
    # the kernel tables' decode step is flatter in the batch than the roofline's: 1.38x, not 1.45x
    plan = _plan("D(512,128)", 64, requests=128)
    one = run_benchmark_in_process(MODEL, {"sim-pricing": pricing}, plan, num_gpus=2).cells[0]
    two = run_benchmark_in_process(MODEL, {"dp-size": 2, "sim-pricing": pricing}, plan, num_gpus=2).cells[0]
    assert two.output_throughput > gain * one.output_throughput
    assert two.summary("itl").mean == pytest.approx(one.summary("itl").mean, rel=0.4)


def test_the_radix_cache_reuses_a_shared_prefix_that_disable_radix_cache_recomputes() -> None:
    from pytest_autotuner.sim.cli import engine_config, parse_argv
    from pytest_autotuner.sim.inprocess import simulate_requests
    from pytest_autotuner.sim.perf_model import plan_memory
    from pytest_autotuner.sim.scheduler import SimRequest

    shared = tuple(f"s{i}" for i in range(3584))

    def mean_ttft(*flags: str) -> float:
        cfg = engine_config(parse_argv(["--model-path", MODEL, *flags]))
        arrivals = [
            SimRequest(
                rid=i,
                arrival=0.5 * i,
                input_tokens=4096,
                output_tokens=16,
                tokens=shared + tuple(f"q{i}.{j}" for j in range(512)),
            )
            for i in range(20)
        ]
        done = simulate_requests(
            cfg, plan_memory(cfg), seed=0, noise=0.0, next_arrivals=lambda r, now: [] if r else arrivals
        )
        assert [r.cached_tokens for r in done[1:]] == [0 if flags else 3584] * 19
        return sum(r.token_times[0] - r.arrival for r in done) / len(done)

    assert mean_ttft() < 0.5 * mean_ttft("--disable-radix-cache")


@pytest.mark.parametrize(("pricing", "slower"), [("roofline", 1.2), ("auto", 1.15)])
def test_disabling_cuda_graphs_slows_small_model_decode(pricing: str, slower: float) -> None:
    # the same launch overhead on the kernel tables' slower 1B decode step (1.63 ms against 1.41): 1.17x
    plan = _plan("D(128,128)", 4)
    graphs = run_benchmark_in_process("Llama-3.2-1B", {"sim-pricing": pricing}, plan).cells[0].summary("itl").mean
    eager = run_benchmark_in_process("Llama-3.2-1B", {"disable-cuda-graph": True, "sim-pricing": pricing}, plan)
    assert eager.cells[0].summary("itl").mean > slower * graphs


def test_stream_interval_groups_tokens_per_chunk() -> None:
    plan = _plan("D(64,10)", 1, requests=2)
    record = run_benchmark_in_process("Llama-3.2-1B", {"stream-interval": 4}, plan).cells[0].records[0]
    assert record.chunk_tokens == (1, 4, 4, 1)
    assert record.output_tokens == 10
