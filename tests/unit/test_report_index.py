"""write_index, the GitHub job summary and the report's computations (Pareto front, importance, plot scale)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import factories
import pytest

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, Params, TrialFailure
from pytest_autotuner.core.outcome.outcome import TaskOutcome
from pytest_autotuner.core.outcome.task import TaskOptions, run_task
from pytest_autotuner.report import append_step_summary, github_step_summary, write_index, write_report
from pytest_autotuner.report.data import param_importances
from pytest_autotuner.report.plots import convergence_figure
from pytest_autotuner.report.series import pareto_front
from pytest_autotuner.report.view import report_view


def oom_above_085(params: Params, deadline: Deadline) -> BenchResult:
    if float(params["mem-fraction-static"]) > 0.85:
        raise TrialFailure(FailureClass.OOM, "CUDA out of memory")
    return factories.result(factories.latency_model(params))


def session(strategy: str, task: str, max_iterations: int = 12) -> TaskOutcome:
    spec = factories.spec(task_name=task, optimization={"strategy": strategy, "max_iterations": max_iterations})
    return run_task(spec, TaskOptions(seed=1, study_name=task), oom_above_085, None)


@pytest.fixture(scope="module")
def by_strategy() -> dict[str, TaskOutcome]:
    return {s: session(s, f"seed-{s}") for s in ("bayesian", "grid", "random")}


def test_index_lists_every_spec_with_verdict_and_relative_link(
    by_strategy: dict[str, TaskOutcome], tmp_path: Path
) -> None:
    entries = [(report_view(r), write_report(report_view(r), tmp_path)) for r in by_strategy.values()]
    entries.append((report_view(session("random", "unreported", 6)), None))
    html = write_index(entries, tmp_path).read_text()
    for strategy in by_strategy:
        assert f'href="seed-{strategy}/index.html"' in html
    assert "unreported" in html and "no report" in html
    assert html.count("chip ok") + html.count("chip bad") == 4


def test_index_compares_strategies_over_the_same_space(by_strategy: dict[str, TaskOutcome], tmp_path: Path) -> None:
    html = write_index([(report_view(r), None) for r in by_strategy.values()], tmp_path).read_text()
    assert "Strategy comparison" in html and "data:image/png;base64," in html


def test_index_does_not_compare_a_single_strategy(by_strategy: dict[str, TaskOutcome], tmp_path: Path) -> None:
    html = write_index([(report_view(by_strategy["grid"]), None)], tmp_path).read_text()
    assert "Strategy comparison" not in html


def test_step_summary_names_verdicts_best_configs_and_the_report(
    by_strategy: dict[str, TaskOutcome], tmp_path: Path
) -> None:
    result = by_strategy["grid"]
    text = github_step_summary([(report_view(result), tmp_path / "seed-grid" / "index.html")], tmp_path)
    assert result.best is not None
    assert "seed-grid" in text and "minimize_latency" in text
    assert f"mem-fraction-static={result.best.params['mem-fraction-static']}" in text
    assert str(tmp_path / "index.html") in text
    assert result.verdict.status in text.splitlines()[0]


def test_step_summary_escapes_table_breaking_text(by_strategy: dict[str, TaskOutcome], tmp_path: Path) -> None:
    result = by_strategy["grid"]
    hostile = dataclasses.replace(result, spec=result.spec.model_copy(update={"task_name": "a|b<i>"}))
    row = github_step_summary([(report_view(hostile), None)], tmp_path).splitlines()[4]
    assert "a\\|b&lt;i&gt;" in row and row.count(" | ") == 6


def test_step_summary_is_appended_only_under_github_actions(
    by_strategy: dict[str, TaskOutcome], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "summary.md"
    target.write_text("earlier step\n")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    append_step_summary([(report_view(by_strategy["grid"]), None)], tmp_path)
    assert target.read_text() == "earlier step\n"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(target))
    append_step_summary([(report_view(by_strategy["grid"]), None)], tmp_path)
    assert target.read_text().startswith("earlier step\n## Autotune:")


def test_pareto_front_keeps_only_undominated_latency_throughput_points() -> None:
    points = [(1.0, 100.0), (2.0, 300.0), (1.5, 90.0), (3.0, 250.0), (0.5, 50.0)]
    assert pareto_front(points) == [4, 0, 1]


def test_importance_needs_enough_feasible_trials(by_strategy: dict[str, TaskOutcome]) -> None:
    result = by_strategy["bayesian"]
    importances = param_importances(result)
    assert importances is not None
    assert math.isclose(sum(importances.values()), 1.0)
    few = dataclasses.replace(result, trials=result.trials[:3])
    assert param_importances(few) is None


def test_convergence_axis_ignores_failed_trials_placeholder_scores(by_strategy: dict[str, TaskOutcome]) -> None:
    result = by_strategy["random"]
    failed = [t for t in result.trials if t.failure]
    assert failed and min(t.value for t in failed) > 1e6
    _bottom, top = convergence_figure(report_view(result).series).axes[0].get_ylim()
    assert top < 10
