"""``optimization.per_gpu``: does the tuner pick what a fleet owner would?

Llama-3.1-8B on H100 (simulated) serving D(1000,200) at p99 TTFT <= 200 ms and mean TPOT <= 30 ms: its decode is
memory-bandwidth bound, so tensor parallelism over 2 GPUs splits the weight reads and nearly doubles the load one
replica holds, but not quite, so per GPU it is worse. The same grid (tp-size 1|2 x chunked-prefill-size) is tuned
twice with ``maximize_goodput`` through ``run_task`` (the plugin's pipeline: search, confirmation runs, SGLang's
defaults competing), once without and once with ``per_gpu``, on the in-process simulator (noise 2%, a new noise
seed per launch). Then: how much a fleet of 8 GPUs holds with each pick (replicas = 8 / GPUs per replica).

    python benchmarks/per_gpu_capacity.py
"""

from __future__ import annotations

import itertools
import time

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.measure.trial import Deadline, Params
from pytest_autotuner.core.outcome.task import TaskOptions, run_task
from pytest_autotuner.core.search.gpu_pool import gpus_needed
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.evaluate import plan_from_spec, run_trial
from pytest_autotuner.report.text import answer_line
from pytest_autotuner.sim.inprocess import run_benchmark_in_process

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
FLEET_GPUS = 8


def make_spec(per_gpu: bool) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "task_name": f"per-gpu-{per_gpu}",
            "model": {"id_or_path": MODEL},
            "runtime": "sim",
            "parameters": {"tp-size": [1, 2], "chunked-prefill-size": [2048, 8192]},
            "optimization": {"strategy": "grid", "objective": "maximize_goodput", "per_gpu": per_gpu,
                             "max_iterations": 4, "confirm_runs": 3},
            "benchmark": {"traffic_scenarios": ["D(1000,200)"], "max_time_per_iteration": 600, "warmup_requests": 0,
                          "capacity": {"min": 0.5, "max": 64, "max_steps": 8, "step_seconds": 30}},
            "slo": {"ttft": {"p99": {"threshold": 0.2}}, "tpot": {"threshold": 0.03}},
            "simulator": {"num_gpus": 2},
        }
    )  # fmt: skip


def in_process_evaluate(spec: TaskSpec):  # type: ignore[no-untyped-def]
    """A trial as the plugin runs it (``run_trial``: the plan's fixed cells, if any, then the ladder), with the
    simulator in process; ``goodput_and_ttft.py`` uses it too."""
    plan = plan_from_spec(spec, 0)
    assert spec.model is not None
    model = spec.model.id_or_path
    seeds = itertools.count(1)

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        seed = next(seeds)

        def run(endpoint: object, step: BenchmarkPlan, deadline: Deadline | None = None) -> BenchResult:
            return run_benchmark_in_process(model, params, step, num_gpus=2, seed=seed, noise=0.02)

        return run_trial(run, None, plan, deadline)  # type: ignore[arg-type]

    return evaluate


def main() -> None:
    print(__doc__.split("\n\n")[1].replace("\n", " "))
    for per_gpu in (False, True):
        spec = make_spec(per_gpu)
        started = time.perf_counter()
        outcome = run_task(spec, TaskOptions(seed=1, study_name=spec.task_name), in_process_evaluate(spec), None)
        best = outcome.best
        assert best is not None and best.score.objective is not None
        print(f"\nper_gpu {str(per_gpu).lower()} ({time.perf_counter() - started:.0f} s):")
        for trial in outcome.trials:
            gpus = gpus_needed(trial.params)
            value = trial.objective or 0.0
            replica = value * gpus if per_gpu else value
            print(f"  trial #{trial.number} {trial.params}: one replica holds {replica:.2f} req/s on {gpus} GPU(s), "
                  f"{replica / gpus:.2f} per GPU")  # fmt: skip
        gpus = gpus_needed(best.params)
        replica = best.score.objective * (gpus if per_gpu else 1)
        fleet = FLEET_GPUS // gpus * replica
        print(f"  picked {best.params}: {answer_line(outcome)}")
        print(f"  a fleet of {FLEET_GPUS} GPUs: {FLEET_GPUS // gpus} replicas x {replica:.2f} = {fleet:.1f} req/s")


if __name__ == "__main__":
    main()
