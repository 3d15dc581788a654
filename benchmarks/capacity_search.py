"""Capacity search (``maximize_goodput``) against the truth: for several simulated configurations, the ladder's
answer (at most 8 load steps) against the highest sustainable rate a dense sweep of the same configuration finds.

Both run the in-process simulator (``sim/inprocess.py``: the same scheduler and performance model as the simulator
server, in simulated time only, noise 0): the ladder through ``evaluate.run_ladder`` exactly as a trial runs it on
a server, each step ``rate x step_seconds`` Poisson arrivals judged by ``capacity.judge_step``; the sweep judges
the same steps (same plan, same judge) at rates rising 1% at a time from the search's ``min`` until one breaks.
The truth is the highest rate below that first break. A finite step is a sample: near the boundary some rates
above the first break hold again (each rate draws its own arrivals); the sweep goes on 15% past the break and
reports the highest such "lucky" hold, the most a search could report without being wrong about a step.
Acceptance (issue 18): the answer within 10% of the truth, at most 8 steps.

    python benchmarks/capacity_search.py [--step-seconds 30] [--max-steps 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from pytest_autotuner.core.measure.capacity import judge_step
from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.measure.trial import Deadline
from pytest_autotuner.core.spec.capacity_limits import CapacityLimits
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.evaluate import plan_from_spec, run_ladder
from pytest_autotuner.sim.inprocess import run_benchmark_in_process


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    params: dict[str, Any]
    scenario: str
    slo: dict[str, Any]
    gpu: str = "h100"
    num_gpus: int = 1


TTFT_200 = {"ttft": {"p99": {"threshold": 0.2}}}
CASES = (
    Case("8B defaults", "meta-llama/Llama-3.1-8B-Instruct", {}, "D(1000,200)", TTFT_200),
    Case("8B max-running 16", "meta-llama/Llama-3.1-8B-Instruct", {"max-running-requests": 16}, "D(1000,200)",
         TTFT_200),
    Case("8B chunked-prefill 1024, TPOT", "meta-llama/Llama-3.1-8B-Instruct", {"chunked-prefill-size": 1024},
         "D(1000,200)", {"ttft": {"p99": {"threshold": 0.5}}, "tpot": {"threshold": 0.02}}),
    Case("8B tp 2, long prompts", "meta-llama/Llama-3.1-8B-Instruct", {"tp-size": 2}, "D(4000,200)",
         {"ttft": {"p90": {"threshold": 0.5}}}, num_gpus=2),
    Case("1B short requests", "meta-llama/Llama-3.2-1B-Instruct", {}, "D(256,64)",
         {"ttft": {"p99": {"threshold": 0.05}}}),
    Case("70B tp 4, A100", "meta-llama/Llama-3.1-70B-Instruct", {"tp-size": 4}, "N(1000,200)/(200,50)",
         {"ttft": {"p99": {"threshold": 1.0}}, "latency": {"p90": {"threshold": 20.0}}}, gpu="a100-80g", num_gpus=4),
)  # fmt: skip


def make_spec(case: Case, step_seconds: float, max_steps: int) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "task_name": case.name,
            "model": {"id_or_path": case.model},
            "runtime": "sim",
            "parameters": {"schedule-policy": ["fcfs"]},
            "optimization": {"objective": "maximize_goodput"},
            "benchmark": {
                "traffic_scenarios": [case.scenario],
                "max_time_per_iteration": 86400,
                "warmup_requests": 0,
                "capacity": {"min": 0.25, "max": 64, "max_steps": max_steps, "step_seconds": step_seconds},
            },
            "slo": case.slo,
        }
    )


def runner(case: Case):  # type: ignore[no-untyped-def]
    def run(endpoint: object, plan: BenchmarkPlan, deadline: Deadline | None = None) -> BenchResult:
        return run_benchmark_in_process(case.model, case.params, plan, gpu=case.gpu, num_gpus=case.num_gpus)

    return run


def holds(case: Case, spec: TaskSpec, plan: BenchmarkPlan, limits: CapacityLimits, rate: float) -> bool:
    """One step at ``rate``, judged exactly as the ladder judges it."""
    step_plan = dataclasses.replace(
        plan, request_rates=(rate,), concurrencies=(), max_requests=limits.step_requests(rate, plan.max_requests),
        capacity=None, min_completed=0, max_error_rate=1.0,
    )  # fmt: skip
    cells = runner(case)(None, step_plan).cells
    bench = spec.benchmark
    step = judge_step(rate, cells, max_error_rate=bench.max_error_rate,
                      min_completed=bench.min_completed, slo=spec.slo)  # fmt: skip
    return step.holds


def dense_truth(case: Case, spec: TaskSpec, plan: BenchmarkPlan, limits: CapacityLimits) -> tuple[float, float, int]:
    """A rising sweep in 1% steps from ``min``: (the highest rate below its first break: the truth; the highest
    rate that held anywhere up to 15% above that break: how far a lucky sample can hold; steps swept)."""
    rate, truth, steps = limits.min, 0.0, 0
    while rate <= limits.max:
        steps += 1
        if not holds(case, spec, plan, limits, rate):
            break
        truth, rate = rate, rate * 1.01
    else:
        return truth, truth, steps  # holds the ceiling
    lucky, beyond = truth, rate * 1.01
    while beyond <= min(limits.max, rate * 1.15):
        steps += 1
        if holds(case, spec, plan, limits, beyond):
            lucky = beyond
        beyond *= 1.01
    return truth, lucky, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-seconds", type=float, default=30.0)
    parser.add_argument("--max-steps", type=int, default=8)
    args = parser.parse_args()
    print(f"ladder: min 0.25, max 64 req/s, at most {args.max_steps} steps of {args.step_seconds:g} s of arrivals")
    header = (
        f"{'configuration':32s} {'ladder req/s':>12s} {'steps':>5s} {'truth req/s':>11s} {'error':>7s} "
        f"{'lucky hold':>10s} {'sweep':>5s}"
    )
    print(header)
    worst, ok = 0.0, True
    for case in CASES:
        spec = make_spec(case, args.step_seconds, args.max_steps)
        plan = plan_from_spec(spec, 0)
        assert plan.capacity is not None
        started = time.perf_counter()
        found = run_ladder(runner(case), None, plan, Deadline(None)).capacities[0]  # type: ignore[arg-type]
        truth, lucky, sweep_steps = dense_truth(case, spec, plan, plan.capacity)
        error = (found.capacity - truth) / truth if truth else float("nan")
        worst = max(worst, abs(error))
        ok = ok and abs(error) <= 0.10 and len(found.steps) <= 8
        print(
            f"{case.name:32s} {found.capacity:12.3f} {len(found.steps):5d} {truth:11.3f} {error:+7.1%} "
            f"{lucky:10.3f} {sweep_steps:5d}   ({time.perf_counter() - started:.1f} s)"
        )
    print(f"largest error {worst:.1%}; acceptance (within 10%, at most 8 steps): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
