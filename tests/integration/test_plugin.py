"""The plugin end to end through pytester, on the built-in simulator (real server processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from factories import write_specs
from processes import interruptible

pytestmark = pytest.mark.slow

FAST_SIM = {"speedup": 8, "startup_scale": 0.01}


def sim_spec(name: str, **overrides: object) -> dict[str, object]:
    """A small, quick spec on the simulator: 1B model, short cells."""
    spec: dict[str, object] = {
        "task_name": name,
        "model": {"id_or_path": "meta-llama/Llama-3.2-1B-Instruct"},
        "runtime": "sim",
        "parameters": {"chunked-prefill-size": [512, 2048], "schedule-policy": ["fcfs", "lpm"]},
        "optimization": {
            "strategy": "grid",
            "max_iterations": 2,
            "timeout_per_iteration": 60,
            "confirm_runs": 1,
        },
        "benchmark": {
            "traffic_scenarios": ["D(64,32)"],
            "num_concurrency": [4],
            "max_requests_per_iteration": 12,
            "warmup_requests": 1,
        },
        "simulator": FAST_SIM,
    }
    spec.update(overrides)
    return spec


def test_each_spec_is_one_item_that_passes_when_slos_hold(pytester: pytest.Pytester) -> None:
    write_specs(pytester, quick=sim_spec("quick-task", slo={"ttft": {"p90": {"threshold": 5.0}}}))
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*quick-task: grid search on sim, 2 trials*",
        "*trial #0 [[]1/2] chunked-prefill-size=* schedule-policy=* -> minimize_latency=* SLO ok [[]*s]  <- new best",
        "*confirm #* [[]1/1]*",
        "*autotune summary*",
        "quick-task: PASS*",
        "*best: chunked-prefill-size=*",
    ])  # fmt: skip


def test_an_unreachable_slo_fails_with_the_table_and_exit_code_1(pytester: pytest.Pytester) -> None:
    write_specs(pytester, tight=sim_spec("tight-task", slo={"latency": {"p90": {"threshold": 0.001}}}))
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*the best configuration of 'tight-task' misses 1 SLO check(s) (confirmed over 1 run):",
        "*config: chunked-prefill-size=* schedule-policy=*",
        "*cell*metric*value*threshold*margin*",
        "*D(64,32) c=4*e2e p90*1.0 ms*FAIL +*%",
        "*No trial out of 2 met every SLO*",
    ])  # fmt: skip
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"optimization": {"strategy": "annealing"}},
            "*`optimization.strategy`: unknown strategy 'annealing'*",
        ),
        (
            {"optimization": {"max_iterations": 3, "n_initial_random": 3, "strategy": "bayesian"}},
            "*n_initial_random` is 3 but `max_iterations` is 3*",
        ),
        (
            {"benchmark": {"traffic_scenarios": ["D(64;32)"]}},
            "*`benchmark.traffic_scenarios.0`: 'D(64;32)' is not*",
        ),
        ({"parameters": {"tp-size": "1,2"}}, "*`parameters.tp-size`*"),
    ],
)
def test_a_malformed_spec_is_a_clean_collection_error(pytester: pytest.Pytester, change: dict, expected: str) -> None:
    write_specs(pytester, broken=sim_spec("broken", **change))
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*ERROR collecting tuning_specs/broken.json*", "*broken.json: invalid tuning spec*", expected]
    )
    assert "Traceback" not in result.stdout.str()
    assert "pydantic" not in result.stdout.str()


def test_k_selects_specs_by_task_name(pytester: pytest.Pytester) -> None:
    write_specs(pytester, one=sim_spec("alpha-task"), two=sim_spec("beta-task"))
    result = pytester.runpytest_subprocess("--autotune", "-k", "beta", "--collect-only", "-q", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["tuning_specs/two.json::beta-task", "*1/2 tests collected (1 deselected)*"])


def test_without_autotune_specs_are_not_collected(pytester: pytest.Pytester) -> None:
    write_specs(pytester, quick=sim_spec("quick-task"))
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "quick-task" not in result.stdout.str()
    lazy = subprocess.run(
        [sys.executable, "-c", "import sys, pytest_autotuner.plugin as p; "
         "print(sorted(m for m in ('optuna','pandas','matplotlib','aiohttp','docker') if m in sys.modules))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert lazy.stdout.strip() == "[]"


def test_junit_properties_carry_the_best_params(pytester: pytest.Pytester) -> None:
    write_specs(pytester, quick=sim_spec("quick-task"))
    result = pytester.runpytest_subprocess("--autotune", "--junitxml=out.xml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    xml = (pytester.path / "out.xml").read_text()
    assert 'name="autotune_best_params"' in xml
    assert 'name="autotune_objective"' in xml


def test_an_item_whose_report_cannot_be_built_keeps_its_verdict_in_every_output(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while building the report view (planted) loses the page, never the verdict: the items pass and
    fail as they would, and the JUnit properties, the terminal summary, the job summary and the run index all
    list both with their verdicts (the job summary does not say PASS over the failed one)."""
    write_specs(pytester, quick=sim_spec("quick-task"),
                tight=sim_spec("tight-task", slo={"latency": {"p90": {"threshold": 0.001}}}))  # fmt: skip
    pytester.makeconftest(
        "import pytest_autotuner.report.view as view\n"
        "def planted(outcome):\n"
        "    raise RuntimeError('planted')\n"
        "view.report_view = planted\n"
    )
    summary = pytester.path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = pytester.runpytest_subprocess("--autotune", "--junitxml=out.xml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*quick-task: WARNING the report could not be built: planted*"])
    result.stdout.fnmatch_lines(["*autotune summary*", "quick-task: PASS*"])
    result.stdout.fnmatch_lines(["*autotune summary*", "tight-task: FAIL*"])
    xml = (pytester.path / "out.xml").read_text()
    assert xml.count('name="autotune_verdict" value="PASS"') == 1 and xml.count('value="FAIL"') == 1
    job = summary.read_text()
    assert "## Autotune: FAIL (1/2 specs)" in job and "RuntimeError: planted" in job
    index = (pytester.path / "reports" / "index.html").read_text()
    assert "quick-task" in index and "tight-task" in index
    assert not (pytester.path / "reports" / "quick-task" / "index.html").exists()


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def test_killing_a_run_midway_then_rerunning_resumes(tmp_path: Path) -> None:
    spec = sim_spec(
        "resume-task",
        optimization={
            "strategy": "grid",
            "max_iterations": 4,
            "timeout_per_iteration": 60,
            "confirm_runs": 0,
        },
        # ~1.5 s startups: the kill below lands while the third server is still starting
        simulator={**FAST_SIM, "startup_scale": 0.8},
    )
    (tmp_path / "tuning_specs").mkdir()
    (tmp_path / "tuning_specs" / "resume.json").write_text(json.dumps(spec))
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "--autotune",
        "-p",
        "no:cacheprovider",
        "-s",
        "--rootdir",
        str(tmp_path),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        preexec_fn=interruptible,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "[2/4]" in line:
            break
    time.sleep(0.5)  # the third trial's server is starting
    servers = _children_of(proc.pid)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert "KeyboardInterrupt" in rest, "".join(seen) + rest
    for pid in servers:  # every simulator process was torn down
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0, again.stdout
    trial_lines = [line for line in again.stdout.splitlines() if line.strip().startswith("trial ")]
    # two trials had finished before the kill: only the remaining two run now
    assert [line.split()[2] for line in trial_lines] == ["[3/4]", "[4/4]"]


