"""What early stopping and precision-bounded cells save on one study, and whether they cost the answer.

The same grid study (every configuration once, in the same seeded order) runs five times through what the plugin
uses (``run_task`` over ``make_evaluate`` on the simulator runtime: a simulator process per trial, the real
client): ``full`` (``early_stopping`` off, every cell to its limits), ``pruning`` (early stopping on),
``pruning+precision`` (also ``benchmark.precision`` 0.02), and both again with ``cell_order`` heaviest_first.
The space is Llama-3.1-8B on one simulated H100, chunked-prefill-size x max-running-requests x schedule-policy,
two cells (concurrency 1 and 8) and a hard TTFT p90 SLO of 0.25 s (fail_ratio 0.5): small chunks and few
running requests break it, but only under load, where requests queue.

Printed per mode: trials, pruned trials, cells and requests measured, the simulated seconds those cells ran
(``cell s``: what the benchmarks would cost on real GPUs, launches excluded, independent of this machine's load),
GPU-seconds of the search (wall seconds
of each trial times its GPUs: on the simulator, wall seconds of a sped-up run; compare the modes, not the
absolute figure), the estimate of what early stopping saved, and the best configuration with its confirmed
objective. Then the check that matters: how many pruned trials would have become a new best in ``full``
(they must be none).

    python benchmarks/early_stopping.py [--speedup 16] [--requests 24]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from pytest_autotuner.core.outcome.outcome import TaskOutcome
from pytest_autotuner.core.outcome.task import TaskOptions, run_task
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.evaluate import make_evaluate, plan_from_spec
from pytest_autotuner.runtimes import create_host

MODES = ("full", "pruning", "pruning+precision", "heaviest-first pruning", "heaviest-first pruning+precision")


def make_spec(mode: str, speedup: float, requests: int) -> TaskSpec:
    raw: dict[str, Any] = {
        "task_name": f"early-stopping-{mode}",
        "model": {"id_or_path": "meta-llama/Llama-3.1-8B-Instruct"},
        "runtime": "sim",
        "parameters": {
            "chunked-prefill-size": [128, 512, 2048, 8192],
            "max-running-requests": [2, 8, 32],
            "schedule-policy": ["fcfs", "lpm"],
        },
        "optimization": {
            "strategy": "grid",
            "max_iterations": 24,
            "seed": 3,
            "timeout_per_iteration": 300,
            "confirm_runs": 1,
            "early_stopping": mode != "full",
        },
        "benchmark": {
            "traffic_scenarios": ["D(2048,64)"],
            "num_concurrency": [8, 1],
            "max_requests_per_iteration": requests,
            "max_time_per_iteration": 120,
            "warmup_requests": 1,
            "precision": 0.02 if mode.endswith("precision") else None,
            "min_requests_for_precision": 12,
            "cell_order": "heaviest_first" if mode.startswith("heaviest") else "lightest_first",
        },
        "slo": {"ttft": {"p90": {"threshold": 0.25, "hard_fail": True, "fail_ratio": 0.5}}},
        "simulator": {"speedup": speedup, "startup_scale": 0.05},
    }
    return TaskSpec.model_validate(raw)


def run(mode: str, speedup: float, requests: int) -> tuple[TaskOutcome, float]:
    spec = make_spec(mode, speedup, requests)
    host = create_host("sim", spec, seed=0)
    started = time.monotonic()
    try:
        host.prepare()
        evaluate = make_evaluate(host, plan_from_spec(spec, 0))
        outcome = run_task(spec, TaskOptions(runtime="sim", seed=0, study_name=mode), evaluate, None)
    finally:
        host.close()
    return outcome, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speedup", type=float, default=16.0)
    parser.add_argument("--requests", type=int, default=24)
    args = parser.parse_args()
    outcomes: dict[str, TaskOutcome] = {}
    print(f"{'mode':<34} {'trials':>6} {'pruned':>6} {'cells':>5} {'requests':>8} {'cell s':>6} {'GPU-s':>6} "
          f"{'saved':>5} {'wall s':>6}  best (confirmed)")  # fmt: skip
    for mode in MODES:
        outcome, wall = run(mode, args.speedup, args.requests)
        outcomes[mode] = outcome
        cells = [c for t in outcome.trials for c in t.cells]
        best = outcome.best
        best_text = "none"
        if best is not None:
            params = " ".join(f"{k}={v}" for k, v in best.params.items())
            best_text = f"{params}: {best.score.objective:.4f} s"
        print(
            f"{mode:<34} {len(outcome.trials):>6} {outcome.cost.pruned_trials:>6} {len(cells):>5} "
            f"{sum(c.requests for c in cells):>8} {sum(c.duration for c in cells):>6.0f} "
            f"{outcome.cost.search_gpu_seconds:>6.1f} {outcome.cost.saved_gpu_seconds:>5.1f} {wall:>6.0f}  {best_text}",
            flush=True,
        )
    # a pruned trial that would have become the best: a new best (rank order) in the full run
    full = sorted(outcomes["full"].trials, key=lambda t: t.number)
    leaders: set[str] = set()
    best_key: tuple[bool, bool, float] | None = None
    for t in full:
        if t.failure is not None:
            continue
        key = (not t.meets_slos, not t.feasible, t.value)
        if best_key is None or key < best_key:
            best_key = key
            leaders.add(repr(sorted(t.params.items())))
    for mode in MODES[1:]:
        pruned = [t for t in outcomes[mode].trials if t.pruned]
        wrong = [t for t in pruned if repr(sorted(t.params.items())) in leaders]
        print(f"{mode}: {len(pruned)} pruned, {len(wrong)} of them a new best in the full run")
    for mode in MODES[1:]:
        for t in sorted(outcomes[mode].trials, key=lambda t: t.number):
            if t.pruned:
                print(f"  {mode} #{t.number} {dict(t.params)}: {t.failure_message[:90]}")


if __name__ == "__main__":
    main()
