"""Fault matrix on the simulator, through the plugin: each fault ends in its failure class, and no server is left.

Server faults (crash, hang, HTTP 500 bursts, malformed SSE, slow start, readiness timeout) run one trial each
and read the class from results.json. Runner faults (SIGINT, SIGTERM, SIGKILL of pytest) signal pytest while its
simulator is up. Every case then checks that no process carrying the case's marker (an environment variable
that pytest's children inherit) is still running: ``kill -9`` of pytest included, which only the servers' parent
death signal can clean up. Waits are bounded polls for an event, never assertions on elapsed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from processes import interruptible

pytestmark = pytest.mark.slow

MARKER = "AUTOTUNE_FAULT_MATRIX_MARKER"


def fault_spec(name: str, extra_args: list[str], **optimization: Any) -> dict[str, Any]:
    return {
        "task_name": name,
        "model": {"id_or_path": "meta-llama/Llama-3.2-1B-Instruct"},
        "runtime": "sim",
        "parameters": {"chunked-prefill-size": [2048]},
        "optimization": {
            "strategy": "grid",
            "max_iterations": 1,
            "timeout_per_iteration": 60,
            "confirm_runs": 0,
            **optimization,
        },
        "benchmark": {
            "traffic_scenarios": ["D(64,32)"],
            "num_concurrency": [4],
            "max_time_per_iteration": 8,
            "max_requests_per_iteration": 16,
            "warmup_requests": 0,
        },
        "simulator": {"speedup": 8, "startup_scale": 0.01, "extra_args": extra_args},
    }


def marked_processes(marker: str) -> list[int]:
    """Live (not zombie) processes whose environment carries ``MARKER=marker``, this one excluded."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue  # gone meanwhile, or not ours to read
        if "Z" not in state.split()[1]:
            found.append(int(entry.name))
    return found


def settle(marker: str) -> list[int]:
    """The marked processes still running after a bounded wait; they are killed, so a failure leaks nothing."""
    wait_until(lambda: not marked_processes(marker), 30)
    left = marked_processes(marker)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left


def wait_until(condition: Any, limit: float = 60.0) -> bool:
    """Poll ``condition`` until it holds or ``limit`` seconds pass (a bound for a hung run, not a measurement)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


def run_tree(tmp_path: Path, spec: dict[str, Any]) -> tuple[list[str], dict[str, str], str]:
    folder = tmp_path / "tuning_specs"
    folder.mkdir()
    (folder / "fault.json").write_text(json.dumps(spec))
    marker = uuid.uuid4().hex
    env = {**os.environ, MARKER: marker, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "pytest", "--autotune", "-p", "no:cacheprovider", "-s", "--rootdir", str(tmp_path)]
    return cmd, env, marker


SERVER_FAULTS = [
    ("crash", ["--sim-crash-after", "3"], {}, "crashed"),
    ("hang", ["--sim-hang-after", "3"], {}, "stalled"),
    ("http-500-burst", ["--sim-http-500-burst", "1000"], {}, "benchmark_errors"),
    ("malformed-sse", ["--sim-malformed-sse-every", "1"], {}, "benchmark_errors"),
    ("slow-start", ["--sim-startup-delay", "2"], {}, None),
    # through the plugin a server's readiness wait is bounded by the trial's own time limit
    ("startup-past-the-trial-limit", ["--sim-startup-delay", "60"], {"timeout_per_iteration": 3}, "trial_timeout"),
]


@pytest.mark.parametrize(
    ("case", "extra_args", "optimization", "failure"), SERVER_FAULTS, ids=[c[0] for c in SERVER_FAULTS]
)
def test_server_fault_ends_in_its_class_and_leaves_nothing_running(
    tmp_path: Path, case: str, extra_args: list[str], optimization: dict[str, Any], failure: str | None
) -> None:
    cmd, env, marker = run_tree(tmp_path, fault_spec(case, extra_args, **optimization))
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output[-4000:]
    results = json.loads((tmp_path / "reports" / case / "results.json").read_text())
    if failure is None:
        assert proc.returncode == 0, output[-4000:]
        assert results["failure_counts"] == {} and results["best"] is not None
    else:
        assert results["failure_counts"] == {failure: 1}, output[-4000:]
        assert f"FAILED {failure}" in output
    assert settle(marker) == []


def test_readiness_timeout_of_the_host_is_its_class_and_stops_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_autotuner.core.measure.trial import Deadline, FailureClass, TrialFailure
    from pytest_autotuner.core.spec.runtime_settings import SimulatorSettings
    from pytest_autotuner.runtimes.sim import SimHost

    marker = uuid.uuid4().hex
    monkeypatch.setenv(MARKER, marker)
    settings = SimulatorSettings(startup_scale=0.01, extra_args=["--sim-startup-delay", "60"])
    host = SimHost(model="meta-llama/Llama-3.2-1B-Instruct", settings=settings, seed=1, readiness_timeout=2)
    with pytest.raises(TrialFailure) as failure, host.launch({}, deadline=Deadline(120), label="readiness"):
        pass
    host.close()
    assert failure.value.failure_class == FailureClass.READINESS_TIMEOUT
    assert settle(marker) == []


RUNNER_SIGNALS = [("SIGINT", signal.SIGINT), ("SIGTERM", signal.SIGTERM), ("SIGKILL", signal.SIGKILL)]


@pytest.mark.parametrize(("name", "signum"), RUNNER_SIGNALS, ids=[s[0] for s in RUNNER_SIGNALS])
def test_signalled_runner_leaves_no_server(tmp_path: Path, name: str, signum: int) -> None:
    # a long benchmark (unscaled time, 60 s cells): the signal lands while the simulator serves it
    spec = fault_spec(f"signal-{name.lower()}", [])
    spec["simulator"] = {"speedup": 1, "startup_scale": 0.01}
    spec["benchmark"].update(max_time_per_iteration=60, max_requests_per_iteration=100_000)
    cmd, env, marker = run_tree(tmp_path, spec)
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=interruptible,  # SIGINT reaches pytest even when this suite runs in the background
    )

    def server_up() -> bool:
        return any(
            b"pytest_autotuner.sim" in Path(f"/proc/{pid}/cmdline").read_bytes()
            for pid in marked_processes(marker)
            if Path(f"/proc/{pid}/cmdline").exists()
        )

    try:
        assert wait_until(server_up, 120), "the simulator never started"
        servers = [p for p in marked_processes(marker) if p != proc.pid]
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
            settle(marker)
    assert servers
    if signum == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert "KeyboardInterrupt" in output or "Interrupted" in output, output[-4000:]
        assert "Traceback" not in output.split("KeyboardInterrupt")[0], output[-4000:]
    # the servers die with their parent, however it ended
    assert settle(marker) == []