def test_early_stopping_prunes_configurations_a_hard_slo_makes_hopeless(pytester: pytest.Pytester) -> None:
    # chunked-prefill-size 64 prefills a 4096-token prompt in 64 chunks: its TTFT breaks the hard SLO in the first
    # cell, the heaviest (c=2; cells run heaviest load first), once 4096 (0.02 s) has met it
    spec = sim_spec(
        "prune-task",
        parameters={"chunked-prefill-size": [64, 4096]},
        initial_configs=[{"chunked-prefill-size": 4096}, {"chunked-prefill-size": 64}],
        slo={"ttft": {"p90": {"threshold": 0.05, "hard_fail": True, "fail_ratio": 0.3}}},
    )
    spec["optimization"] = {**spec["optimization"], "prune_margin": None}  # type: ignore[dict-item]
    spec["benchmark"] = {**spec["benchmark"], "traffic_scenarios": ["D(4096,16)"], "num_concurrency": [2, 1],  # type: ignore[dict-item]
                         "max_requests_per_iteration": 10}  # fmt: skip
    write_specs(pytester, prune=spec)
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*trial #0 [[]1/2] chunked-prefill-size=4096 -> minimize_latency=* SLO ok*<- new best",
        "*trial #1 [[]2/2] chunked-prefill-size=64 -> PRUNED (cell D(4096,16) c=2: ttft p90 +*% of 0.05 s, beyond "
        "the hard SLO's fail_ratio 0.3; trial #0 met every hard SLO)*",
        "*cost: * GPU-seconds (* of them confirming); early stopping saved * (1 trial pruned)",
    ])  # fmt: skip
    folder = pytester.path / "reports" / "prune-task"
    results = json.loads((folder / "results.json").read_text())
    assert results["failure_counts"] == {"pruned": 1}
    assert results["trials"]["pruned"] == 1 and results["trials"]["failed"] == 0
    cost = results["cost"]
    assert cost["pruned_trials"] == 1
    assert cost["gpu_seconds"] == pytest.approx(cost["search_gpu_seconds"] + cost["confirm_gpu_seconds"], abs=0.01)
    assert cost["search_gpu_seconds"] > 0 and cost["saved_gpu_seconds"] > 0
    trials_csv = (folder / "trials.csv").read_text()
    assert "pruned" in trials_csv and "gpu_seconds" in trials_csv and "precision_stop" in trials_csv
    page = (folder / "index.html").read_text()
    assert "1 pruned by early stopping" in page and 'id="cost"' in page
