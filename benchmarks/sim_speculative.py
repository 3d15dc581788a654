"""Speculative decoding on the simulator: which draft length wins, by acceptance and by load.

For Llama-3.1-8B-Instruct on a simulated H100 with EAGLE3 chain drafts (top-k 1), the in-process simulator (the
same scheduler and step prices as the server, no HTTP, noise 0) measures output throughput on D(512,256) closed
loops at concurrency 1, 16 and 64 for draft lengths (``--speculative-num-steps``) 1 to 8 and no speculation,
under per-position acceptance 0.5, 0.7 and 0.9 (``--sim-spec-acceptance``, one rate for every position). Then a
grid tuning run per acceptance at concurrency 4 picks the draft length that maximizes throughput.

Prints one row per (acceptance, concurrency): the throughput of each draft length relative to no speculation and
the best length; then the tuned draft length per acceptance. Expected from the model (``sim/speculative.py``):
the best length rises with acceptance and falls with load, and long drafts at low acceptance under load lose to
no speculation.

Run: ``python benchmarks/sim_speculative.py`` (about half a minute on 2 cores).
"""

from __future__ import annotations

import time

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.measure.trial import Deadline, Params
from pytest_autotuner.core.outcome.task import TaskOptions, run_task
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.sim.inprocess import run_benchmark_in_process

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
STEPS = (1, 2, 3, 4, 5, 6, 8)
ACCEPTANCE = ("0.5", "0.7", "0.9")


def throughput(concurrency: int, acceptance: str | None, steps: int | None) -> float:
    plan = BenchmarkPlan((parse_scenario("D(512,256)"),), (concurrency,), max_requests=max(16, 2 * concurrency),
                         warmup_requests=0)  # fmt: skip
    params: dict[str, object] = {}
    if steps is not None:
        params = {"speculative-algorithm": "EAGLE3", "speculative-num-steps": steps, "speculative-eagle-topk": 1,
                  "sim-spec-acceptance": acceptance}  # fmt: skip
    (cell,) = run_benchmark_in_process(MODEL, params, plan).cells  # type: ignore[arg-type]
    return cell.output_throughput


def tuned_steps(acceptance: str) -> int:
    plan = BenchmarkPlan((parse_scenario("D(512,256)"),), (4,), max_requests=8, warmup_requests=0)

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        fixed = {"speculative-algorithm": "EAGLE3", "speculative-eagle-topk": 1, "sim-spec-acceptance": acceptance}
        return run_benchmark_in_process(MODEL, {**params, **fixed}, plan)  # type: ignore[dict-item]

    spec = TaskSpec.model_validate({
        "task_name": f"spec-{acceptance}",
        "model": {"id_or_path": MODEL},
        "parameters": {"speculative-num-steps": list(STEPS)},
        "optimization": {"strategy": "grid", "objective": "maximize_throughput", "max_iterations": len(STEPS)},
    })  # fmt: skip
    outcome = run_task(spec, TaskOptions(seed=1, study_name=spec.task_name), evaluate, None)
    assert outcome.best is not None
    return int(outcome.best.params["speculative-num-steps"])


def main() -> None:
    started = time.perf_counter()
    print(f"{MODEL}, H100 (simulated), EAGLE3 chain drafts, D(512,256): output throughput / no speculation")
    print("accept  c   " + "  ".join(f"n={n:<3}" for n in STEPS) + "  best  plain tok/s")
    for acceptance in ACCEPTANCE:
        for concurrency in (1, 16, 64):
            plain = throughput(concurrency, None, None)
            ratios = {n: throughput(concurrency, acceptance, n) / plain for n in STEPS}
            best = max(ratios, key=lambda n: ratios[n])
            cells = "  ".join(f"{ratios[n]:5.2f}" for n in STEPS)
            print(f"{acceptance:>6}  {concurrency:<3} {cells}  n={best:<3} {plain:8.0f}")
    tuned = {acceptance: tuned_steps(acceptance) for acceptance in ACCEPTANCE}
    print("grid tuning at c=4, maximize_throughput: " + ", ".join(f"acceptance {a}: n={n}" for a, n in tuned.items()))
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
