"""An item whose every server hangs never passes: through the plugin, over objectives, loops and modes.

Each case runs pytest --autotune on one spec whose simulator hangs after ``n`` requests (every launch: search
trials and confirmation runs alike) and reads the verdict from the exit status and results.json. The matrix
covers the closed and the open loop, the goodput ladder, several objectives (one with a latency SLO, one
without any SLO, a Pareto pair), confirmation runs, and check mode against a baseline recorded on a healthy
server. ``test_hung_servers.py`` covers the measurement itself over n, concurrency and speed-up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def spec(name: str, hang_after: int | None, *, speedup: float = 10.0, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "task_name": name,
        "model": {"id_or_path": "meta-llama/Llama-3.2-1B-Instruct"},
        "runtime": "sim",
        "parameters": {"chunked-prefill-size": [1024, 2048]},
        "optimization": {
            "strategy": "grid",
            "objective": "maximize_throughput",
            "max_iterations": 2,
            "confirm_runs": 1,
            "timeout_per_iteration": 120,
        },
        "benchmark": {
            "traffic_scenarios": ["D(64,16)"],
            "num_concurrency": [4],
            "max_time_per_iteration": 8,
            "max_requests_per_iteration": 8,
            "warmup_requests": 0,
        },
        "simulator": {
            "speedup": speedup,
            "startup_scale": 0.01,
            "noise": 0,
            "extra_args": ["--sim-hang-after", str(hang_after)] if hang_after else [],
        },
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            merged = {**data[section], **values}
            data[section] = {k: v for k, v in merged.items() if v is not None}  # None removes a field
        else:
            data[section] = values
    return data


def run(tmp_path: Path, data: dict[str, Any], *args: str) -> tuple[int, dict[str, Any], str]:
    folder = tmp_path / "tuning_specs"
    folder.mkdir(exist_ok=True)
    (folder / "item.json").write_text(json.dumps(data))
    cmd = [sys.executable, "-m", "pytest", "--autotune", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), *args]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    results = json.loads((tmp_path / "reports" / data["task_name"] / "results.json").read_text())
    return proc.returncode, results, output


CASES: dict[str, dict[str, Any]] = {
    "closed-loop-ttft-slo": {"slo": {"ttft": {"p90": {"threshold": 1.0}}}},
    "closed-loop-no-slo": {},
    "closed-loop-speedup-1": {"slo": {"latency": {"p99": {"threshold": 5.0}}}, "speedup": 1.0},
    "open-loop": {"benchmark": {"num_concurrency": None, "request_rates": [8.0]}, "slo": {"ttft": {"threshold": 1.0}}},
    "minimize-latency-two-cells": {
        "optimization": {"objective": "minimize_latency"},
        "benchmark": {"num_concurrency": [1, 16], "max_requests_per_iteration": 24},
    },
    "goodput-ladder": {
        "optimization": {"objective": "maximize_goodput"},
        "benchmark": {
            "num_concurrency": None,
            "capacity": {"load": "rate", "min": 1, "max": 32, "max_steps": 3, "step_seconds": 4},
        },
        "slo": {"ttft": {"p99": {"threshold": 1.0}}},
    },
    "pareto-two-objectives": {
        "optimization": {"objective": "maximize_throughput", "objectives": ["maximize_throughput", "minimize_tpot"]},
        "slo": {"tpot": {"threshold": 0.2}},
    },
}


@pytest.mark.parametrize("hang_after", [1, 6])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_an_item_whose_every_server_hangs_never_passes(tmp_path: Path, case: str, hang_after: int) -> None:
    overrides = dict(CASES[case])
    speedup = overrides.pop("speedup", 10.0)
    rc, results, output = run(tmp_path, spec(f"hung-{case}", hang_after, speedup=speedup, **overrides))
    assert rc == 1, output[-3000:]
    assert results["verdict"]["passed"] is False and results["verdict"]["status"] == "FAIL"
    assert f"hung-{case}: FAIL" in output
    assert "Traceback" not in output


def test_check_mode_fails_when_the_baselines_configuration_now_hangs(tmp_path: Path) -> None:
    healthy = spec("hung-check", None, slo={"ttft": {"p90": {"threshold": 1.0}}})
    rc, results, output = run(tmp_path, healthy, "--autotune-update-baseline")
    assert rc == 0 and results["verdict"]["passed"], output[-3000:]
    hung = {**healthy, "simulator": {**healthy["simulator"], "extra_args": ["--sim-hang-after", "3"]}}
    rc, results, output = run(tmp_path, hung, "--autotune-check")
    assert rc == 1, output[-3000:]
    assert results["mode"] == "check" and results["verdict"]["passed"] is False
