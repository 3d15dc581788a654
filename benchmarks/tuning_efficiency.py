"""How fast does each strategy find the best configuration? Grid, random and bayesian on simulated spaces.

Run: ``python benchmarks/tuning_efficiency.py`` (``--seeds 20 --budget 50``; ``--spaces a,a-heavy,b,c``).

Every run goes through the plugin's own code: ``SearchSpace.from_spec``, ``Search`` (in-memory study) and
``TuningSession`` (``confirm_runs`` 0), which scores with ``scoring.score_result`` and, for a server that
fails at startup (``TrialFailure`` from the simulator), ``scoring.score_failure``. The evaluate function is the
simulator's performance model called in process with noise 0, so the search sees the true objective and the
numbers measure the search, not luck in the measurement. Results are memoised per configuration (the model is
deterministic), which only saves time: a repeated evaluation is still counted as a duplicate.

The true optimum is the best feasible score (penalized value, constraint <= 0) over every grid point; for a
continuous float range, over a dense set of values plus every point any run evaluated. Per strategy:
trials until the best feasible score so far is within 1% of the optimum (median, p90; ">N" = not within the
budget), the gap to the optimum after 25 trials, startup failures after the random start phase, duplicate
evaluations. Last, the tuner's own time per trial (sampling, scoring, storage) with a trivial evaluate.
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_autotuner.core.metrics import BenchResult
from pytest_autotuner.core.optuna_compat import quiet_optuna_logging
from pytest_autotuner.core.scoring import TrialScore, score_failure, score_result
from pytest_autotuner.core.search import Search, default_storage_url
from pytest_autotuner.core.session import TuningSession
from pytest_autotuner.core.space import FloatRange, SearchSpace
from pytest_autotuner.core.spec import RangeParam, TaskSpec
from pytest_autotuner.core.trial import Deadline, FailureClass, Params, ParamValue, TrialFailure
from pytest_autotuner.evaluate import plan_from_spec
from pytest_autotuner.sim import run_benchmark_in_process

STRATEGIES = ("grid", "random", "bayesian")
STARTUP_FAILURES = {"oom", "kv_cache_oom", "invalid_parallelism"}
WITHIN = 0.01  # "found the optimum" = within 1%


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    spec: TaskSpec
    num_gpus: int
    dense: dict[str, tuple[float, ...]] = field(default_factory=dict)  # values for continuous float ranges

    @property
    def model(self) -> str:
        assert self.spec.model is not None
        return self.spec.model.id_or_path


def _spec(name: str, parameters: dict[str, Any], objective: str, bench: dict[str, Any], **extra: Any) -> TaskSpec:
    raw: dict[str, Any] = {
        "task_name": name,
        "model": {"id_or_path": extra.pop("model", "llama-3-2-1b-instruct")},
        "runtime": "sim",
        "parameters": parameters,
        "optimization": {"strategy": "bayesian", "objective": objective, "confirm_runs": 0},
        # small plans keep a run short; max_time is simulated seconds, never the limit here
        "benchmark": {"max_requests_per_iteration": 32, "max_time_per_iteration": 1e6, **bench},
        **extra,
    }
    return TaskSpec.model_validate(raw)


SEED_SPACE = {
    "tp-size": [1, 2],
    "mem-fraction-static": [0.7, 0.75, 0.8, 0.85, 0.9],
    "schedule-policy": ["lpm", "fcfs"],
    "chunked-prefill-size": [512, 1024, 2048, 4096],
}
HEAVY = {"traffic_scenarios": ["N(1000,500)/(200,100)"], "num_concurrency": [32, 64]}

CASES = {
    "a": Case(
        "a",
        "(a) seed task: Llama-3.2-1B, 2x H100, D(100,100) at concurrency 4 and 8, minimize_latency (80 points)",
        _spec(
            "seed-1b", SEED_SPACE, "minimize_latency", {"traffic_scenarios": ["D(100,100)"], "num_concurrency": [4, 8]}
        ),
        num_gpus=2,
    ),
    "a-heavy": Case(
        "a-heavy",
        "(a-heavy) seed space, heavier traffic N(1000,500)/(200,100) at concurrency 32 and 64 (80 points)",
        _spec("seed-1b-heavy", SEED_SPACE, "minimize_latency", HEAVY),
        num_gpus=2,
    ),
    "b": Case(
        "b",
        "(b) Llama-3.1-8B on 2x H100, tp 1/2/4, mem-fraction 0.2..0.97, maximize_throughput (288 points)",
        _spec(
            "failing-8b",
            {
                "tp-size": [1, 2, 4],
                "mem-fraction-static": [0.2, 0.5, 0.7, 0.8, 0.85, 0.9, 0.94, 0.97],
                "chunked-prefill-size": [2048, 4096, 8192, 16384],
                "cuda-graph-max-bs": [64, 256, 512],
            },
            "maximize_throughput",
            HEAVY,
            model="llama-3.1-8b-instruct",
        ),
        num_gpus=2,
    ),
    "c": Case(
        "c",
        "(c) Llama-3.1-8B on 1x H100, int/float ranges + booleans, TTFT p90 <= 2 s hard SLO, maximize_throughput",
        _spec(
            "mixed-8b",
            {
                "max-running-requests": {"low": 4, "high": 64, "step": 4},
                "schedule-conservativeness": {"low": 0.3, "high": 2.0},
                "enable-mixed-chunk": [True, False],
                "cuda-graph-max-bs": [8, 16, 32, 64, 128],
                "chunked-prefill-size": [512, 1024, 2048, 4096, 8192],
            },
            "maximize_throughput",
            HEAVY,
            model="llama-3.1-8b-instruct",
            slo={"ttft": {"p90": {"threshold": 2.0, "hard_fail": True, "fail_ratio": 0.25}}},
        ),
        num_gpus=1,
        dense={"schedule-conservativeness": (0.3, 1.15, 2.0)},
    ),
}


# -- the simulated evaluation, memoised ---------------------------------------------------------------------

# failures are kept as (class, message): TrialFailure itself does not pickle to the worker processes
_CACHE: dict[tuple[str, str], BenchResult | tuple[FailureClass, str]] = {}


def measure(case: Case, space: SearchSpace, params: Params) -> BenchResult:
    """The noise-free simulator result for ``params`` (raises TrialFailure like a real startup failure)."""
    key = (case.key, space.key(params))
    if key not in _CACHE:
        plan = plan_from_spec(case.spec, seed=0)
        try:
            _CACHE[key] = run_benchmark_in_process(case.model, params, plan, num_gpus=case.num_gpus, noise=0.0)
        except TrialFailure as failure:
            _CACHE[key] = (failure.failure_class, failure.message)
    outcome = _CACHE[key]
    if isinstance(outcome, tuple):
        raise TrialFailure(*outcome)
    return outcome


def score(case: Case, space: SearchSpace, params: Params) -> TrialScore:
    """Scored exactly as the session scores a trial."""
    try:
        return score_result(measure(case, space, params), case.spec.optimization, case.spec.slo)
    except TrialFailure as failure:
        return score_failure(failure.failure_class, case.spec.optimization, failure.message)


def dense_points(case: Case, space: SearchSpace) -> Iterator[Params]:
    axes: list[tuple[ParamValue, ...]] = []
    for dim in space.dimensions:
        values = case.dense.get(dim.name) if isinstance(dim, FloatRange) else None
        grid = values if values is not None else dim.grid_values()
        if grid is None:
            raise SystemExit(f"case {case.spec.task_name}: continuous range {dim.name} needs dense values")
        axes.append(grid)
    for combo in itertools.product(*axes):
        yield dict(zip(space.names, combo, strict=True))


def _truth_chunk(args: tuple[str, list[Params]]) -> list[tuple[str, BenchResult | tuple[FailureClass, str]]]:
    case = CASES[args[0]]
    space = SearchSpace.from_spec(case.spec)
    for params in args[1]:
        score(case, space, params)
    return [(space.key(p), _CACHE[(case.key, space.key(p))]) for p in args[1]]


def better(case: Case, a: float, b: float) -> bool:
    return a > b if case.spec.optimization.direction == "maximize" else a < b


def within(case: Case, value: float, optimum: float, tolerance: float) -> bool:
    if case.spec.optimization.direction == "maximize":
        return value >= optimum - tolerance * abs(optimum)
    return value <= optimum + tolerance * abs(optimum)


# -- one tuning run --------------------------------------------------------------------------------------------


@dataclass
class Run:
    strategy: str
    seed: int
    values: list[float]  # per evaluated trial, in order; NaN for infeasible
    startup_failed: list[bool]
    duplicates: int


def one_run(job: tuple[str, str, int, int]) -> Run:
    case_key, strategy, seed, budget = job
    case = CASES[case_key]
    opt = case.spec.optimization.model_copy(update={"strategy": strategy, "max_iterations": budget, "seed": seed})
    spec = case.spec.model_copy(update={"optimization": opt})
    if strategy == "grid":
        spec = _with_grid_steps(spec)
    space = SearchSpace.from_spec(spec)
    search = Search(spec=spec, space=space, storage=None, study_name=f"{case.key}-{strategy}-{seed}", seed=seed)
    seen: list[str] = []

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        seen.append(space.key(params))
        return measure(case, space, params)

    TuningSession(spec=spec, search=search, evaluate=evaluate).run()
    values, failed = [], []
    for trial in sorted(search.evaluated(), key=lambda t: t.number):
        feasible = all(v <= 0 for v in trial.constraints.values())
        values.append(float(trial.value) if feasible and trial.value is not None else math.nan)
        failed.append(trial.user_attrs.get("failure") in STARTUP_FAILURES)
    return Run(strategy, seed, values, failed, len(seen) - len(set(seen)))


def _with_grid_steps(spec: TaskSpec) -> TaskSpec:
    """Grid search needs a step on every float range (the error tells users so): ten intervals each."""
    parameters: dict[str, Any] = {}
    for name, raw in spec.parameters.items():
        if isinstance(raw, RangeParam) and raw.step is None and not raw.is_int:
            raw = raw.model_copy(update={"step": (raw.high - raw.low) / 10})
        parameters[name] = raw
    return spec.model_copy(update={"parameters": parameters})


# -- statistics and the table ----------------------------------------------------------------------------------


def trials_to_optimum(case: Case, run: Run, optimum: float) -> float:
    best = math.nan
    for i, value in enumerate(run.values, start=1):
        if not math.isnan(value) and (math.isnan(best) or better(case, value, best)):
            best = value
        if not math.isnan(best) and within(case, best, optimum, WITHIN):
            return float(i)
    return math.inf


def gap_after(case: Case, run: Run, optimum: float, n: int) -> float:
    """Relative distance of the best feasible score of the first n trials from the optimum (inf: none)."""
    feasible = [v for v in run.values[:n] if not math.isnan(v)]
    if not feasible:
        return math.inf
    best = max(feasible) if case.spec.optimization.direction == "maximize" else min(feasible)
    return abs(best - optimum) / abs(optimum)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def fmt_trials(value: float, budget: int) -> str:
    return f">{budget}" if math.isinf(value) else f"{value:g}"


def summarize(case: Case, runs: list[Run], optimum: float, budget: int, n_random: int) -> list[list[str]]:
    rows = []
    for strategy in STRATEGIES:
        mine = [r for r in runs if r.strategy == strategy]
        hits = [trials_to_optimum(case, r, optimum) for r in mine]
        gaps = [gap_after(case, r, optimum, 25) for r in mine]
        after = [f for r in mine for f in r.startup_failed[n_random:]]
        all_failed = [f for r in mine for f in r.startup_failed]
        rows.append(
            [
                strategy,
                fmt_trials(statistics.median(hits), budget),
                fmt_trials(quantile(hits, 0.9), budget),
                f"{statistics.median(gaps) * 100:.2f}%",
                f"{sum(g <= 0.02 for g in gaps)}/{len(gaps)}",
                f"{sum(all_failed) / max(len(all_failed), 1) * 100:.0f}%",
                f"{sum(after) / max(len(after), 1) * 100:.1f}%",
                str(sum(r.duplicates for r in mine)),
            ]
        )
    return rows


HEADER = [
    "strategy",
    "trials to 1% (median)",
    "p90",
    "gap after 25 (median)",
    "seeds within 2% after 25",
    "startup failures, all",
    f"after trial {5}",
    "duplicate evals",
]


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- the tuner's own time -------------------------------------------------------------------------------------


def tuner_time(case: Case, storage: str | None, n: int = 100) -> tuple[float, float]:
    """Mean ms per trial over n trials and over the last 10, with an evaluate that returns a stored result."""
    space = SearchSpace.from_spec(case.spec)
    fixed = measure(case, space, next(p for p in dense_points(case, space) if _ok(case, space, p)))
    opt = case.spec.optimization.model_copy(update={"max_iterations": n, "seed": 0})
    spec = case.spec.model_copy(update={"optimization": opt})
    search = Search(spec=spec, space=space, storage=storage, study_name=f"timing-{case.key}", seed=0)
    stamps: list[float] = []

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        stamps.append(time.perf_counter())
        return fixed

    started = time.perf_counter()
    TuningSession(spec=spec, search=search, evaluate=evaluate).run()
    total = time.perf_counter() - started
    return total / n * 1e3, (stamps[-1] - stamps[-11]) / 10 * 1e3


def _ok(case: Case, space: SearchSpace, params: Params) -> bool:
    try:
        measure(case, space, params)
    except TrialFailure:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--spaces", default=",".join(CASES))
    parser.add_argument("--workers", type=int, default=max(1, multiprocessing.cpu_count()))
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args(argv)
    quiet_optuna_logging()  # Search no longer does it; forked workers inherit it
    started = time.perf_counter()
    ctx = multiprocessing.get_context("fork")  # workers inherit the memo filled while finding the optimum
    out: list[str] = [f"Command: `python benchmarks/tuning_efficiency.py {' '.join(sys.argv[1:])}`".rstrip()]
    for key in args.spaces.split(","):
        case = CASES[key]
        space = SearchSpace.from_spec(case.spec)
        points = list(dense_points(case, space))
        chunks = [(key, points[i :: args.workers]) for i in range(args.workers)]
        with ctx.Pool(args.workers) as pool:
            for chunk in pool.map(_truth_chunk, chunks):  # the parent's memo: forked run workers start warm
                _CACHE.update({(key, point): outcome for point, outcome in chunk})
        scored = [(p, score(case, space, p)) for p in points]
        feasible = [s.value for _p, s in scored if s.feasible]
        optimum = max(feasible) if case.spec.optimization.direction == "maximize" else min(feasible)
        jobs = [(key, strategy, seed, args.budget) for strategy in STRATEGIES for seed in range(args.seeds)]
        with ctx.Pool(args.workers) as pool:
            runs = pool.map(one_run, jobs, chunksize=1)
        for run in runs:  # a run may find a better point between the dense values of a continuous range
            for value in run.values:
                if not math.isnan(value) and better(case, value, optimum):
                    optimum = value
        n_fail = sum(1 for _p, s in scored if s.failure is not None)
        n_infeasible = sum(1 for _p, s in scored if not s.feasible)
        n_near = sum(1 for _p, s in scored if s.feasible and within(case, s.value, optimum, WITHIN))
        rows = summarize(case, runs, optimum, args.budget, case.spec.optimization.n_initial_random)
        out += [
            "",
            f"### {case.title}",
            "",
            f"{len(points)} points evaluated for the optimum: {n_fail} fail at startup, {n_infeasible} infeasible "
            f"in all, {n_near} within 1% of the optimum ({optimum:.5g}). {args.seeds} seeds, budget "
            f"{args.budget} trials, n_initial_random {case.spec.optimization.n_initial_random}, noise 0.",
            "",
            markdown(rows),
        ]
        print("\n".join(out[-7:]), flush=True)
    if not args.no_timing:
        out += ["", "### Tuner time per trial (sampling, scoring, storage; trivial evaluate; bayesian)", ""]
        out += ["| space | storage | mean ms/trial over 100 | ms/trial, trials 90-100 |", "|---|---|---|---|"]
        with tempfile.TemporaryDirectory() as tmp:
            for key in ("a", "c"):
                case = CASES[key]
                for label, url in (("in-memory", None), ("journal file", default_storage_url(Path(tmp), key))):
                    mean, last = tuner_time(case, url)
                    out.append(f"| {key} | {label} | {mean:.1f} | {last:.1f} |")
                    print(out[-1], flush=True)
    out.append(f"\nTotal wall time {time.perf_counter() - started:.0f} s.")
    print("\n\n--- markdown for benchmarks/RESULTS.md ---\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
