"""SGLang's ``--enable-metrics`` through the real client, on the simulator: the queue-time histogram read around
each measured cell gives the cell's mean queueing time, equal to the mean of the per-request timings the
simulator also stamps (the warm-ups and earlier cells left out); without the flag there is no ``/metrics``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from processes import SimProcess

from pytest_autotuner.bench.client import run_benchmark
from pytest_autotuner.core.measure.metrics import CellMetrics
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.measure.trial import Deadline
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.report.explain import cell_breakdown
from pytest_autotuner.runtimes.base import Endpoint

pytestmark = pytest.mark.slow

FLAGS = ("--sim-noise", "0", "--sim-startup-scale", "0.01", "--sim-speedup", "8", "--max-running-requests", "4")


@pytest.mark.parametrize("concurrencies", [(2, 16), (8,)])
def test_the_metrics_window_of_each_cell_matches_its_requests_queueing(
    tmp_path: Path, concurrencies: tuple[int, ...]
) -> None:
    sim = SimProcess(tmp_path, *FLAGS, "--enable-metrics")
    try:
        sim.wait_ready()
        info = sim.get_json("/server_info")
        endpoint = Endpoint(sim.base, "m", time_scale=info["sim_speedup"], server_info=info)
        plan = BenchmarkPlan((parse_scenario("D(256,32)"),), concurrencies, max_requests=24, warmup_requests=4)
        result = run_benchmark(endpoint, plan, deadline=Deadline(120.0))
    finally:
        sim.kill()
    for cell in result.cells:
        assert cell.completed == 24 and cell.server_queue is not None
        seconds, requests = cell.server_queue
        assert requests == 24  # the window holds the measured requests, not the warm-ups or the earlier cell
        stamped = [r.queue_time for r in cell.ok_records]
        assert seconds == pytest.approx(sum(q for q in stamped if q is not None), rel=1e-6, abs=1e-9)
        if cell.concurrency > 4:  # more streams than --max-running-requests: requests wait to be admitted
            assert seconds > 0
        # with the per-request stamps gone (a real SGLang server) the breakdown falls back on the histogram
        unstamped = [dataclasses.replace(r, queue_time=None) for r in cell.records]
        plain = CellMetrics(cell.scenario, cell.concurrency, cell.duration, unstamped, server_queue=cell.server_queue)
        by_request, by_metrics = cell_breakdown(cell), cell_breakdown(plain)
        assert by_request["server_timings"] == "per-request" and by_metrics["server_timings"] == "metrics"
        assert by_metrics["mean_queueing"] == pytest.approx(by_request["mean_queueing"], rel=1e-6, abs=1e-9)


def test_without_enable_metrics_there_is_no_metrics_endpoint_and_no_window(tmp_path: Path) -> None:
    sim = SimProcess(tmp_path, *FLAGS)
    try:
        sim.wait_ready()
        assert sim.status("/metrics") == 404  # as SGLang, which mounts it only with --enable-metrics
        info = sim.get_json("/server_info")
        endpoint = Endpoint(sim.base, "m", time_scale=info["sim_speedup"], server_info=info)
        plan = BenchmarkPlan((parse_scenario("D(64,8)"),), (2,), max_requests=6, warmup_requests=0)
        (cell,) = run_benchmark(endpoint, plan, deadline=Deadline(60.0)).cells
    finally:
        sim.kill()
    assert cell.server_queue is None and cell_breakdown(cell)["server_timings"] == "per-request"
