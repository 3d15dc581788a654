"""The calibration script's public targets hold (it exits 0 and prints a pass for each)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sim_calibration.py"


def test_calibration_targets_pass() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" pass") == 5 and "FAIL" not in proc.stdout
