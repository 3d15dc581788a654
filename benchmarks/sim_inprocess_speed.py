"""How long the in-process simulator takes to evaluate a small plan (goal: under 50 ms an evaluation).

Was the unit test ``test_a_small_plan_evaluates_in_under_50_ms``: a speed claim, which a busy machine can break
without any change to the code, so it is measured here instead and its figures kept in benchmarks/RESULTS.md.

    python benchmarks/sim_inprocess_speed.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.sim.inprocess import run_benchmark_in_process

MODEL = "Llama-3.1-8B"
PLAN = BenchmarkPlan((parse_scenario("D(256,64)"),), (1, 8), max_requests=16, max_time=1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    run_benchmark_in_process(MODEL, {}, PLAN)  # warm: imports and the model's tables
    times = []
    for seed in range(args.repeats):
        started = time.perf_counter()
        run_benchmark_in_process(MODEL, {}, PLAN, seed=seed, noise=0.03)
        times.append(time.perf_counter() - started)
    print(f"plan D(256,64) x concurrency (1, 8), 16 requests a cell, {args.repeats} evaluations:")
    print(f"  median {statistics.median(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms (goal: under 50 ms)")


if __name__ == "__main__":
    main()
