"""``pytest --autotune --autotune-check`` on the simulator: no search, the baseline's configuration gated; and the
history of three runs (``--autotune-history``) drawn as trends in the report, checked in Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from integration.cdp import headless_chromium, load_page

pytestmark = pytest.mark.slow

CONFIRM_RUNS = 2


def spec(slowdown: float | None = None) -> dict[str, object]:
    # only the slowdown differs between record and check: it is not in the fingerprint, so it cannot hide
    extra = ["--sim-slowdown", str(slowdown)] if slowdown else []
    return {
        "task_name": "checked-task",
        "model": {"id_or_path": "meta-llama/Llama-3.1-8B-Instruct"},
        "runtime": "sim",
        "parameters": {"chunked-prefill-size": [512, 2048]},
        "optimization": {"strategy": "grid", "max_iterations": 2, "timeout_per_iteration": 60,
                         "confirm_runs": CONFIRM_RUNS},
        "benchmark": {"traffic_scenarios": ["D(64,32)"], "num_concurrency": [4], "max_requests_per_iteration": 32,
                      "warmup_requests": 1},
        "slo": {"latency": {"p90": {"threshold": 10.0}}},
        "simulator": {"speedup": 2, "startup_scale": 0.01, "extra_args": extra},
        "regression": {"baseline_runs": 3},
    }  # fmt: skip


def write_spec(root: Path, slowdown: float | None = None) -> None:
    (root / "tuning_specs").mkdir(exist_ok=True)
    (root / "tuning_specs" / "checked.json").write_text(json.dumps(spec(slowdown)))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", *args)


def launches(lines: list[str]) -> tuple[int, int]:
    """(search trials, confirmation runs) from the progress lines."""
    search = sum(bool(re.match(r"\s+trial #\d+ \[", line)) for line in lines)
    confirm = sum(bool(re.match(r"\s+confirm( #-?\d+)? \[", line)) for line in lines)
    return search, confirm


@pytest.fixture
def recorded(pytester: pytest.Pytester) -> Path:
    write_spec(pytester.path)
    run(pytester, "--autotune-update-baseline").assert_outcomes(passed=1)
    path = pytester.path / "tuning_specs" / "checked.baseline.json"
    assert path.is_file()
    return path


def test_a_check_with_a_baseline_runs_no_search_trial_and_passes(pytester: pytest.Pytester, recorded: Path) -> None:
    result = run(pytester, "--autotune-check")
    result.assert_outcomes(passed=1)
    search, confirm = launches(result.stdout.lines)
    assert search == 0
    assert CONFIRM_RUNS <= confirm <= CONFIRM_RUNS + 1  # plus at most one when the gate asks for it
    result.stdout.fnmatch_lines(
        [
            "*checked-task: check mode on sim: no search; 2 run(s) of the baseline's configuration*",
            "*checked-task: PASS  (check: * of the baseline's configuration, no search, *",
            "*checked: chunked-prefill-size=* (the baseline's best configuration; not a tuning result)",
            "*baseline: no regression*",
        ]
    )
    results = json.loads((pytester.path / "reports" / "checked-task" / "results.json").read_text())
    assert results["mode"] == "check" and results["passed"] is True
    assert results["trials"]["total"] == 0


def test_a_check_of_a_slower_server_fails_with_the_regression_table(pytester: pytest.Pytester, recorded: Path) -> None:
    write_spec(pytester.path, slowdown=1.4)
    result = run(pytester, "--autotune-check")
    result.assert_outcomes(failed=1)
    assert launches(result.stdout.lines)[0] == 0
    result.stdout.fnmatch_lines(
        [
            "*performance regressed against the baseline tuning_specs/checked.baseline.json*",
            "*metric*cell*baseline*now*change*p-value*",
            "*e2e mean*D(64,32) c=4*+*%*REGRESSION*",
            "*accept the new numbers with --autotune-update-baseline*",
        ]
    )


def test_a_check_without_a_baseline_fails_with_the_command_to_record_one(pytester: pytest.Pytester) -> None:
    write_spec(pytester.path)
    result = run(pytester, "--autotune-check")
    result.assert_outcomes(failed=1)
    assert launches(result.stdout.lines) == (0, 0)
    result.stdout.fnmatch_lines(
        [
            "*check mode: 'checked-task' has no baseline to check (tuning_specs/checked.baseline.json does not exist)",
            "*pytest --autotune --autotune-update-baseline*",
        ]
    )


@pytest.mark.parametrize("other", ["--autotune-report-only", "--autotune-max-iterations=3"])
def test_check_mode_refuses_options_that_need_a_search(pytester: pytest.Pytester, other: str) -> None:
    write_spec(pytester.path)
    result = pytester.runpytest("--autotune", "--autotune-check", other)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--autotune-check and {other.split('=')[0]} conflict*"])


def test_history_without_autotune_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--autotune-history", "h")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--autotune-history only apply(ies) with --autotune*"])


# -- three runs with a history -------------------------------------------------------------------------------


def pytest_autotune(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GITHUB_SHA": "", "GITHUB_REF_NAME": "", "GITHUB_HEAD_REF": "", "GITHUB_STEP_SUMMARY": ""}
    command = [sys.executable, "-m", "pytest", "--autotune", "-p", "no:cacheprovider", "--autotune-history=history",
               *args]  # fmt: skip
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tune and record the baseline, check an unchanged server, check one 40% slower; the same history."""
    root = tmp_path_factory.mktemp("history")
    write_spec(root)
    first = pytest_autotune(root, "--autotune-update-baseline")
    assert first.returncode == 0, first.stdout[-3000:]
    second = pytest_autotune(root, "--autotune-check")
    assert second.returncode == 0, second.stdout[-3000:]
    write_spec(root, slowdown=1.4)
    third = pytest_autotune(root, "--autotune-check")
    assert third.returncode == 1, third.stdout[-3000:]
    assert "history: run recorded in" in third.stdout
    return root


