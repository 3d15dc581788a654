"""The history of runs: entries from real outcomes, trends over them, the files, and the trend plot."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import factories
import pytest

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.trial import Deadline, Params
from pytest_autotuner.core.outcome.baseline import Baseline
from pytest_autotuner.core.outcome.outcome import TaskOutcome
from pytest_autotuner.core.outcome.task import TaskOptions, run_task
from pytest_autotuner.core.outcome.trends import HistoryEntry, RunInfo, fingerprint_changes, history_entry, trends
from pytest_autotuner.history import append_history, load_history, run_info
from pytest_autotuner.report import write_index, write_report
from pytest_autotuner.report.plots import trend_figure
from pytest_autotuner.report.view import report_view

SPEC = factories.spec(
    task_name="trended",
    parameters={"chunked-prefill-size": [512, 2048]},
    optimization={"strategy": "grid", "max_iterations": 2, "confirm_runs": 2},
    slo={"latency": {"p90": {"threshold": 5.0}}, "ttft": {"p90": {"threshold": 2.0}}},
    regression={"baseline_runs": 3},
)


def server(slowdown: float) -> object:
    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        return factories.result((1.0 + int(params["chunked-prefill-size"]) / 4096) * slowdown)

    return evaluate


def at(day: int) -> RunInfo:
    return RunInfo(commit=f"c{day}" * 10, branch="main", date=f"2026-11-0{day}T03:17:00.000+00:00")


@pytest.fixture(scope="module")
def three_runs() -> list[tuple[TaskOutcome, HistoryEntry]]:
    """Run 1 tunes and records the baseline, run 2 checks an unchanged server, run 3 a 40% slower one."""
    first = run_task(SPEC, TaskOptions(seed=1, update_baseline=True), server(1.0), None)  # type: ignore[arg-type]
    baseline: Baseline | None = first.new_baseline
    assert baseline is not None
    check = TaskOptions(seed=1, check=True)
    second = run_task(SPEC, check, server(1.0), baseline)  # type: ignore[arg-type]
    third = run_task(SPEC, check, server(1.4), baseline)  # type: ignore[arg-type]
    assert (first.verdict.passed, second.verdict.passed, third.verdict.passed) == (True, True, False)
    return [(o, history_entry(o, at(day))) for day, o in enumerate((first, second, third), start=1)]


def test_an_entry_keeps_where_the_run_came_from_and_what_it_decided(
    three_runs: list[tuple[TaskOutcome, HistoryEntry]],
) -> None:
    outcome, entry = three_runs[2]
    assert (entry.commit, entry.branch, entry.mode, entry.status) == ("c3" * 10, "main", "check", "FAIL")
    assert entry.regressed and entry.reasons == ["regression"]
    assert entry.gpu == outcome.fingerprint["gpu"] and len(entry.fingerprint_id) == 8
    assert entry.objective == pytest.approx(outcome.best.score.objective if outcome.best else None)
    e2e = next(p for p in entry.points if p.metric == "e2e p90")
    assert e2e.threshold == 5.0 and e2e.regressed and e2e.baseline is not None and e2e.value > e2e.baseline


def test_every_metric_has_one_point_per_run_and_the_regression_in_the_third(
    three_runs: list[tuple[TaskOutcome, HistoryEntry]],
) -> None:
    series = trends([entry for _o, entry in three_runs])
    names = [t.metric for t in series]
    assert names[0] == "objective"
    assert {"e2e p90", "ttft p90", "e2e mean"} <= set(names)  # the objective's metric and every SLO metric
    for trend in series:
        assert trend.runs == (1, 2, 3)
        assert all(v is not None for v in trend.values), trend
    objective = series[0]
    assert objective.regressed_runs == (3,)
    assert objective.baselines[0] is None  # the first run recorded the baseline, it compared nothing
    assert objective.baselines[1] == objective.baselines[2] is not None
    assert next(t for t in series if t.metric == "e2e p90").regressed_runs == (3,)


def test_trends_follow_the_date_not_the_order_given(three_runs: list[tuple[TaskOutcome, HistoryEntry]]) -> None:
    entries = [entry for _o, entry in three_runs]
    assert trends(entries[::-1]) == trends(entries)


def test_a_change_of_fingerprint_is_marked_at_the_first_run_on_the_new_one(
    three_runs: list[tuple[TaskOutcome, HistoryEntry]],
) -> None:
    entries = [entry for _o, entry in three_runs]
    assert fingerprint_changes(entries) == []
    moved = entries[2].model_copy(update={"fingerprint_id": "0123abcd"})
    assert fingerprint_changes([*entries[:2], moved]) == [3]


def test_the_trend_plot_draws_three_points_per_metric_and_marks_the_third(
    three_runs: list[tuple[TaskOutcome, HistoryEntry]],
) -> None:
    entries = [entry for _o, entry in three_runs]
    series = trends(entries)
    fig = trend_figure(series, [3])
    assert fig is not None
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(series)
    for ax, trend in zip(panels, series, strict=True):
        values = next(line for line in ax.get_lines() if line.get_gid() == "values")
        assert list(values.get_xdata()) == [1, 2, 3]
        marks = [c for c in ax.collections if c.get_gid() == "regressions"]
        if trend.regressed_runs:
            assert [float(x) for x, _y in marks[0].get_offsets()] == [3.0]
        assert any(line.get_gid() == "fingerprint-change" for line in ax.get_lines())


def test_history_files_are_one_per_run_and_read_back_equal(
    three_runs: list[tuple[TaskOutcome, HistoryEntry]], tmp_path: Path
) -> None:
    folder = tmp_path / "missing" / "history"  # created when missing
    paths = [append_history(folder, entry) for _o, entry in three_runs]
    assert len(set(paths)) == 3 and all(p.parent == folder / "trended" for p in paths)
    assert paths[0].name.startswith("20261101T031700Z-") and paths[0].suffix == ".json"
    entries, skipped = load_history(folder, "trended")
    assert skipped == []
    assert entries == [entry for _o, entry in three_runs]


def test_a_corrupt_history_file_is_skipped_with_a_warning_naming_it(
    three_runs: list[tuple[TaskOutcome, HistoryEntry]], tmp_path: Path
) -> None:
    append_history(tmp_path, three_runs[0][1])
    broken = tmp_path / "trended" / "20261102T000000Z-deadbeef.json"
    broken.write_text('{"format": 1, "task": ')
    alien = tmp_path / "trended" / "20261103T000000Z-feedface.json"
    alien.write_text(json.dumps({"format": 1, "task": "x"}))
    entries, skipped = load_history(tmp_path, "trended")
    assert entries == [three_runs[0][1]]
    assert len(skipped) == 2
    assert str(broken) in skipped[0] and "not valid JSON" in skipped[0]
    assert str(alien) in skipped[1]


def test_a_missing_history_is_empty(tmp_path: Path) -> None:
    assert load_history(tmp_path / "nowhere", "trended") == ([], [])


def test_run_info_reads_github_then_git_then_says_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = dt.datetime(2026, 11, 1, 3, 17, tzinfo=dt.timezone.utc)
    monkeypatch.setenv("GITHUB_SHA", "abc123")
    monkeypatch.setenv("GITHUB_REF_NAME", "main")
    monkeypatch.delenv("GITHUB_HEAD_REF", raising=False)
    assert run_info(tmp_path, now=now) == RunInfo("abc123", "main", "2026-11-01T03:17:00.000+00:00")
    monkeypatch.delenv("GITHUB_SHA")
    monkeypatch.delenv("GITHUB_REF_NAME")
    assert run_info(tmp_path, now=now).commit == "unknown"  # no git repository there
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q", "-b", "topic"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    info = run_info(tmp_path, now=now)
    assert (info.commit, info.branch) == (head, "topic")


def test_the_report_and_the_index_show_the_trends_and_the_last_runs(
    three_runs: list[tuple[TaskOutcome, HistoryEntry]], tmp_path: Path
) -> None:
    outcome = three_runs[2][0]
    entries = [entry for _o, entry in three_runs]
    page = write_report(report_view(outcome), tmp_path, entries).read_text()
    assert 'id="history" data-runs="3"' in page and "trend-plot" in page
    assert page.count('<tr class="regression">') == 1
    assert "check mode: no tuning" in page
    index = write_index([(report_view(outcome), None)], tmp_path, {outcome.spec.slug: entries}).read_text()
    assert 'id="history-1" data-runs="3"' in index and "trend-plot" in index
    without = write_report(report_view(outcome), tmp_path).read_text()
    assert 'id="history"' not in without
