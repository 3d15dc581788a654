"""Ctrl-C and SIGTERM at any point of a tuning run on the simulator are an interruption, never a failed configuration.

Each case starts pytest on a small sim spec, waits for a progress line (the preflight's, a finished search
trial's, a finished confirmation run's), then sends SIGINT or SIGTERM after a delay drawn from a seeded list, so
the signal lands in a launch, a warm-up, a cell, between cells, a client child's result hand-off or a ladder step
of ``maximize_goodput``. Then: no configuration is reported FAILED (an interruption leaking out of a trial as
``FAILED unknown (KeyError: 'result')`` was the bug), the run says it was interrupted, every trial the journal
finished is a measurement (the ones cut off are closed as ``interrupted``), and no process of the run is left.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from processes import interruptible
from test_fault_matrix import run_tree, settle

pytestmark = pytest.mark.slow

# seconds after the line; below a trial's length (about a second), so every signal lands before the run ends
_DELAYS = random.Random(28).sample([0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], 6)


def interrupt_spec(name: str, **optimization: Any) -> dict[str, Any]:
    """Two configurations, two cells each, four confirmation runs: about a second per trial at speedup 8."""
    return {
        "task_name": name,
        "model": {"id_or_path": "meta-llama/Llama-3.2-1B-Instruct"},
        "runtime": "sim",
        "parameters": {"chunked-prefill-size": [512, 2048]},
        "optimization": {
            "strategy": "grid",
            "max_iterations": 2,
            "timeout_per_iteration": 60,
            "confirm_runs": 4,
            "remeasure_best": False,
            **optimization,
        },
        "benchmark": {
            "traffic_scenarios": ["D(64,32)"],
            "num_concurrency": [4, 2],
            "max_time_per_iteration": 8,
            "max_requests_per_iteration": 12,
            "warmup_requests": 2,
        },
        "simulator": {"speedup": 8, "startup_scale": 0.05},
    }


def goodput_spec(name: str) -> dict[str, Any]:
    spec = interrupt_spec(name, objective="maximize_goodput", confirm_runs=1)
    spec["parameters"] = {"max-running-requests": [2, 64]}
    spec["benchmark"] = {
        "traffic_scenarios": ["D(256,64)"],
        "max_time_per_iteration": 6,
        "warmup_requests": 1,
        "capacity": {"min": 1, "max": 64, "max_steps": 4, "step_seconds": 2},
    }
    spec["slo"] = {"ttft": {"p99": {"threshold": 0.2}}}
    return spec


# (case, spec, extra pytest options, the progress line after which the signal is sent, delays)
CASES: list[tuple[str, dict[str, Any], list[str], str, list[float]]] = [
    ("launch", interrupt_spec("launch"), [], r"flags checked against", _DELAYS[:1]),
    ("search", interrupt_spec("search"), [], r"trial #0 \[1/2\]", _DELAYS[1:2]),
    ("confirm", interrupt_spec("confirm"), [], r"confirm #\d \[1/4\]", _DELAYS[2:4]),
    ("client-child", interrupt_spec("client-child"), ["--autotune-workers", "2"], r"flags checked", _DELAYS[4:5]),
    ("ladder", goodput_spec("ladder"), [], r"flags checked against", _DELAYS[5:6]),
]
PARAMS = [
    pytest.param(spec, options, after, delay, signum, id=f"{case}-{signum.name}-{delay:g}s")
    for case, spec, options, after, delays in CASES
    for delay in delays
    for signum in (signal.SIGINT, signal.SIGTERM)
]


@pytest.mark.parametrize(("spec", "options", "after", "delay", "signum"), PARAMS)
def test_a_signal_anywhere_in_a_run_is_an_interruption_not_a_failed_configuration(
    tmp_path: Path, spec: dict[str, Any], options: list[str], after: str, delay: float, signum: signal.Signals
) -> None:
    cmd, env, marker = run_tree(tmp_path, spec)
    proc = subprocess.Popen(
        [*cmd, *options], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        preexec_fn=interruptible,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if re.search(after, line):
                break
        time.sleep(delay)
        proc.send_signal(signum)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    output = "".join(seen) + rest
    assert re.search(after, output), output[-4000:]  # the signal was sent where the case says
    assert "FAILED" not in output and "KeyError" not in output, output[-4000:]
    assert "KeyboardInterrupt" in output or "Interrupted" in output, output[-4000:]
    assert proc.returncode != 0
    finished = [line for line in output.splitlines() if re.match(r"\s+trial #\d+ \[", line)]
    assert finished_trials(tmp_path / "reports" / spec["task_name"] / "study.journal") >= len(finished), output
    assert settle(marker) == []


def finished_trials(journal: Path) -> int:
    """Trials the journal holds as measured; it fails on a trial closed for any reason but a measurement or an
    interruption."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not journal.exists():
        return 0  # signalled before the study was opened
    storage = JournalStorage(JournalFileBackend(str(journal)))
    measured = 0
    for study in storage.get_all_studies():
        for trial in storage.get_all_trials(study._study_id):
            attrs = trial.user_attrs
            if trial.state == optuna.trial.TrialState.RUNNING or attrs.get("interrupted"):
                continue  # cut off: a running trial is closed as interrupted when the study is next opened
            assert trial.state == optuna.trial.TrialState.COMPLETE, (trial.number, trial.state, attrs)
            assert attrs.get("failure") is None, (trial.number, json.dumps(attrs)[:2000])
            measured += 1
    return measured