def test_three_runs_leave_three_history_files_and_a_report_with_their_trends(three_runs: Path) -> None:
    files = sorted((three_runs / "history" / "checked-task").glob("*.json"))
    assert len(files) == 3
    modes = [json.loads(f.read_text())["mode"] for f in files]
    assert modes == ["tune", "check", "check"]
    page = (three_runs / "reports" / "checked-task" / "index.html").read_text()
    assert 'id="history" data-runs="3"' in page
    index = (three_runs / "reports" / "index.html").read_text()
    assert 'data-runs="3"' in index and "trend-plot" in index


def test_a_corrupt_history_file_is_skipped_with_a_warning_and_the_run_is_recorded(
    three_runs: Path, tmp_path: Path
) -> None:
    root = tmp_path / "copy"
    for part in ("tuning_specs", "history"):
        shutil.copytree(three_runs / part, root / part)
    folder = root / "history" / "checked-task"
    broken = folder / "20000101T000000Z-00000000.json"
    broken.write_text("{ not json")
    result = pytest_autotune(root, "--autotune-check")
    assert f"WARNING history file {broken} skipped: not valid JSON" in result.stdout
    assert len(list(folder.glob("*.json"))) == 5  # three, the broken one, and this run's
    page = (root / "reports" / "checked-task" / "index.html").read_text()
    assert 'data-runs="4"' in page and "history-skipped" in page


async def inspect(chromium: str, url: str, profile: Path) -> dict[str, Any]:
    async with headless_chromium(chromium, profile) as port, load_page(port, url) as loaded:
        page = loaded.page
        return {
            "errors": page.console_errors(),
            "trend": await page.evaluate(
                "[...document.querySelectorAll('#history img.trend-plot')].map(i => [i.complete, i.naturalWidth])"
            ),
            "runs": await page.evaluate("document.querySelector('#history').dataset.runs"),
            "rows": await page.evaluate(
                "[...document.querySelectorAll('#history table.last-runs tr')].slice(1)"
                ".map(r => [r.className, r.cells[0].innerText, r.cells[4].innerText, r.cells[5].innerText])"
            ),
            "mode": await page.evaluate("document.querySelector('#mode') && document.querySelector('#mode').innerText"),
        }


def test_the_report_shows_the_trends_of_three_runs_in_chromium(three_runs: Path, chromium: str, tmp_path: Path) -> None:
    page = three_runs / "reports" / "checked-task" / "index.html"
    seen = asyncio.run(asyncio.wait_for(inspect(chromium, page.as_uri(), tmp_path / "profile"), timeout=60))
    assert seen["errors"] == []
    assert seen["runs"] == "3"
    assert len(seen["trend"]) == 1 and seen["trend"][0][0] and seen["trend"][0][1] > 0  # the plot was decoded
    # newest first: the third run (a check of the slower server) is the regression
    assert [row[1:] for row in seen["rows"]] == [
        ["3", "check", "FAIL: regression"],
        ["2", "check", "PASS"],
        ["1", "tune", "PASS"],
    ]
    assert [row[0] for row in seen["rows"]] == ["regression", "", ""]
    assert seen["mode"] == "check mode: no tuning"
