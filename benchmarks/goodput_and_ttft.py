"""Goodput per GPU beside mean TTFT (issue 18's example of two objectives): the front and the select rule's pick.

Llama-3.1-8B on H100 (simulated) serving D(1000,200) at p99 TTFT <= 200 ms and mean TPOT <= 30 ms, the grid of
``per_gpu_capacity.py`` (tp-size 1|2 x chunked-prefill-size 2048|8192) tuned through ``run_task`` with
``objectives: [maximize_goodput, minimize_ttft]``, ``per_gpu`` and ``select: best minimize_ttft within 10% of the
best goodput per GPU``. Each trial runs, on one in-process simulated server (noise 2%, a new noise seed per
launch), the fixed cell c=8 (mean TTFT, the same load for every configuration) and then the capacity ladder
(``evaluate.run_trial``, as the plugin does). Printed: each trial's two objectives and ladder steps, the front,
the pick, and how much of a trial's simulated time the fixed cell adds to the ladder.

    python benchmarks/goodput_and_ttft.py
"""

from __future__ import annotations

import time

from per_gpu_capacity import in_process_evaluate

from pytest_autotuner.core.measure.scoring import fixed_cells
from pytest_autotuner.core.outcome.task import TaskOptions, run_task
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.report.terminal import summary_lines
from pytest_autotuner.report.text import answer_line
from pytest_autotuner.report.view import report_view

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def make_spec() -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "task_name": "goodput-and-ttft",
            "model": {"id_or_path": MODEL},
            "runtime": "sim",
            "parameters": {"tp-size": [1, 2], "chunked-prefill-size": [2048, 8192]},
            "optimization": {"strategy": "grid", "objectives": ["maximize_goodput", "minimize_ttft"],
                             "per_gpu": True, "max_iterations": 4, "confirm_runs": 3,
                             "select": {"best": "minimize_ttft", "within": {"maximize_goodput": 0.1}}},
            "benchmark": {"traffic_scenarios": ["D(1000,200)"], "num_concurrency": [8],
                          "max_requests_per_iteration": 200, "max_time_per_iteration": 600, "warmup_requests": 0,
                          "capacity": {"min": 0.5, "max": 64, "max_steps": 8, "step_seconds": 30}},
            "slo": {"ttft": {"p99": {"threshold": 0.2}}, "tpot": {"threshold": 0.03}},
            "simulator": {"num_gpus": 2},
        }
    )  # fmt: skip


def main() -> None:
    print(__doc__.split("\n\n")[1].replace("\n", " "))
    spec = make_spec()
    started = time.perf_counter()
    outcome = run_task(spec, TaskOptions(seed=1, study_name=spec.task_name), in_process_evaluate(spec), None)
    print(f"\n({time.perf_counter() - started:.0f} s wall)")
    for trial in sorted(outcome.trials, key=lambda t: t.number):
        goodput, ttft = trial.objectives["maximize_goodput"], trial.objectives["minimize_ttft"]
        steps = sum(c.key.ladder for c in trial.cells)
        fixed = sum(c.duration for c in trial.cells if not c.key.ladder)
        ladder = sum(c.duration for c in trial.cells if c.key.ladder)
        print(f"  trial #{trial.number} {trial.params}: goodput {goodput:.2f} req/s per GPU, mean TTFT "
              f"{(ttft or 0) * 1000:.1f} ms at c=8; {steps} ladder steps; simulated s: fixed cell {fixed:.0f}, "
              f"ladder {ladder:.0f} (+{fixed / ladder:.0%})")  # fmt: skip
    pareto = outcome.pareto
    assert pareto is not None and outcome.best is not None
    print(f"  front: {sorted(t.number for t in pareto.front)}; dominated: {[t.number for t in pareto.dominated]}")
    best = outcome.best
    runs = [round(sum(c.summary("ttft").mean for c in fixed_cells(r)), 4) for r in best.runs]
    print(f"  picked {best.params} (trial #{best.source_trial}); confirmed TTFT per run {runs} s")
    print(f"  {answer_line(outcome)}")
    for line in summary_lines(report_view(outcome), None)[1:5]:
        print(line)


if __name__ == "__main__":
    main()
