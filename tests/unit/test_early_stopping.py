"""Early stopping in the session (an injected evaluate that reports its cells) and the cost of each trial."""

from __future__ import annotations

import dataclasses

import pytest
from factories import cell, run_session, spec

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.trial import Deadline, Params
from pytest_autotuner.core.outcome.outcome import StudyCost
from pytest_autotuner.core.outcome.records import trial_cost
from pytest_autotuner.report.terminal import progress_line
from pytest_autotuner.report.text import cost_line

# chunked-prefill-size -> (E2E at concurrency 1, E2E at 8, TTFT): 512 is good, 2048 close to it,
# 1024 far slower, 4096 breaks the hard TTFT SLO already at the light load
LANDSCAPE = {512: (1.0, 2.0, 0.2), 1024: (2.0, 4.0, 0.2), 2048: (1.2, 2.3, 0.2), 4096: (1.0, 2.0, 1.5)}


def early_spec(**optimization: object) -> object:
    return spec(
        parameters={"chunked-prefill-size": [512, 1024, 2048, 4096]},
        optimization={"strategy": "grid", "max_iterations": 4, "confirm_runs": 1, **optimization},
        benchmark={"num_concurrency": [8, 1]},  # Reporting runs c=1 then c=8, as BenchmarkPlan.cells orders them
        slo={"ttft": {"p90": {"threshold": 0.5, "hard_fail": True, "fail_ratio": 0.5}}},
        initial_configs=[{"chunked-prefill-size": size} for size in (512, 1024, 2048, 4096)],  # in this order
    )


class Reporting:
    """An evaluate that measures its cells lightest load first and reports each to the deadline, as the client
    does; it remembers which cells each configuration ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[int, list[int]]] = []

    def __call__(self, params: Params, deadline: Deadline) -> BenchResult:
        size = int(params["chunked-prefill-size"])
        light, heavy, ttft = LANDSCAPE[size]
        ran: list[int] = []
        self.ran.append((size, ran))
        deadline.start_benchmark()
        cells = []
        for concurrency, e2e in ((1, light), (8, heavy)):
            measured = cell(e2e, ttft=ttft, concurrency=concurrency)
            ran.append(concurrency)
            deadline.report_cell(measured)  # may raise TrialFailure(PRUNED)
            cells.append(measured)
        return BenchResult(cells)


def test_a_hopeless_trial_is_pruned_after_its_first_cell_and_a_good_one_is_not() -> None:
    evaluate = Reporting()
    events: list[object] = []
    out = run_session(early_spec(), evaluate, on_trial=events.append)
    by_size = {int(t.params["chunked-prefill-size"]): t for t in out.trials}
    assert by_size[1024].failure == "pruned" and "prune_margin" in by_size[1024].failure_message
    assert by_size[4096].failure == "pruned" and "hard SLO" in by_size[4096].failure_message
    assert by_size[512].failure is None and by_size[2048].failure is None  # 20% worse: within the margin
    assert [c.key.concurrency for c in by_size[1024].cells] == [1]  # what it measured before it was stopped
    assert not by_size[1024].measured  # ... is no measurement: never a candidate, never on the plots
    search_runs = evaluate.ran[:4]
    assert search_runs == [(512, [1, 8]), (1024, [1]), (2048, [1, 8]), (4096, [1])]
    assert evaluate.ran[4:] == [(512, [1, 8])]  # the confirmation run is never pruned
    assert out.best is not None and out.best.params == {"chunked-prefill-size": 512}
    assert out.failure_counts == {"pruned": 2} and out.cost.pruned_trials == 2
    assert all(t.pruned == (t.failure == "pruned") for t in out.trials)
    lines = [progress_line(e, "minimize_latency") for e in events]  # type: ignore[arg-type]
    assert sum("-> PRUNED (" in line for line in lines) == 2
    assert out.verdict.passed


def test_early_stopping_off_runs_every_cell() -> None:
    evaluate = Reporting()
    out = run_session(early_spec(early_stopping=False), evaluate)
    assert all(cells == [1, 8] for _size, cells in evaluate.ran)
    assert not out.failure_counts  # 4096 is measured in full and recorded as missing its hard SLO
    assert not next(t for t in out.trials if t.params["chunked-prefill-size"] == 4096).feasible


def test_nothing_is_pruned_before_a_feasible_trial_is_known() -> None:
    evaluate = Reporting()
    s = early_spec()
    s = s.model_copy(update={"initial_configs": [{"chunked-prefill-size": 4096}, {"chunked-prefill-size": 512}]})
    run_session(s.model_copy(update={"optimization": s.optimization.model_copy(update={"max_iterations": 2})}),
                evaluate)  # fmt: skip
    assert evaluate.ran[0] == (4096, [1, 8])  # first: measured in full, the least bad so far


def test_trial_cost_counts_launch_and_benchmark_times_gpus_and_what_pruning_saved() -> None:
    deadline = Deadline(None)
    deadline.started = 100.0
    deadline.benchmark_started = 160.0  # a 60 s launch
    deadline.report_cell(cell(1.0, concurrency=1))
    deadline.cell_times = [190.0]  # one 30 s cell, then pruned
    cost = trial_cost(deadline, 195.0, gpus=4, total_cells=4, pruned=True, max_requests=100, max_time=60)
    assert cost.launch_s == 60 and cost.benchmark_s == 35 and cost.gpu_seconds == 4 * 95  # teardown included
    assert cost.cells_skipped == 3 and cost.saved_pruning == pytest.approx(3 * 30 * 4)
    complete = trial_cost(deadline, 195.0, gpus=1, total_cells=1, pruned=False, max_requests=100, max_time=60)
    assert complete.benchmark_s == 35 and complete.saved == 0
    never = trial_cost(Deadline(None), 0.0, gpus=2, total_cells=4, pruned=False, max_requests=100, max_time=60)
    assert never.benchmark_s == 0 and never.cells_run == 0


def test_trial_cost_estimates_what_a_precision_stop_saved_from_the_cells_own_rate() -> None:
    stopped = cell(1.0, n=20, concurrency=1)  # 20 requests in 20 server seconds
    stopped.precision_stop = True
    deadline = Deadline(None)
    deadline.started, deadline.benchmark_started = 0.0, 10.0
    deadline.report_cell(stopped)
    deadline.cell_times = [20.0]  # 10 wall seconds for the cell
    # full length: 100 requests at 1/s = 100 s, capped at max_time 60 s: 3x what it ran, so 2 x 10 s saved
    cost = trial_cost(deadline, 20.0, gpus=2, total_cells=1, pruned=False, max_requests=100, max_time=60)
    assert cost.saved_precision == pytest.approx(2 * 20.0)


def test_the_summary_line_shows_cost_and_savings() -> None:
    out = run_session(early_spec(), Reporting())
    assert out.cost.search_gpu_seconds == pytest.approx(sum(t.gpu_seconds for t in out.trials))
    assert out.cost.gpu_seconds >= out.cost.search_gpu_seconds
    text = cost_line(out)
    assert text.startswith("cost: ") and "GPU-seconds" in text and "(2 trials pruned)" in text
    big = StudyCost(search_gpu_seconds=4 * 3600, confirm_gpu_seconds=0.5 * 3600, saved_gpu_seconds=1.3 * 3600)
    assert cost_line(dataclasses.replace(out, cost=big)) == (
        "cost: 4.5 GPU-hours (0.5 of them confirming); early stopping saved 1.3"
    )
