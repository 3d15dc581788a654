"""A server that stops answering fails its trials as `stalled` through the plugin (issue 14's repro, sped up)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def hanging_spec() -> dict[str, object]:
    """The 1B model on a simulator that stops answering after its fifth request."""
    return {
        "task_name": "hang-task",
        "model": {"id_or_path": "meta-llama/Llama-3.2-1B-Instruct"},
        "runtime": "sim",
        "parameters": {"chunked-prefill-size": [512, 2048]},
        "optimization": {
            "strategy": "grid",
            "objective": "maximize_throughput",
            "max_iterations": 2,
            "timeout_per_iteration": 60,
            "confirm_runs": 1,
        },
        "benchmark": {
            "traffic_scenarios": ["D(64,32)"],
            "num_concurrency": [8],
            "max_time_per_iteration": 8,
            "max_requests_per_iteration": 40,
            "warmup_requests": 1,
        },
        "slo": {"ttft": {"p90": {"threshold": 5.0}}},
        # 8 server seconds per cell are one wall second; the hang is the issue's --sim-hang-after 5
        "simulator": {"speedup": 8, "startup_scale": 0.01, "extra_args": ["--sim-hang-after", "5"]},
    }


def test_a_server_that_stops_answering_fails_every_trial_as_stalled(pytester: pytest.Pytester) -> None:
    folder = pytester.path / "tuning_specs"
    folder.mkdir()
    (folder / "hang.json").write_text(json.dumps(hanging_spec()))
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*trial #* [[]1/2] chunked-prefill-size=* -> FAILED stalled (cell D(64,32) c=8: *",
        "*trial #* [[]2/2] chunked-prefill-size=* -> FAILED stalled*",
        "*no configuration of 'hang-task' could be measured: all 2 trials failed*",
        # the watchdog (silence on the simulator's clock) or the count rule, whichever sees it first
        "*stalled x2: e.g. chunked-prefill-size=*: cell D(64,32) c=8: *the server*stopped answering*",
    ])  # fmt: skip
    results = json.loads((pytester.path / "reports" / "hang-task" / "results.json").read_text())
    assert results["passed"] is False and results["best"] is None
    assert results["failure_counts"] == {"stalled": 2}
    assert results["trials"]["failed"] == 2
    trials_csv = (pytester.path / "reports" / "hang-task" / "trials.csv").read_text()
    assert trials_csv.count("stalled") >= 2
    assert "Traceback" not in result.stdout.str()
