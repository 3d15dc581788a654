"""False positives and detection power of the baseline regression check, at the simulator's default noise.

Each repetition records a baseline from `confirm_runs` simulated runs (fresh noise seeds), then compares
(a) an unchanged configuration and (b) the same configuration made 15% slower (`--sim-slowdown 1.15`), each
measured with fresh seeds, through the same `baseline.compare` the plugin uses, including the one extra run
for an ambiguous answer. The simulator runs in process (no HTTP), with its default 3% run-to-run noise.

    python benchmarks/baseline_noise.py [--repeats 40] [--runs 2]
"""

from __future__ import annotations

import argparse
import time

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.scoring import score_result
from pytest_autotuner.core.outcome.baseline import ALPHA, compare, fingerprint, make_baseline
from pytest_autotuner.core.outcome.records import Confirmation
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.evaluate import plan_from_spec
from pytest_autotuner.sim.inprocess import run_benchmark_in_process

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
PARAMS = {"chunked-prefill-size": 2048, "max-running-requests": 64}
SPEC = TaskSpec.model_validate(
    {
        "task_name": "noise",
        "model": {"id_or_path": MODEL},
        "runtime": "sim",
        "parameters": {"chunked-prefill-size": [2048], "max-running-requests": [64]},
        "optimization": {"objective": "minimize_latency", "max_iterations": 2, "n_initial_random": 1},
        "benchmark": {
            "traffic_scenarios": ["N(512,128)/(128,32)"],
            "num_concurrency": [8, 32],
            "max_requests_per_iteration": 64,
        },
        "slo": {"ttft": {"p90": {"threshold": 1.0}}, "tpot": {"threshold": 0.05}},
    }
)
NOISE = 0.03  # the simulator's default --sim-noise


def measure(seeds: list[int], slowdown: float) -> Confirmation:
    plan = plan_from_spec(SPEC, 0)
    params = {**PARAMS, "sim-slowdown": slowdown}
    runs = [run_benchmark_in_process(MODEL, params, plan, seed=seed, noise=NOISE) for seed in seeds]
    return Confirmation(dict(PARAMS), 0, runs, score_result(BenchResult.merge(runs), SPEC.optimization, SPEC.slo))


def check(baseline: dict, now: Confirmation, next_seed: int, slowdown: float) -> tuple[bool, bool]:
    """(regressed, needed an extra run)"""
    fp = baseline["fingerprint"]
    verdict = compare(baseline, SPEC, now, fp, path="baseline.json")
    if verdict.ambiguous:
        extra = measure([next_seed], slowdown).runs
        now = Confirmation(now.params, 0, [*now.runs, *extra], now.score)
        return compare(baseline, SPEC, now, fp, path="baseline.json").regressed, True
    return verdict.regressed, False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--runs", type=int, default=2, help="confirmation runs of the compared run")
    parser.add_argument("--baseline-runs", type=int, default=5, help="runs recorded in the baseline")
    args = parser.parse_args()
    started = time.perf_counter()
    fp = fingerprint(SPEC, "sim", {"version": "0.5.2-sim"})
    false_pos = detected = extra_unchanged = extra_slow = 0
    for rep in range(args.repeats):
        seed = 1000 * (rep + 1)
        base = make_baseline(SPEC, measure([seed + i for i in range(args.baseline_runs)], 1.0), fp)
        regressed, extra = check(base, measure([seed + 100 + i for i in range(args.runs)], 1.0), seed + 199, 1.0)
        false_pos += regressed
        extra_unchanged += extra
        regressed, extra = check(base, measure([seed + 200 + i for i in range(args.runs)], 1.15), seed + 299, 1.15)
        detected += regressed
        extra_slow += extra
    n = args.repeats
    print(f"baseline regression check: tolerance 10%, one-sided t-test on per-run values, Holm-adjusted, p < {ALPHA}")
    print(
        f"simulated {MODEL}, baseline of {args.baseline_runs} runs, {args.runs} confirmation runs "
        f"(+1 when ambiguous), noise {NOISE:.0%}, {n} repetitions"
    )
    print(f"{'case':<22}{'flagged':>10}{'rate':>8}{'extra runs':>12}")
    print(f"{'unchanged rerun':<22}{false_pos:>10}{false_pos / n:>8.1%}{extra_unchanged:>12}")
    print(f"{'15% slower':<22}{detected:>10}{detected / n:>8.1%}{extra_slow:>12}")
    print(f"goal: false positives <= 1 in 20 ({n // 20} of {n}), detection >= 19 in 20 ({19 * n // 20} of {n})")
    print(f"elapsed {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
