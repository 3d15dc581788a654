"""write_report: the files of a session's report folder and what they say."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import factories
import pandas as pd
import pytest
from factories import run_session

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.plan import CellKey
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, Params, TrialFailure
from pytest_autotuner.core.outcome.baseline import BaselineComparison, MetricChange
from pytest_autotuner.core.outcome.outcome import TaskOutcome
from pytest_autotuner.core.outcome.verdict import decide
from pytest_autotuner.core.search.space import SearchSpace
from pytest_autotuner.deploy import DEPLOY_FILES
from pytest_autotuner.report import write_report
from pytest_autotuner.report.view import report_view


def oom_above_085(params: Params, deadline: Deadline) -> BenchResult:
    if float(params["mem-fraction-static"]) > 0.85:
        raise TrialFailure(FailureClass.OOM, "CUDA out of memory", log_tail="torch.OutOfMemoryError\n")
    return factories.result(factories.latency_model(params), spread=0.3)


def always_fails(params: Params, deadline: Deadline) -> BenchResult:
    raise TrialFailure(FailureClass.LAUNCH_FAILED, "exit code 1 <b>bold</b>", log_tail="<script>alert(1)</script>")


@pytest.fixture(scope="module")
def mixed() -> TaskOutcome:
    spec = factories.spec(task_name="mixed", slo={"latency": {"p99": {"threshold": 1.4}}, "ttft": {"threshold": 0.2}},
                          optimization={"max_iterations": 16})  # fmt: skip
    return run_session(spec, oom_above_085)


@pytest.fixture(scope="module")
def all_failed() -> TaskOutcome:
    return run_session(
        factories.spec(task_name="all-failed", optimization={"max_iterations": 4, "n_initial_random": 2}), always_fails
    )


def test_writes_page_csv_json_and_deploy_files_into_the_task_folder(mixed: TaskOutcome, tmp_path: Path) -> None:
    page = write_report(report_view(mixed), tmp_path)
    assert page == tmp_path / "mixed" / "index.html"
    assert {p.name for p in page.parent.iterdir()} == {"index.html", "trials.csv", "results.json", "deploy"}
    assert sorted(p.name for p in (page.parent / "deploy").iterdir()) == sorted(DEPLOY_FILES)


def test_a_session_without_a_best_writes_no_deploy_folder(all_failed: TaskOutcome, tmp_path: Path) -> None:
    page = write_report(report_view(all_failed), tmp_path)
    assert not (page.parent / "deploy").exists()
    assert json.loads((page.parent / "results.json").read_text())["deploy"] is None


def test_leaves_the_study_journal_in_place(mixed: TaskOutcome, tmp_path: Path) -> None:
    journal = tmp_path / "mixed" / "study.journal"
    journal.parent.mkdir()
    journal.write_text("journal")
    write_report(report_view(mixed), tmp_path)
    assert journal.read_text() == "journal"


def test_csv_has_one_row_per_trial_with_params_verdicts_and_cell_metrics(mixed: TaskOutcome, tmp_path: Path) -> None:
    frame = pd.read_csv(write_report(report_view(mixed), tmp_path).parent / "trials.csv")
    assert len(frame) == len(mixed.trials)
    assert list(frame["number"]) == [t.number for t in mixed.trials]
    expected = {
        "tp-size",
        "mem-fraction-static",
        "objective",
        "value",
        "feasible",
        "meets_slos",
        "failure",
        "failure_message",
        "duration",
        "D(100,100) c=4 e2e_p99",
        "D(100,100) c=4 output_throughput",
    }
    assert expected <= set(frame)
    failed = frame[frame["failure"] == "oom"]
    assert len(failed) == mixed.failure_counts["oom"] > 0
    assert failed["objective"].isna().all()


def test_results_json_matches_the_session(mixed: TaskOutcome, tmp_path: Path) -> None:
    data = json.loads((write_report(report_view(mixed), tmp_path).parent / "results.json").read_text())
    assert mixed.best is not None
    assert data["task"] == "mixed"
    assert data["passed"] is mixed.verdict.passed
    assert data["verdict"] == mixed.verdict.as_dict()
    assert data["best"]["params"] == mixed.best.params
    assert data["best"]["confirmation_runs"] == len(mixed.best.runs) == 2
    assert math.isclose(data["best"]["objective"], mixed.best.score.objective)
    assert [c["label"] for c in data["best"]["cells"]] == ["D(100,100) c=4"]
    checks = {(c["cell"], c["slo"]): c for c in data["slo_checks"]}
    for check in mixed.slo_checks:
        row = checks[(check.cell, check.name)]
        assert (row["value"], row["threshold"], row["passed"]) == (check.value, check.threshold, check.passed)
        assert math.isclose(row["margin"], check.threshold - check.value)
    assert data["failure_counts"] == dict(mixed.failure_counts)
    assert data["trials"]["total"] == len(mixed.trials)
    assert data["baseline"] == {
        "text": "none recorded (record one with --autotune-update-baseline)",
        "comparison": None,
        "recorded": False,
    }
    env = data["environment"]
    assert (env["runtime"], env["study_name"], env["seed"], env["strategy"]) == ("sim", "unit", 1, "bayesian")
    assert env["space_fingerprint"] == SearchSpace.from_spec(mixed.spec).fingerprint()


def test_page_shows_verdict_best_config_and_every_trial(mixed: TaskOutcome, tmp_path: Path) -> None:
    html = write_report(report_view(mixed), tmp_path).read_text()
    assert f'<div class="verdict">{mixed.verdict.status}</div>' in html
    assert "none recorded" in html
    assert html.count('<tr class="') == len(mixed.trials)
    assert html.count("data:image/png;base64,") == 4
    assert "torch.OutOfMemoryError" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_failed_only_session_still_renders(all_failed: TaskOutcome, tmp_path: Path) -> None:
    assert all_failed.best is None
    page = write_report(report_view(all_failed), tmp_path)
    html = page.read_text()
    assert "FAIL" in html and "no configuration could be measured" in html
    assert "not enough trials" in html
    data = json.loads((page.parent / "results.json").read_text())
    assert data["best"] is None and data["passed"] is False
    assert data["failure_counts"] == {"launch_failed": len(all_failed.trials)}


def test_untrusted_text_is_escaped(all_failed: TaskOutcome, tmp_path: Path) -> None:
    html = write_report(report_view(all_failed), tmp_path).read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html


def test_baseline_regression_turns_the_banner_red(mixed: TaskOutcome, tmp_path: Path) -> None:
    cell = CellKey("D(100,100)", 4)
    change = MetricChange("e2e p99", cell, 1.0, 1.4, 0.4, 0.4, 0.001, 0.1, 0.999)
    comparison = BaselineComparison("tuning_specs/mixed.baseline.json", (change,))
    verdict = decide(task="mixed", trials=mixed.trials, best=mixed.best, baseline=comparison, strict_baseline=False,
                     baseline_accepted=False)  # fmt: skip
    regressed = dataclasses.replace(mixed, baseline=comparison, verdict=verdict)
    page = write_report(report_view(regressed), tmp_path)
    html = page.read_text()
    assert '<div class="verdict">FAIL</div>' in html and "performance regressed against the baseline" in html
    data = json.loads((page.parent / "results.json").read_text())
    assert data["passed"] is False and data["verdict"]["reasons"][0]["kind"] == "regression"
    assert data["baseline"]["text"] == "1 metric(s) regressed against tuning_specs/mixed.baseline.json"


def test_a_new_bests_repeat_run_is_marked_in_the_csv_and_the_page(mixed: TaskOutcome, tmp_path: Path) -> None:
    repeats = {t.number: t.repeat_of for t in mixed.trials if t.repeat_of is not None}
    assert repeats  # bayesian measures each new best again (remeasure_best)
    page = write_report(report_view(mixed), tmp_path)
    frame = pd.read_csv(page.parent / "trials.csv")
    marked = {int(n): int(r) for n, r in zip(frame["number"], frame["repeat_of"], strict=True) if r == r}
    assert marked == repeats
    html = page.read_text()
    assert all(f">repeat of {original}</span>" in html for original in repeats.values())
