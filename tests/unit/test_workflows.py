"""The GitHub workflows are valid against the workflow JSON Schema (check-jsonschema's vendored copy, offline)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

WORKFLOWS = sorted((Path(__file__).parents[2] / ".github" / "workflows").glob("*.yml"))


def test_both_workflows_exist() -> None:
    assert [p.name for p in WORKFLOWS] == ["autotune.yml", "ci.yml"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_schema(workflow: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-onn: ubuntu-latest\n    steps:\n      - run: echo\n")
    out = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(broken)],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0


def test_autotune_runs_on_a_gpu_runner_one_at_a_time_with_a_timeout() -> None:
    flow = yaml.safe_load((WORKFLOWS[0]).read_text())
    job = flow["jobs"]["autotune"]
    assert job["runs-on"] == ["self-hosted", "linux", "gpu"]
    assert job["timeout-minutes"] > 0
    assert flow["concurrency"]["group"].startswith("autotune-${{ github.ref }}")
    triggers = flow[True]  # YAML 1.1 reads the key `on` as True
    assert {"pull_request", "schedule", "workflow_dispatch"} <= set(triggers)
    steps = " ".join(str(s) for s in job["steps"])
    assert "upload-artifact" in steps and "junit" in steps and "pytest --autotune" in steps
