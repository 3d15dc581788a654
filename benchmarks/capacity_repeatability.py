"""Issue 29: how far repeat confirmation runs of one configuration disagree on its capacity, and how often the
baseline gate on capacity calls an unchanged configuration a regression.

The reported configuration (Llama-3.1-8B-Instruct, max-running-requests 16, simulated A100-80G, D(2000,256),
P99 TTFT <= 2 s and P99 TPOT <= 50 ms, rate 0.25..32, 8 steps, step_seconds 40) on the in-process simulator
(``sim/inprocess.py``: the scheduler and performance model of the simulator server, in simulated time, every step
on a fresh server: the clean state ``run_ladder`` now gives each step on a real one). Each run is one launch: its
own server seed, so with noise its own run-to-run factor and step jitter; arrivals are the plan's (seeded per load).

For each noise level: ``--runs`` ladders; the spread of each confirmation (``confirm_runs`` 2: consecutive pairs) as
max / min - 1, of all runs, and of the confirmed values (each pair's mean, as the product reports it); then the gate
(``core.outcome.baseline.capacity_change``, the spec's default tolerance 0.10 plus the ladders' resolution) on
``--draws`` random (baseline of 5 runs, now of 2 other runs) draws: every flagged draw is a false regression
(nothing changed). ``--rule old`` judges as before issue 29 (one step of rate x step_seconds requests, at least 20,
its point estimate; no repeats; each load its own arrival sample).

    python benchmarks/capacity_repeatability.py [--runs 25] [--noise 0 0.03 0.1] [--rule new|old] [--min-repeats 3]
        [--first-seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import time
import zlib

from pytest_autotuner.core.measure.capacity import CapacityResult, capacity_spread, ladder_resolution
from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.plan import BenchmarkPlan, CellKey
from pytest_autotuner.core.measure.trial import Deadline
from pytest_autotuner.core.outcome.baseline import capacity_change
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.evaluate import plan_from_spec, run_ladder
from pytest_autotuner.sim.inprocess import run_benchmark_in_process

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
PARAMS = {"max-running-requests": 16}


def reported_spec() -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "task_name": "issue-29",
            "model": {"id_or_path": MODEL},
            "runtime": "sim",
            "parameters": {"max-running-requests": [16]},
            "optimization": {"objective": "maximize_goodput", "confirm_runs": 2},
            "benchmark": {
                "traffic_scenarios": ["D(2000,256)"],
                "max_time_per_iteration": 60,
                "warmup_requests": 0,
                "capacity": {"min": 0.25, "max": 32, "max_steps": 8, "step_seconds": 40},
            },
            "slo": {"ttft": {"p99": {"threshold": 2.0}}, "tpot": {"p99": {"threshold": 0.05}}},
        }
    )


def ladder(plan: BenchmarkPlan, seed: int, noise: float, *, per_load: bool = False) -> CapacityResult:
    def run(endpoint: object, step: BenchmarkPlan, deadline: Deadline | None = None) -> BenchResult:
        if per_load:  # the arrivals before issue 29: each load its own sample, as the client keyed its seed
            step = dataclasses.replace(step, common_arrivals=False, seed=zlib.crc32(repr(step.request_rates).encode()))
        return run_benchmark_in_process(MODEL, PARAMS, step, gpu="a100-80g", seed=seed, noise=noise)

    return run_ladder(run, None, plan, Deadline(None)).capacities[0]  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.03, 0.1])
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--rule", choices=["new", "old"], default="new")
    parser.add_argument("--first-seed", type=int, default=0, help="server seeds first-seed .. first-seed + runs - 1")
    parser.add_argument("--min-repeats", type=int, default=1,
                        help="benchmark.capacity.min_repeats: measurements of every step at least, pooled")  # fmt: skip
    args = parser.parse_args()
    spec = reported_spec()
    plan = plan_from_spec(spec, 0)
    assert plan.capacity is not None
    if args.rule == "old":
        old = dataclasses.replace(plan.capacity, min_step_requests=20, max_repeats=1)
        plan = dataclasses.replace(plan, capacity=old)
    elif args.min_repeats > 1:
        pooled = dataclasses.replace(plan.capacity, min_repeats=args.min_repeats,
                                     max_repeats=max(args.min_repeats, plan.capacity.max_repeats))  # fmt: skip
        plan = dataclasses.replace(plan, capacity=pooled)
    tolerance = spec.regression.tolerance
    print(f"rule {args.rule}, min_repeats {plan.capacity.min_repeats}: {MODEL} max-running 16, A100-80G, D(2000,256), "
          "P99 TTFT <= 2 s, P99 TPOT <= 50 ms")  # fmt: skip
    print(f"{'noise':>6s} {'runs':>4s} {'mean req/s':>10s} {'min':>6s} {'max':>6s} {'all spread':>10s} "
          f"{'worst pair':>10s} {'pairs >5%':>9s} {'confirmed':>9s} {'steps':>5s} {'false regr.':>11s} "
          f"{'wall/run':>8s}")  # fmt: skip
    for noise in args.noise:
        started = time.perf_counter()
        seeds = range(args.first_seed, args.first_seed + args.runs)
        runs = [ladder(plan, seed, noise, per_load=args.rule == "old") for seed in seeds]
        wall = (time.perf_counter() - started) / args.runs
        answers = [r.capacity for r in runs]
        pairs = [capacity_spread(answers[i : i + 2]) for i in range(0, len(answers) - 1, 2)]
        # what the product reports: each confirmation's capacity is the mean of its confirm_runs (2) runs
        confirmed = [statistics.mean(answers[i : i + 2]) for i in range(0, len(answers) - 1, 2)]
        rng = random.Random(29)
        flagged = 0
        for _ in range(args.draws if len(runs) >= 7 else 0):
            chosen = rng.sample(range(len(runs)), 7)
            base, now = chosen[:5], chosen[5:]
            resolution = ladder_resolution([runs[i] for i in chosen], plan.capacity.tolerance)
            change = capacity_change(
                "capacity", CellKey("D(2000,256)", 0), [answers[i] for i in base], [answers[i] for i in now],
                tolerance, resolution,
            )  # fmt: skip
            flagged += change.regressed
        steps = statistics.mean(len(r.steps) for r in runs)
        print(
            f"{noise:6.2f} {len(runs):4d} {statistics.mean(answers):10.3f} {min(answers):6.3f} {max(answers):6.3f} "
            f"{capacity_spread(answers):10.1%} {max(pairs):10.1%} {sum(p > 0.05 for p in pairs):4d}/{len(pairs):<4d} "
            f"{capacity_spread(confirmed):9.1%} {steps:5.1f} {flagged:4d}/{args.draws:<6d} {wall:7.1f}s"
        )


if __name__ == "__main__":
    main()
