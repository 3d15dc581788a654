"""One verdict per item, printed identically everywhere: a session per reason through the whole plugin, and every
output (exit status, terminal summary, results.json, the report's banner, the run index, the GitHub job summary,
JUnit) says the same PASS or FAIL for the same reason."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TASK = "verdict-task"


def spec(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "task_name": TASK,
        "model": {"id_or_path": "meta-llama/Llama-3.1-8B-Instruct"},
        "runtime": "sim",
        "parameters": {"chunked-prefill-size": [512, 2048]},
        "optimization": {"strategy": "grid", "max_iterations": 2, "timeout_per_iteration": 60, "confirm_runs": 2},
        "benchmark": {"traffic_scenarios": ["D(64,32)"], "num_concurrency": [4], "max_requests_per_iteration": 24,
                      "warmup_requests": 1},
        "slo": {"latency": {"p90": {"threshold": 10.0}}},
        "simulator": {"speedup": 2, "startup_scale": 0.01},
        "regression": {"baseline_runs": 3},
    }  # fmt: skip
    base.update(overrides)
    return base


def write(pytester: pytest.Pytester, document: dict[str, object]) -> Path:
    folder = pytester.path / "tuning_specs"
    folder.mkdir(exist_ok=True)
    path = folder / "task.json"
    path.write_text(json.dumps(document))
    return path


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> pytest.RunResult:
    summary = pytester.path / "step-summary.md"
    summary.unlink(missing_ok=True)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    return pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", "--junitxml=junit.xml", *args)


def every_output(pytester: pytest.Pytester, result: pytest.RunResult) -> dict[str, str]:
    """PASS or FAIL as each output states it."""
    root = pytester.path
    summary = next(m.group(1) for line in result.stdout.lines if (m := re.match(rf"{TASK}: (PASS|FAIL)  \(", line)))
    results = json.loads((root / "reports" / TASK / "results.json").read_text())
    page = (root / "reports" / TASK / "index.html").read_text()
    index = (root / "reports" / "index.html").read_text()
    step = (root / "step-summary.md").read_text()
    junit = ET.parse(root / "junit.xml").getroot()
    props = {p.get("name"): p.get("value") for p in junit.iter("property")}
    banner = re.search(r'<div class="verdict">(\w+)</div>', page)
    row = re.search(r'title="[^"]*">(PASS|FAIL)</span>', index)
    step_row = re.search(r":(?:white_check_mark|x): (PASS|FAIL)", step)
    return {
        "exit status": "PASS" if result.ret == 0 else "FAIL",
        "terminal summary": summary,
        "results.json": results["verdict"]["status"],
        "results.json passed": "PASS" if results["passed"] else "FAIL",
        "report banner": banner.group(1) if banner else "missing",
        "run index": row.group(1) if row else "missing",
        "job summary": step_row.group(1) if step_row else "missing",
        "job summary title": "PASS" if step.startswith("## Autotune: PASS") else "FAIL",
        "junit": props.get("autotune_verdict", "missing"),
    }


def reasons(pytester: pytest.Pytester) -> list[str]:
    results = json.loads((pytester.path / "reports" / TASK / "results.json").read_text())
    return [r["kind"] for r in results["verdict"]["reasons"]]


def assert_all(outputs: dict[str, str], status: str) -> None:
    assert set(outputs.values()) == {status}, json.dumps(outputs)


def test_a_passing_item_passes_everywhere(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    write(pytester, spec())
    result = run(pytester, monkeypatch)
    assert_all(every_output(pytester, result), "PASS")
    assert reasons(pytester) == []


def test_an_slo_miss_fails_everywhere(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    write(pytester, spec(slo={"latency": {"p90": {"threshold": 0.001}}}))
    result = run(pytester, monkeypatch)
    assert_all(every_output(pytester, result), "FAIL")
    assert reasons(pytester) == ["slo_miss"]
    result.stdout.fnmatch_lines(["*misses 1 SLO check(s)*"])


def test_nothing_measured_fails_everywhere(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    write(pytester, spec(simulator={"speedup": 2, "startup_scale": 0.01, "extra_args": ["--sim-crash-after", "0"]}))
    result = run(pytester, monkeypatch)
    assert_all(every_output(pytester, result), "FAIL")
    assert reasons(pytester) == ["no_measurement"]
    result.stdout.fnmatch_lines(["*no configuration of 'verdict-task' could be measured*"])


@pytest.fixture
def baseline(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write(pytester, spec())
    result = run(pytester, monkeypatch, "--autotune-update-baseline")
    assert_all(every_output(pytester, result), "PASS")
    result.stdout.fnmatch_lines(["*baseline written to*task.baseline.json", "*baseline: recorded from 3 runs*"])
    return path.with_name("task.baseline.json")


def test_a_baseline_40_percent_better_than_reality_fails_everywhere(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, baseline: Path
) -> None:
    document = json.loads(baseline.read_text())
    for cell in document["cells"]:
        for record in cell["runs"]:
            for metric in ("ttft", "tpot", "e2e"):
                record[metric] = [v * 0.6 for v in record[metric]]
            record["output_throughput"] /= 0.6
    baseline.write_text(json.dumps(document))
    result = run(pytester, monkeypatch)
    assert_all(every_output(pytester, result), "FAIL")
    assert reasons(pytester) == ["regression"]
    result.stdout.fnmatch_lines(["*performance regressed against the baseline*", "*REGRESSION*"])


def test_a_strict_fingerprint_mismatch_fails_everywhere(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, baseline: Path
) -> None:
    document = json.loads(baseline.read_text())
    document["fingerprint"]["gpu"] = "NVIDIA A100-SXM4-80GB"
    baseline.write_text(json.dumps(document))
    relaxed = run(pytester, monkeypatch)
    assert_all(every_output(pytester, relaxed), "PASS")  # a warning, noted in the summary
    relaxed.stdout.fnmatch_lines(["*note: baseline not compared: fingerprint differs*"])
    strict = run(pytester, monkeypatch, "--autotune-strict-baseline")
    assert_all(every_output(pytester, strict), "FAIL")
    assert reasons(pytester) == ["fingerprint_mismatch"]
