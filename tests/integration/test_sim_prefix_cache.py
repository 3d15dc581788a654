"""Shared-prefix traffic through the real client against the simulator process: what its radix cache did."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import SimProcess

from pytest_autotuner.bench.client import run_benchmark
from pytest_autotuner.core.plan import BenchmarkPlan
from pytest_autotuner.core.scenarios import parse_scenario
from pytest_autotuner.runtimes.base import Endpoint

FAST = ["--sim-speedup", "20", "--sim-startup-scale", "0.02", "--sim-noise", "0"]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Any]:
    started: list[SimProcess] = []

    def start(*flags: str) -> Endpoint:
        sim = SimProcess(tmp_path, *FAST, *flags)
        started.append(sim)
        sim.wait_ready()
        return Endpoint(sim.base, "meta-llama/Llama-3.2-1B-Instruct", time_scale=20.0)

    yield start
    for sim in started:
        sim.kill()


def _plan(scenario: str, api: str = "chat") -> BenchmarkPlan:
    return BenchmarkPlan(
        scenarios=(parse_scenario(scenario),), concurrencies=(4,), max_requests=24, warmup_requests=0,
        max_time=120.0, api=api,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_requests_of_a_group_hit_the_cached_system_prompt(launch: Any, api: str) -> None:
    cell = run_benchmark(launch(), _plan("P(2,6,300,20,8)", api)).cells[0]
    assert cell.completed == 24
    cached = [r.cached_tokens for r in cell.records]
    assert all(c in (0, 300, 319) for c in cached), cached  # nothing, the system prompt, all but the last token
    # each group's system prompt is computed once (in-batch dedup aside); the 12 repeats hit the whole prompt
    assert cached.count(0) <= 4 and cell.cache_hit_rate > 0.8
    assert cell.as_dict()["cached_tokens"] == sum(c or 0 for c in cached)


def test_disable_radix_cache_reports_nothing_cached(launch: Any) -> None:
    cell = run_benchmark(launch("--disable-radix-cache"), _plan("P(2,6,300,20,8)")).cells[0]
    assert cell.completed == 24
    assert [r.cached_tokens for r in cell.records] == [0] * 24 and cell.cache_hit_rate == 0.0


def test_unique_prompts_share_nothing(launch: Any) -> None:
    cell = run_benchmark(launch(), _plan("D(300,8)")).cells[0]
    assert cell.completed == 24 and cell.cached_tokens == 0
