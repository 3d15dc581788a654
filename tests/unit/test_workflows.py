"""The GitHub workflows: valid against the workflow JSON Schema (check-jsonschema's vendored copy, offline), and
safe as a careful team writes them: no self-hosted job runs a fork's pull request (their `if:` is evaluated)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def autotune_flow() -> dict[Any, Any]:
    return yaml.safe_load((WORKFLOWS[0]).read_text())


def test_autotune_runs_on_a_gpu_runner_one_job_at_a_time_with_a_timeout() -> None:
    flow = autotune_flow()
    job = flow["jobs"]["autotune"]
    assert job["runs-on"] == ["self-hosted", "linux", "gpu"]
    assert job["timeout-minutes"] == "${{ github.event_name == 'pull_request' && 60 || 480 }}"
    assert flow["concurrency"]["group"].startswith("autotune-${{ github.ref }}")
    assert job["concurrency"] == {"group": "autotune-gpu", "cancel-in-progress": False}
    triggers = flow[True]  # YAML 1.1 reads the key `on` as True
    assert {"pull_request", "schedule", "workflow_dispatch"} <= set(triggers)
    steps = " ".join(str(s) for s in job["steps"])
    assert "upload-artifact" in steps and "junit" in steps and "pytest --autotune" in steps


# -- a small evaluator of the GitHub expressions the workflows' `if:` use -------------------------------------

_TOKEN = re.compile(r"\s*(\|\||&&|==|!=|!|\(|\)|,|'[^']*'|[A-Za-z_][A-Za-z0-9_.*-]*)")


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    """``expression`` (without ``${{ }}``) in ``context``: literals, context paths, !, ==, !=, &&, ||, parentheses,
    contains() and the status functions (true: the job before succeeded)."""
    tokens: list[str] = []
    rest = expression.strip()
    while rest:
        match = _TOKEN.match(rest)
        assert match, f"not understood: {rest!r} in {expression!r}"
        tokens.append(match.group(1))
        rest = rest[match.end() :].lstrip()
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def primary() -> Any:
        token = take()
        if token == "(":
            value = disjunction()
            assert take() == ")"
            return value
        if token == "!":
            return not primary()
        if token.startswith("'"):
            return token[1:-1]
        if token in ("true", "false"):
            return token == "true"
        if peek() == "(":
            take()
            args = []
            while peek() != ")":
                args.append(disjunction())
                if peek() == ",":
                    take()
            take()
            if token == "contains":
                return args[1] in args[0]
            assert token in ("always", "success", "failure", "cancelled"), token
            return token in ("always", "success")
        value: Any = context
        for part in token.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def comparison() -> Any:
        left = primary()
        while peek() in ("==", "!="):
            op, right = take(), primary()
            left = (left == right) if op == "==" else (left != right)
        return left

    def conjunction() -> Any:
        left = comparison()
        while peek() == "&&":
            take()
            right = comparison()
            left = left and right
        return left

    def disjunction() -> Any:
        left = conjunction()
        while peek() == "||":
            take()
            right = conjunction()
            left = left or right
        return left

    value = disjunction()
    assert position == len(tokens), f"not understood: {expression!r}"
    return value


def event(name: str, head_repo: str | None = None) -> dict[str, Any]:
    github: dict[str, Any] = {"event_name": name, "repository": "acme/serving", "event": {}}
    if head_repo is not None:
        github["event"] = {"pull_request": {"head": {"repo": {"full_name": head_repo}}, "labels": []}}
    return {"github": github, "needs": {"autotune": {"result": "success"}}, "inputs": {}}


def runs(job: dict[str, Any], context: dict[str, Any]) -> bool:
    condition = str(job.get("if", "true")).strip()
    condition = condition.removeprefix("${{").removesuffix("}}")
    return bool(evaluate(condition, context))


def self_hosted(job: dict[str, Any]) -> bool:
    labels = job.get("runs-on")
    return "self-hosted" in (labels if isinstance(labels, list) else [labels])


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_no_self_hosted_job_runs_for_a_pull_request_from_a_fork(workflow: Path) -> None:
    flow = yaml.safe_load(workflow.read_text())
    assert "pull_request_target" not in flow[True], "pull_request_target runs fork code with this repo's secrets"
    fork = event("pull_request", head_repo="mallory/serving")
    for name, job in flow["jobs"].items():
        if self_hosted(job):
            assert not runs(job, fork), f"{workflow.name}: job {name} would run a fork's code on a self-hosted runner"


def test_the_gpu_job_runs_for_branches_of_this_repository_nightly_and_by_hand() -> None:
    job = autotune_flow()["jobs"]["autotune"]
    for context in (event("pull_request", head_repo="acme/serving"), event("schedule"), event("workflow_dispatch")):
        assert runs(job, context), context["github"]["event_name"]


def test_the_evaluator_reads_the_guard_as_github_does() -> None:
    guard = "github.event_name != 'pull_request' || github.event.pull_request.head.repo.full_name == github.repository"
    assert evaluate(guard, event("pull_request", "acme/serving")) is True
    assert evaluate(guard, event("pull_request", "mallory/serving")) is False
    assert evaluate(guard, event("schedule")) is True
    assert evaluate("always() && !(github.event_name == 'pull_request')", event("pull_request", "x/y")) is False


def test_pull_requests_check_and_the_other_events_tune_with_a_history() -> None:
    flow = autotune_flow()
    steps = {s.get("name"): s for s in flow["jobs"]["autotune"]["steps"]}
    check = steps["Check the baselines (pull request)"]
    assert "--autotune-check" in check["run"] and "pull_request" in check["if"]
    tune = steps["Tune and assert SLOs and baselines"]
    assert "--autotune-history=autotune-history" in tune["run"] and "--autotune-check" not in tune["run"]
    publish = flow["jobs"]["publish-history"]
    assert publish["runs-on"] == "ubuntu-latest" and publish["permissions"] == {"contents": "write"}
    assert not runs(publish, event("pull_request", "acme/serving"))
    assert runs(publish, event("schedule"))
    assert flow["jobs"]["autotune"]["permissions"]["contents"] == "read"  # the GPU job never holds a write token


def test_the_gpu_job_installs_into_a_virtual_environment_and_checks_the_gpus_before_timing() -> None:
    steps = autotune_flow()["jobs"]["autotune"]["steps"]
    names = [s.get("name", s.get("uses", "")) for s in steps]
    install = next(s for s in steps if s.get("name", "").startswith("Install"))
    assert "python3 -m venv .venv" in install["run"] and "pip install" in install["run"]
    assert not any("pip install" in s.get("run", "") for s in steps if s is not install)
    preflight = next(s for s in steps if s.get("name", "").startswith("Preflight"))
    for command in ("nvidia-smi", "docker info", "docker pull", "docker run --rm --gpus all"):
        assert command in preflight["run"], command
    first_timed = min(i for i, s in enumerate(steps) if "pytest --autotune" in s.get("run", ""))
    assert names.index(preflight["name"]) < first_timed
