"""What check mode costs next to a tuning run: launches and wall time of `pytest --autotune` on the simulator.

Copies a spec (default tuning_specs/sim-demo.json) into a temporary project and runs, as subprocesses:
  1. `pytest --autotune --autotune-update-baseline`   (the tuning run that records the baseline)
  2. `pytest --autotune --autotune-check`             (the pull-request check), ``--repeats`` times
  3. the same check with the simulator 40% slower     (`--sim-slowdown 1.4`: must fail)
and prints, for each, the verdict, search trials, confirmation runs and wall seconds. Launches are counted from the
progress lines (`trial #N [..]`, `confirm [..]`). Wall time includes Python and pytest start-up (~5 s here).

    python benchmarks/check_mode_cost.py [--spec PATH] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(project: Path, *args: str) -> tuple[str, int, int, float]:
    """(verdict, search trials, confirmation runs, wall seconds) of one pytest run in ``project``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--autotune", "--autotune-runtime=sim", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    lines = out.stdout.splitlines()
    trials = sum(bool(re.match(r"\s+trial #\d+ \[", line)) for line in lines)
    confirms = sum(bool(re.match(r"\s+confirm( #\d+)? \[", line)) for line in lines)
    verdict = next((m.group(1) for line in lines if (m := re.match(r"\S.*: (PASS|FAIL)  \(", line))), "?")
    return verdict, trials, confirms, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "tuning_specs" / "sim-demo.json")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="check-cost-") as tmp:
        project = Path(tmp)
        (project / "tuning_specs").mkdir()
        spec_path = project / "tuning_specs" / args.spec.name
        shutil.copy(args.spec, spec_path)
        rows = [("tune + record baseline", *run(project, "--autotune-update-baseline"))]
        for i in range(args.repeats):
            rows.append((f"check {i + 1}", *run(project, "--autotune-check")))
        document = json.loads(spec_path.read_text())
        document.setdefault("simulator", {})["extra_args"] = ["--sim-slowdown", "1.4"]
        spec_path.write_text(json.dumps(document))
        rows.append(("check, 40% slower", *run(project, "--autotune-check")))
    print(f"spec: {args.spec.relative_to(ROOT) if args.spec.is_relative_to(ROOT) else args.spec}")
    print(f"{'run':<24} {'verdict':<8} {'search trials':>13} {'confirm runs':>12} {'wall s':>8}")
    for name, verdict, trials, confirms, wall in rows:
        print(f"{name:<24} {verdict:<8} {trials:>13} {confirms:>12} {wall:>8.1f}")


if __name__ == "__main__":
    main()
