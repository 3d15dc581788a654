"""Check mode in the core (``TaskOptions.check``): no search, the baseline's configuration through the same gate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import factories

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, Params, TrialFailure
from pytest_autotuner.core.outcome.baseline import Baseline
from pytest_autotuner.core.outcome.outcome import TaskOutcome
from pytest_autotuner.core.outcome.records import TrialEvent
from pytest_autotuner.core.outcome.task import TaskOptions, run_task
from pytest_autotuner.core.outcome.verdict import ReasonKind
from pytest_autotuner.report.data import results_summary
from pytest_autotuner.report.terminal import progress_line, summary_lines
from pytest_autotuner.report.view import report_view

SPEC = factories.spec(
    task_name="checked",
    parameters={"chunked-prefill-size": [512, 1024, 2048]},
    optimization={"strategy": "grid", "max_iterations": 3, "confirm_runs": 3},
    regression={"baseline_runs": 5},
)


class Server:
    """An evaluate function whose latency grows with the chunk size, times ``slowdown``; it counts launches."""

    def __init__(self, slowdown: float = 1.0, fail: bool = False) -> None:
        self.slowdown = slowdown
        self.fail = fail
        self.launched: list[Params] = []

    def __call__(self, params: Params, deadline: Deadline) -> BenchResult:
        self.launched.append(dict(params))
        if self.fail:
            raise TrialFailure(FailureClass.CRASHED, "the server exited")
        return factories.result((1.0 + int(params["chunked-prefill-size"]) / 4096) * self.slowdown)


def recorded_baseline() -> Baseline:
    outcome = run_task(SPEC, TaskOptions(seed=1, study_name="record", update_baseline=True), Server(), None)
    assert outcome.new_baseline is not None
    return outcome.new_baseline


def check(baseline: Baseline | None, server: Callable[[Params, Deadline], BenchResult]) -> TaskOutcome:
    return run_task(SPEC, TaskOptions(seed=1, check=True, baseline_path="tuning_specs/checked.baseline.json"),
                    server, baseline)  # fmt: skip


def test_a_check_launches_only_the_baselines_configuration_for_the_confirmation_runs() -> None:
    baseline = recorded_baseline()
    server = Server()
    outcome = check(baseline, server)
    assert outcome.mode == "check" and outcome.is_check
    assert outcome.verdict.passed, outcome.verdict.explanation()
    assert server.launched == [baseline.best_params] * 3  # confirm_runs, no search trial
    assert outcome.trials == ()
    assert outcome.baseline is not None and outcome.baseline.compared and not outcome.baseline.regressed


def test_a_slower_server_fails_the_check_with_a_regression_after_one_extra_run() -> None:
    baseline = recorded_baseline()
    server = Server(slowdown=1.4)
    outcome = check(baseline, server)
    assert [r.kind for r in outcome.verdict.reasons] == [ReasonKind.REGRESSION]
    assert len(server.launched) == 3 + 1  # the gate's one extra run on an ambiguous first comparison
    assert "REGRESSION" in outcome.verdict.explanation()


def test_a_check_without_a_baseline_fails_before_any_launch_with_the_command_to_record_one() -> None:
    server = Server()
    outcome = check(None, server)
    assert server.launched == []
    assert [r.kind for r in outcome.verdict.reasons] == [ReasonKind.NO_BASELINE]
    text = outcome.verdict.explanation()
    assert "pytest --autotune --autotune-update-baseline" in text
    assert "tuning_specs/checked.baseline.json" in text


def test_a_check_whose_runs_all_fail_says_so_in_check_words() -> None:
    outcome = check(recorded_baseline(), Server(fail=True))
    assert [r.kind for r in outcome.verdict.reasons] == [ReasonKind.NO_MEASUREMENT]
    assert "check mode" in outcome.verdict.reasons[0].summary


def test_a_check_adds_no_trial_to_the_tuning_study(tmp_path: Path) -> None:
    from pytest_autotuner.study_storage import open_storage

    storage = open_storage(f"journal:{tmp_path}/study.journal")
    tuned = run_task(SPEC, TaskOptions(seed=1, storage=storage, update_baseline=True), Server(), None)
    assert tuned.new_baseline is not None
    run_task(SPEC, TaskOptions(seed=1, storage=storage, check=True), Server(), tuned.new_baseline)
    again = run_task(SPEC, TaskOptions(seed=1, storage=storage, report_only=True), Server(), None)
    assert len(again.trials) == len(tuned.trials) == 3


def test_outputs_say_check_so_nobody_reads_it_as_a_tuning_result() -> None:
    outcome = check(recorded_baseline(), Server())
    lines = summary_lines(report_view(outcome), None)
    assert "check: 3 runs of the baseline's configuration, no search" in lines[0]
    assert any(line.startswith("  checked: ") and "not a tuning result" in line for line in lines)
    assert not any("found by trial" in line for line in lines)
    assert results_summary(outcome)["mode"] == "check"


def test_a_tuning_run_says_tune() -> None:
    outcome = run_task(SPEC, TaskOptions(seed=1), Server(), None)
    assert outcome.mode == "tune"
    assert results_summary(outcome)["mode"] == "tune"
    assert "3 trials" in summary_lines(report_view(outcome), None)[0]


def test_the_launch_count_does_not_depend_on_the_budget() -> None:
    baseline = recorded_baseline()
    big = SPEC.model_copy(update={"optimization": SPEC.optimization.model_copy(update={"max_iterations": 100})})
    server = Server()
    run_task(big, TaskOptions(seed=1, check=True), server, baseline)
    assert server.launched == [baseline.best_params] * 3


def test_check_runs_print_as_confirmation_runs_without_a_trial_number() -> None:
    events: list[TrialEvent] = []
    run_task(SPEC, TaskOptions(seed=1, check=True, on_trial=events.append), Server(), recorded_baseline())
    lines = [progress_line(e, SPEC.optimization.objective) for e in events]
    assert [line.split(" chunked")[0] for line in lines] == ["  confirm [1/3]", "  confirm [2/3]", "  confirm [3/3]"]
