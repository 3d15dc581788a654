"""Regression baselines end to end on the simulator: record, rerun, slower, faster, other hardware."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def baseline_spec(slowdown: float | None = None) -> dict[str, object]:
    extra = ["--sim-slowdown", str(slowdown)] if slowdown else []
    return {
        "task_name": "guarded-task",
        "model": {"id_or_path": "meta-llama/Llama-3.1-8B-Instruct"},
        "runtime": "sim",
        "parameters": {"chunked-prefill-size": [512, 2048]},
        "optimization": {"strategy": "grid", "max_iterations": 2, "timeout_per_iteration": 60, "confirm_runs": 2},
        "benchmark": {
            "traffic_scenarios": ["D(64,32)"],
            "num_concurrency": [4],
            "max_requests_per_iteration": 32,
            "warmup_requests": 1,
        },
        "slo": {"latency": {"p90": {"threshold": 10.0}}},
        # the client times the simulator in wall time, so a busier or quieter machine between the recording and
        # the rerun moves every figure; 30% (with slow-downs of 2x and 0.5x below) keeps the verdicts to the
        # server's own changes
        "regression": {"tolerance": 0.3},
        # latencies of ~0.1 s wall keep the client's millisecond jitter small next to the run-to-run noise
        "simulator": {"speedup": 2, "startup_scale": 0.01, "extra_args": extra},
    }


def write_spec(pytester: pytest.Pytester, slowdown: float | None = None) -> Path:
    folder = pytester.path / "tuning_specs"
    folder.mkdir(exist_ok=True)
    path = folder / "guarded.json"
    path.write_text(json.dumps(baseline_spec(slowdown)))
    return path


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", "-W", "default", *args)


@pytest.fixture
def recorded(pytester: pytest.Pytester) -> Path:
    write_spec(pytester)
    result = run(pytester, "--autotune-update-baseline")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*3 more run(s) for the baseline", "*baseline written to*guarded.baseline.json"])
    path = pytester.path / "tuning_specs" / "guarded.baseline.json"
    document = json.loads(path.read_text())
    assert document["fingerprint"]["runtime"] == "sim"
    assert document["fingerprint"]["gpu"] == "sim-h100"
    runs = document["cells"][0]["runs"]
    assert len(runs) == 5  # regression.baseline_runs: the run is the unit of the significance test
    assert all(len(run["e2e"]) >= 20 for run in runs)
    return path


def test_without_a_baseline_the_summary_says_how_to_record_one(pytester: pytest.Pytester) -> None:
    write_spec(pytester)
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*baseline: none recorded (record one with --autotune-update-baseline)"])


def test_an_unchanged_rerun_passes(pytester: pytest.Pytester, recorded: Path) -> None:
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*baseline: no regression*"])


def test_a_slower_server_fails_with_the_regression_table(pytester: pytest.Pytester, recorded: Path) -> None:
    write_spec(pytester, slowdown=2.0)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*performance regressed against the baseline tuning_specs/guarded.baseline.json*",
            "*metric*cell*baseline*now*change*p-value*",
            "*e2e mean*D(64,32) c=4*+*%*REGRESSION*",
            "*accept the new numbers with --autotune-update-baseline*",
        ]
    )


def test_a_faster_server_passes_and_reports_the_improvement(pytester: pytest.Pytester, recorded: Path) -> None:
    write_spec(pytester, slowdown=0.5)
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*improved against*", "*improved: e2e mean D(64,32) c=4 -*%"])


def test_another_fingerprint_warns_and_skips_the_comparison(pytester: pytest.Pytester, recorded: Path) -> None:
    document = json.loads(recorded.read_text())
    document["fingerprint"]["gpu"] = "NVIDIA A100-SXM4-80GB"
    recorded.write_text(json.dumps(document))
    write_spec(pytester, slowdown=2.0)  # slower, but measured elsewhere: not comparable
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*WARNING baseline not compared: fingerprint differs*gpu: 'NVIDIA A100-SXM4-80GB'*"])
    strict = run(pytester, "--autotune-strict-baseline")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*refused under --autotune-strict-baseline*"])
