"""What the project's HTTP client measures agrees with the simulator's own timeline at default speed-up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from processes import SimProcess

from pytest_autotuner.bench.client import run_benchmark
from pytest_autotuner.core.plan import BenchmarkPlan
from pytest_autotuner.core.scenarios import parse_scenario
from pytest_autotuner.runtimes.base import Endpoint
from pytest_autotuner.sim import DEFAULT_SPEEDUP

if TYPE_CHECKING:
    from pathlib import Path

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
# Prompts of ~2k tokens: TTFT is tens to hundreds of simulated ms, well above the few wall ms that HTTP and
# scheduling on a busy 2-core machine add (at speed-up 1 those count one to one).
SCENARIO = "N(2048,256)/(32,8)"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SimProcess]:
    sim = SimProcess(tmp_path, "--sim-startup-scale", "0.02", model=MODEL)  # no --sim-speedup: the default
    try:
        sim.wait_ready()
        yield sim
    finally:
        sim.kill()


def _timeline(sim: SimProcess, skip: int) -> tuple[float, float]:
    """TTFT p50 and TPOT mean of the simulator's own timeline, without the first ``skip`` (warm-up) arrivals."""
    rows: list[dict[str, Any]] = sorted(sim.get_json("/sim/timeline")["requests"], key=lambda r: r["arrival"])
    rows = rows[skip:]
    ttft = [r["first_token"] - r["arrival"] for r in rows]
    tpot = [(r["finish"] - r["first_token"]) / (r["output_tokens"] - 1) for r in rows]
    return float(np.median(ttft)), float(np.mean(tpot))


@pytest.mark.parametrize(("concurrency", "requests"), [(8, 24), (64, 128)])
def test_client_ttft_and_tpot_match_the_timeline_within_5_percent(
    server: SimProcess, concurrency: int, requests: int
) -> None:
    info = server.get_json("/server_info")
    assert info["sim_speedup"] == DEFAULT_SPEEDUP
    endpoint = Endpoint(server.base, "m", time_scale=info["sim_speedup"])
    plan = BenchmarkPlan(
        (parse_scenario(SCENARIO),), (concurrency,), max_requests=requests, warmup_requests=concurrency
    )
    cell = run_benchmark(endpoint, plan).cells[0]
    assert cell.completed == requests
    sim_ttft, sim_tpot = _timeline(server, skip=concurrency)
    assert cell.summary("ttft").p50 == pytest.approx(sim_ttft, rel=0.05)
    assert cell.summary("tpot").mean == pytest.approx(sim_tpot, rel=0.05)
