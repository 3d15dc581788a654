"""Cells as long as needed (``benchmark.precision``) and early stopping through the real client, on the simulator.

With ``--sim-noise 0`` and fixed request lengths every request of a light closed loop takes the same simulated
time, so the precision rule must stop the cell at exactly its minimum of completed requests: the tests count
requests, never wall time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import SimProcess

from pytest_autotuner.bench.child import run_benchmark_in_child
from pytest_autotuner.bench.client import run_benchmark
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, TrialFailure
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.runtimes.base import Endpoint


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    tmp = tmp_path_factory.mktemp("sim")
    server = SimProcess(tmp, "--sim-noise", "0", "--sim-startup-scale", "0.01", "--sim-speedup", "8", "--sim-seed", "1")
    server.wait_ready()
    try:
        yield server
    finally:
        server.kill()


def _endpoint(sim: SimProcess) -> Endpoint:
    info = sim.get_json("/server_info")
    return Endpoint(sim.base, "m", time_scale=info["sim_speedup"], server_info=info)


def _plan(**overrides: object) -> BenchmarkPlan:
    plan = BenchmarkPlan(
        (parse_scenario("D(64,16)"),),
        (1,),
        max_requests=200,
        max_time=600.0,
        warmup_requests=1,
        precision=0.02,
        min_requests_for_precision=12,
    )
    return dataclasses.replace(plan, **overrides)  # type: ignore[arg-type]


def test_precision_stops_a_steady_cell_at_its_minimum_of_requests(sim: SimProcess) -> None:
    (cell,) = run_benchmark(_endpoint(sim), _plan()).cells
    assert cell.precision_stop
    assert cell.completed == 12 and len(cell.records) == 12  # one stream: nothing was in flight at the stop
    assert cell.half_width is not None and cell.half_width <= 0.02
    assert sim.get_json("/sim/timeline")["late_promises"] == 0  # the promise of a 13th request was withdrawn
    data = cell.as_dict()
    assert data["precision_stop"] is True and data["half_width"] == cell.half_width
    # throughput precision (ratio of tokens to E2E) stops as early on the same steady cell
    (tput,) = run_benchmark(_endpoint(sim), _plan(precision_metric="throughput")).cells
    assert tput.precision_stop and tput.completed == 12


def test_without_precision_the_cell_runs_to_its_request_limit(sim: SimProcess) -> None:
    (cell,) = run_benchmark(_endpoint(sim), _plan(precision=None, max_requests=30)).cells
    assert not cell.precision_stop and cell.half_width is None
    assert cell.completed == 30


def test_a_precision_stop_under_load_keeps_requests_in_flight_as_incomplete(sim: SimProcess) -> None:
    # at concurrency 8 the rule waits for at least 8 completions (one per stream), then the requests still
    # running are recorded as incomplete, never dropped, and the cell is not "stalled" for them
    (cell,) = run_benchmark(_endpoint(sim), _plan(concurrencies=(8,), min_requests_for_precision=4)).cells
    assert cell.precision_stop
    assert cell.completed >= 8
    assert cell.completed < 200
    assert len(cell.records) == cell.completed + cell.incomplete
    assert all(r.incomplete for r in cell.records if not r.ok)
    assert sim.get_json("/sim/timeline")["late_promises"] == 0


def _prune_after_first(cells: object) -> str:
    return "test rule: stop after the first cell"


def test_a_child_process_client_sends_its_cells_and_the_rule_prunes_the_trial(sim: SimProcess) -> None:
    plan = dataclasses.replace(_plan(concurrencies=(1, 2), max_requests=20), cell_order="lightest_first")
    deadline = Deadline(120.0, rule=_prune_after_first)
    with pytest.raises(TrialFailure) as raised:
        run_benchmark_in_child(_endpoint(sim), plan, deadline=deadline)
    assert raised.value.failure_class is FailureClass.PRUNED
    assert len(deadline.cells) == 1 and deadline.cells[0].key.concurrency == 1  # lightest load first
    assert deadline.cells[0].precision_stop and deadline.cells[0].completed == 12
    # the same in process
    inproc = Deadline(120.0, rule=_prune_after_first)
    with pytest.raises(TrialFailure):
        run_benchmark(_endpoint(sim), plan, deadline=inproc)
    assert [c.key.concurrency for c in inproc.cells] == [1]


def test_plan_cells_run_heaviest_load_first_unless_the_spec_says_lightest(tmp_path: Path) -> None:
    plan = _plan(concurrencies=(16, 1, 4), request_rates=(8.0, 2.0))
    assert [(c, r) for _s, c, r in plan.cells()] == [(0, 8.0), (0, 2.0), (16, None), (4, None), (1, None)]
    light = dataclasses.replace(plan, cell_order="lightest_first")
    assert [(c, r) for _s, c, r in light.cells()] == [(1, None), (4, None), (16, None), (0, 2.0), (0, 8.0)]
