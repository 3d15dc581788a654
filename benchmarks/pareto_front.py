"""How much of the true Pareto front a 30-trial multi-objective search finds: hypervolume ratio against the
exhaustive front, for our search (TPE, and NSGA-II) and random sampling.

Run: ``python benchmarks/pareto_front.py`` (``--seeds 10 --budget 30``; ``--seeds 3`` for a quick look).

Space: 80 configurations of Llama-3.1-8B on one simulated H100 (max-running-requests x chunked-prefill-size x
enable-mixed-chunk = 10 x 4 x 2), traffic N(1024,512)/(256,64) at concurrency 64, 96 requests a cell, two
objectives: maximize_throughput (output tok/s) and minimize_tpot (mean time per output token): a larger batch
gives more throughput and slower tokens. A hard SLO (TTFT p90 <= 15 s) makes some configurations infeasible; the
fronts are over feasible configurations only. Every configuration is measured by the simulator's performance
model in process (``sim/inprocess.py``), noise 0, once; a trial of a search looks its measurement up, so every
strategy sees the same numbers.

The exhaustive front: every one of the 80 points scored as the session scores a trial. A search's front: its
feasible measured trials (``TaskOutcome.pareto``, the product's own front, after ``run_task``).

Hypervolume: each objective normalised to [0, 1] over the feasible points of the exhaustive sweep (0 = the best
value of that objective, 1 = the worst; throughput flipped, so both are minimised), reference point (1.1, 1.1)
(10% beyond the worst feasible value of each objective), computed exactly by ``core/outcome/pareto.hypervolume`` and
checked against Optuna's (``optuna_compat.optuna_hypervolume``). The ratio is a search's hypervolume over the
exhaustive front's. Acceptance (issue 18): at least 95% after 30 trials.

Strategies (``run_task`` with ``confirm_runs`` 0, in-memory study): ``tpe`` (the product's default: bayesian,
our no-repeat TPE, SGLang's defaults first), ``nsga2`` (``optimization.sampler: nsga2``) and ``random``
(``strategy: random``, no repeats).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.scoring import score_result
from pytest_autotuner.core.measure.trial import Deadline, Params
from pytest_autotuner.core.outcome.outcome import TaskOutcome
from pytest_autotuner.core.outcome.pareto import front_indices, hypervolume
from pytest_autotuner.core.outcome.task import TaskOptions, run_task
from pytest_autotuner.core.search.optuna_compat import optuna_hypervolume, quiet_optuna_logging
from pytest_autotuner.core.search.space import SearchSpace
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.evaluate import plan_from_spec
from pytest_autotuner.sim import run_benchmark_in_process

MODEL = "llama-3.1-8b-instruct"
OBJECTIVES = ("maximize_throughput", "minimize_tpot")
DIRECTIONS = ("maximize", "minimize")
REFERENCE = 1.1  # in normalised loss units: 10% beyond the worst feasible value
TARGET = 0.95

SPEC: dict[str, Any] = {
    "task_name": "pareto-benchmark",
    "model": {"id_or_path": MODEL},
    "runtime": "sim",
    "parameters": {
        "max-running-requests": [4, 6, 8, 12, 16, 20, 24, 32, 48, 64],
        "chunked-prefill-size": [512, 1024, 2048, 8192],
        "enable-mixed-chunk": [True, False],
    },
    "optimization": {"strategy": "bayesian", "objectives": list(OBJECTIVES), "confirm_runs": 0},
    "benchmark": {
        "traffic_scenarios": ["N(1024,512)/(256,64)"],
        "num_concurrency": [64],
        "max_requests_per_iteration": 96,
        "max_time_per_iteration": 600,
    },
    "slo": {"ttft": {"p90": {"threshold": 15.0, "hard_fail": True, "fail_ratio": 0.01}}},
}


def key(params: Params) -> tuple[Any, ...]:
    """A configuration as launched (the SGLang-defaults trial leaves max-running-requests to the server)."""
    return tuple(params.get(name) for name in SPEC["parameters"])


def sweep(spec: TaskSpec) -> dict[tuple[Any, ...], BenchResult]:
    """Every point of the space, measured once with noise 0."""
    plan = plan_from_spec(spec, seed=0)
    return {
        key(params): run_benchmark_in_process(MODEL, params, plan, noise=0.0)
        for params in SearchSpace.from_spec(spec).grid()
    }


class Normaliser:
    """Objective values -> losses in [0, 1] over the feasible points of the sweep (0 best, 1 worst)."""

    def __init__(self, points: list[tuple[float, float]]) -> None:
        losses = np.array([[-p[0], p[1]] for p in points])
        self.low, self.high = losses.min(axis=0), losses.max(axis=0)

    def __call__(self, points: list[tuple[float, ...]]) -> np.ndarray:
        losses = np.array([[-p[0], p[1]] for p in points]).reshape(-1, 2)
        return (losses - self.low) / (self.high - self.low)


def normalised_hv(points: list[tuple[float, ...]], norm: Normaliser) -> float:
    losses = [tuple(map(float, row)) for row in norm(points)]
    return hypervolume(losses, (REFERENCE, REFERENCE), ("minimize", "minimize"))


def run(
    spec_raw: dict[str, Any], strategy: str, seed: int, budget: int, measured: dict[tuple[Any, ...], BenchResult]
) -> TaskOutcome:
    opt = {**spec_raw["optimization"], "max_iterations": budget, "seed": seed}
    if strategy == "random":
        opt["strategy"] = "random"
    elif strategy == "nsga2":
        opt["sampler"] = "nsga2"
    spec = TaskSpec.model_validate({**spec_raw, "optimization": opt})

    plan = plan_from_spec(spec, seed=0)

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        if key(params) not in measured:  # off the grid: the defaults trial, measured the same way
            measured[key(params)] = run_benchmark_in_process(MODEL, params, plan, noise=0.0)
        return measured[key(params)]

    options = TaskOptions(seed=seed, study_name=f"pareto-{strategy}-{seed}")
    return run_task(spec, options, evaluate, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=30)
    parser.add_argument("--strategies", default="tpe,nsga2,random")
    args = parser.parse_args()
    quiet_optuna_logging()

    spec = TaskSpec.model_validate(SPEC)
    started = time.perf_counter()
    measured = sweep(spec)
    sweep_s = time.perf_counter() - started
    scores = {k: score_result(r, spec.optimization, spec.slo) for k, r in measured.items()}
    feasible = {k: s for k, s in scores.items() if s.feasible and s.failure is None}
    values = {k: tuple(s.objectives[o] or 0.0 for o in OBJECTIVES) for k, s in feasible.items()}
    keys = list(values)
    points = [values[k] for k in keys]
    front = [keys[i] for i in front_indices(points, DIRECTIONS)]
    norm = Normaliser(points)  # type: ignore[arg-type]
    exhaustive = normalised_hv([values[k] for k in front], norm)
    losses = norm([values[k] for k in front])
    check = optuna_hypervolume(losses, np.full(2, REFERENCE))
    limit = SPEC["slo"]["ttft"]["p90"]["threshold"]
    print(f"space: {len(measured)} points, {len(feasible)} feasible (TTFT p90 <= {limit:g} s, hard); ", end="")
    print(f"swept in {sweep_s:.1f} s")
    print(f"exhaustive front: {len(front)} points; normalised hypervolume {exhaustive:.4f} (Optuna's: {check:.4f})")
    for k in sorted(front, key=lambda k: -values[k][0]):
        print(f"  {dict(zip(SPEC['parameters'], k, strict=True))}: {values[k][0]:,.0f} tok/s, "
              f"TPOT {values[k][1] * 1000:.1f} ms")  # fmt: skip
    print(f"\n{args.budget} trials per run, seeds 0..{args.seeds - 1}; ratio = run's hypervolume / exhaustive")
    header = ("strategy", "mean", "min", "median", "max", ">= 95%", "front pts found", "s/run")
    print("{:<8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>16} {:>6}".format(*header))
    for strategy in args.strategies.split(","):
        ratios, found, seconds = [], [], []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            outcome = run(SPEC, strategy, seed, args.budget, measured)
            seconds.append(time.perf_counter() - t0)
            assert outcome.pareto is not None
            mine = [tuple(float(t.objectives[o] or 0.0) for o in OBJECTIVES) for t in outcome.pareto.front]
            feasible_tier = outcome.pareto.tier != "measured"
            ratios.append(normalised_hv(mine, norm) / exhaustive if feasible_tier and mine else 0.0)
            true_front = {values[k] for k in front}
            found.append(sum(1 for p in set(mine) if p in true_front))
        met = sum(r >= TARGET for r in ratios)
        print(f"{strategy:<8} {statistics.mean(ratios):>7.1%} {min(ratios):>7.1%} {statistics.median(ratios):>7.1%} "
              f"{max(ratios):>7.1%} {met:>4}/{len(ratios):<2} {statistics.mean(found):>9.1f} of {len(front):<3} "
              f"{statistics.mean(seconds):>6.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
