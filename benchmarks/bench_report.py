"""How long writing one session's report takes, for a 200-trial session (budget: under 3 s).

Builds a real TaskOutcome by running a tuning item (``run_task``) with an injected, instant evaluate over a space large
enough for 200 distinct configurations (about 10% of them fail), then times building its report view
(``report_view``) and writing it (``write_report``) several times and prints the median, the max and the per-plot
breakdown.

    python benchmarks/bench_report.py [--trials 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_autotuner.core.measure.metrics import BenchResult, CellMetrics, RequestRecord
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, Params, TrialFailure
from pytest_autotuner.core.outcome.outcome import TaskOutcome
from pytest_autotuner.core.outcome.task import TaskOptions, run_task
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.report import write_report
from pytest_autotuner.report.plots import render_plots
from pytest_autotuner.report.view import report_view

SPEC: dict[str, Any] = {
    "task_name": "bench-report-200",
    "model": {"id_or_path": "llama-3-2-1b-instruct"},
    "runtime_image_tag": "v0.5.2-cu126",
    "parameters": {
        "tp-size": [1, 2, 4],
        "mem-fraction-static": {"low": 0.6, "high": 0.95},
        "schedule-policy": ["lpm", "fcfs"],
        "chunked-prefill-size": [512, 1024, 2048, 4096, 8192],
        "max-running-requests": {"low": 16, "high": 256, "step": 16},
    },
    "optimization": {"strategy": "random", "objective": "minimize_latency", "max_iterations": 200, "seed": 7,
                     "confirm_runs": 2},
    "benchmark": {"traffic_scenarios": ["D(100,100)", "D(1000,200)"], "num_concurrency": [4, 16]},
    "slo": {"latency": {"p99": {"threshold": 2.5}}, "ttft": {"threshold": 0.4, "hard_fail": True}},
}  # fmt: skip


def _cell(scenario: str, concurrency: int, latency: float) -> CellMetrics:
    records = [
        RequestRecord(send_time=i * 0.05, requested_input_tokens=100, requested_output_tokens=50, input_tokens=100,
                      output_tokens=50, ttft=0.12 * latency * (1 + i / 40), e2e=latency * (1 + i / 40),
                      chunk_times=tuple(0.12 * latency + j * 0.02 for j in range(50)), chunk_tokens=(1,) * 50)
        for i in range(24)
    ]  # fmt: skip
    return CellMetrics(scenario, concurrency, 24 * latency / concurrency, records)


def evaluate(params: Params, deadline: Deadline) -> BenchResult:
    mem = float(params["mem-fraction-static"])
    if mem > 0.92:
        raise TrialFailure(FailureClass.OOM, "CUDA out of memory", log_tail="torch.OutOfMemoryError: CUDA OOM\n")
    if int(params["tp-size"]) == 4 and int(params["chunked-prefill-size"]) == 8192:
        raise TrialFailure(FailureClass.CRASHED, "server died under load", log_tail="Segmentation fault\n")
    base = (
        1.0 + abs(mem - 0.82) + int(params["chunked-prefill-size"]) / 12000 + 0.1 * (params["schedule-policy"] == "lpm")
    )
    base += 0.2 / int(params["tp-size"]) + 64 / (int(params["max-running-requests"]) + 32)
    cells = [_cell(s, c, base * (1.4 if s.startswith("D(1000") else 1.0) * (1 + c / 40))
             for s in ("D(100,100)", "D(1000,200)") for c in (4, 16)]  # fmt: skip
    return BenchResult(cells, {"version": "0.5.2"})


def build_outcome(trials: int) -> TaskOutcome:
    spec = TaskSpec.model_validate({**SPEC, "optimization": {**SPEC["optimization"], "max_iterations": trials}})
    outcome = run_task(spec, TaskOptions(seed=7, study_name="bench-report"), evaluate, None)
    # sampled at random for speed; shown as bayesian so the page includes the startup shading
    optimization = spec.optimization.model_copy(update={"strategy": "bayesian", "n_initial_random": 10})
    return dataclasses.replace(outcome, spec=spec.model_copy(update={"optimization": optimization}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("optuna").setLevel(logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    outcome = build_outcome(args.trials)
    print(f"session: {len(outcome.trials)} trials, {sum(t.failure is not None for t in outcome.trials)} failed, "
          f"built in {time.perf_counter() - started:.1f} s")  # fmt: skip
    times, views, writes = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            view = report_view(outcome)  # every output's figures, computed once (the importance among them)
            t1 = time.perf_counter()
            page = write_report(view, Path(tmp))
            t2 = time.perf_counter()
            times.append(t2 - t0)
            views.append(t1 - t0)
            writes.append(t2 - t1)
        size = page.stat().st_size
    print(f"report_view + write_report x{args.repeats}: median {statistics.median(times):.3f} s, "
          f"max {max(times):.3f} s (first {times[0]:.3f} s); page {size / 1024:.0f} KiB")  # fmt: skip
    print(f"  report_view  median {statistics.median(views):.3f} s; write_report median "
          f"{statistics.median(writes):.3f} s")  # fmt: skip
    breakdown = [render_plots(view.series) for _ in range(3)]
    for index, plot in enumerate(breakdown[0]):
        median = statistics.median(run[index].seconds for run in breakdown)
        print(f"  {plot.name:<12} {median:.3f} s{'' if plot.uri else '  (not drawn: ' + plot.note + ')'}")


if __name__ == "__main__":
    main()
