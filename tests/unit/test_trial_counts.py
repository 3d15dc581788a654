"""One count of the trials for every output: results.json, the report page, the run index, the job summary and
the terminal summary all show the outcome's ``TrialCounts``, for any mix of measured, infeasible, SLO-missing,
failed, pruned, repeated and duplicate trials (the run index once counted pruned trials as failed, and the page's
"feasible" differed from results.json's)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import factories
import pytest
from factories import run_session

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, Params, TrialFailure
from pytest_autotuner.core.outcome.outcome import TaskOutcome, TrialCounts
from pytest_autotuner.core.outcome.records import TrialRecord
from pytest_autotuner.report import write_report
from pytest_autotuner.report.html import write_index
from pytest_autotuner.report.summary import github_step_summary
from pytest_autotuner.report.terminal import summary_lines
from pytest_autotuner.report.view import report_view


def oom_above_085(params: Params, deadline: Deadline) -> BenchResult:
    if float(params["mem-fraction-static"]) > 0.85:
        raise TrialFailure(FailureClass.OOM, "CUDA out of memory")
    return factories.result(factories.latency_model(params), spread=0.3)


@pytest.fixture(scope="module")
def session() -> TaskOutcome:
    spec = factories.spec(task_name="counted", slo={"latency": {"p99": {"threshold": 1.4}}},
                          optimization={"max_iterations": 10})  # fmt: skip
    return run_session(spec, oom_above_085)


def _as(kind: str, record: TrialRecord, first: int) -> TrialRecord:
    """The session's trial turned into one of the kinds an outcome holds."""
    measured = dict(failure=None, failure_message="", objective=record.objective or 1.0, value=record.objective or 1.0)
    failed = dict(failure=FailureClass.OOM.value, failure_message="CUDA out of memory", objective=None, value=1e9)
    kinds: dict[str, dict[str, object]] = {
        "meets": {**measured, "feasible": True, "meets_slos": True},
        "misses_soft": {**measured, "feasible": True, "meets_slos": False},
        "infeasible": {**measured, "feasible": False, "meets_slos": False},
        "failed": {**failed, "feasible": False, "meets_slos": False},
        "failed_marked_feasible": {**failed, "feasible": True, "meets_slos": False},  # no constraints stored
        "pruned": {**failed, "failure": FailureClass.PRUNED.value, "feasible": True, "meets_slos": False},
        "repeat": {**measured, "feasible": True, "meets_slos": True, "repeat_of": first},
    }
    return dataclasses.replace(record, **{"repeat_of": None, **kinds[kind]})  # type: ignore[arg-type]


MIXES = [
    ["meets", "misses_soft", "infeasible", "failed", "pruned", "repeat", "failed_marked_feasible"],
    ["pruned", "pruned", "meets"],
    ["failed", "failed_marked_feasible", "infeasible"],
    ["meets"] * 4 + ["repeat"] * 2,
]


@pytest.mark.parametrize("mix", MIXES, ids=lambda m: "+".join(sorted(set(m))))
@pytest.mark.parametrize("duplicates", [0, 3])
def test_every_output_gives_the_outcomes_counts(
    session: TaskOutcome, mix: list[str], duplicates: int, tmp_path: Path
) -> None:
    base = session.trials
    trials = tuple(
        dataclasses.replace(_as(kind, base[i % len(base)], base[0].number), number=i) for i, kind in enumerate(mix)
    )
    outcome = dataclasses.replace(session, trials=trials, duplicates_skipped=duplicates)
    counts = outcome.counts
    expected = TrialCounts(
        total=len(mix),
        measured=sum(k in ("meets", "misses_soft", "infeasible", "repeat") for k in mix),
        feasible=sum(k in ("meets", "misses_soft", "repeat") for k in mix),
        meets_slos=sum(k in ("meets", "repeat") for k in mix),
        failed=sum(k.startswith("failed") for k in mix),
        pruned=mix.count("pruned"),
        repeats=mix.count("repeat"),
        duplicates_skipped=duplicates,
    )
    assert counts == expected

    page = write_report(report_view(outcome), tmp_path)
    results = json.loads((page.parent / "results.json").read_text())
    assert results["trials"] == counts.as_dict()

    html = page.read_text()
    heading = re.search(r"<h2>Trials \((\d+): (\d+) feasible, (\d+) meeting every SLO, (\d+) failed", html)
    assert heading is not None
    assert tuple(map(int, heading.groups())) == (counts.total, counts.feasible, counts.meets_slos, counts.failed)
    assert (f"{counts.pruned} pruned by early stopping" in html) == bool(counts.pruned)
    kpi = re.search(r"<b>(\d+)</b><span>trials · (\d+) failed", html)
    assert kpi is not None and tuple(map(int, kpi.groups())) == (counts.total, counts.failed)

    index = write_index([(report_view(outcome), page)], tmp_path).read_text()
    cell = re.search(r'<td class="num">(\d+)(?: \((\d+) failed\))?(?: \((\d+) pruned\))?</td>', index)
    assert cell is not None
    assert [int(g or 0) for g in cell.groups()] == [counts.total, counts.failed, counts.pruned]

    summary = github_step_summary([(report_view(outcome), page)], tmp_path)
    assert f"| {counts.text}; " in summary

    first_line = summary_lines(report_view(outcome), str(page))[0]
    assert f"({counts.total} trials, " in first_line
