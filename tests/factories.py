"""Builders of real measurement objects for tests of the core (no server involved)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from pytest_autotuner.core.measure.metrics import BenchResult, CellMetrics, RequestRecord
from pytest_autotuner.core.measure.trial import Deadline, Params
from pytest_autotuner.core.outcome.outcome import TaskOutcome
from pytest_autotuner.core.outcome.task import TaskOptions, run_task
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.threads import Threads


def cell(
    e2e: float,
    *,
    n: int = 20,
    ttft: float | None = None,
    out_tokens: int = 100,
    scenario: str = "D(100,100)",
    concurrency: int = 4,
    spread: float = 0.0,
    queue: float | None = None,
) -> CellMetrics:
    """A cell of n successful requests whose E2E latencies spread linearly around ``e2e``; with ``queue``, each
    says (as the simulator does) that that share of its TTFT was queueing before its prefill started."""
    records = []
    for i in range(n):
        latency = e2e * (1 + spread * (i / max(n - 1, 1) - 0.5))
        first = ttft if ttft is not None else latency * 0.1
        gap = (latency - first) / (out_tokens - 1)
        records.append(
            RequestRecord(
                send_time=i * 0.01, requested_input_tokens=100, requested_output_tokens=out_tokens,
                input_tokens=100, output_tokens=out_tokens, ttft=first, e2e=latency,
                chunk_times=tuple(first + j * gap for j in range(out_tokens)), chunk_tokens=(1,) * out_tokens,
                queue_time=None if queue is None else queue * first,
            )
        )  # fmt: skip
    duration = n * e2e / concurrency
    return CellMetrics(scenario, concurrency, duration, records)


def result(e2e: float, **kwargs: object) -> BenchResult:
    return BenchResult([cell(e2e, **kwargs)])  # type: ignore[arg-type]


def spec(**overrides: object) -> TaskSpec:
    """The seed's full example task, with overrides merged into its sections."""
    raw: dict[str, object] = {
        "task_name": "unit-task",
        "model": {"id_or_path": "llama-3-2-1b-instruct"},
        "parameters": {
            "tp-size": [1, 2],
            "mem-fraction-static": [0.7, 0.75, 0.8, 0.85, 0.9],
            "schedule-policy": ["lpm", "fcfs"],
            "chunked-prefill-size": [512, 1024, 2048, 4096],
        },
        "optimization": {
            "strategy": "bayesian",
            "objective": "minimize_latency",
            "max_iterations": 20,
            "seed": 1,
        },
    }
    for key, value in overrides.items():
        if key != "parameters" and isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}  # type: ignore[dict-item]
        else:
            raw[key] = value
    return TaskSpec.model_validate(raw)


def latency_model(params: Params) -> float:
    """A smooth synthetic landscape over the seed space: best at mem 0.8, fcfs, small chunks, tp 1."""
    return (
        1.0
        + abs(float(params["mem-fraction-static"]) - 0.8)
        + int(params["chunked-prefill-size"]) / 10000
        + (0.1 if params["schedule-policy"] == "lpm" else 0.0)
        + 0.05 * int(params["tp-size"])
    )


def synthetic_evaluate(calls: list[Params] | None = None) -> Callable[[Params, Deadline], BenchResult]:
    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        if calls is not None:
            calls.append(dict(params))
        return result(latency_model(params))

    return evaluate


def write_specs(pytester: pytest.Pytester, **specs: dict[str, object]) -> None:
    """Spec documents as ``tuning_specs/<stem>.json`` in a pytester folder."""
    folder = pytester.path / "tuning_specs"
    folder.mkdir(exist_ok=True)
    for stem, document in specs.items():
        (folder / f"{stem}.json").write_text(json.dumps(document))


def run_session(s: TaskSpec, evaluate: Callable[[Params, Deadline], BenchResult], **options: object) -> TaskOutcome:
    """A whole tuning item on an in-memory study (seed 1) with an injected evaluate."""
    options.setdefault("background", Threads())  # as the plugin runs it: evaluations in threads, timeouts enforced
    return run_task(s, TaskOptions(seed=1, study_name="unit", **options), evaluate, None)  # type: ignore[arg-type]
