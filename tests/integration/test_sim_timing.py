"""What the project's HTTP client measures on the simulator is the simulator's own timeline, in server time.

The simulator stamps arrivals and writes with simulated time and the client promises its next arrivals, so the
figures are exact and do not depend on the speed-up or on how busy this machine is: the tests compare them
exactly (to float rounding), which a wall-clock measurement could not pass on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from processes import SimProcess

from pytest_autotuner.bench import cell as cell_module
from pytest_autotuner.bench.client import run_benchmark
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.measure.trial import FailureClass, TrialFailure
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.runtimes.base import Endpoint

if TYPE_CHECKING:
    from pathlib import Path

    from pytest_autotuner.core.measure.metrics import CellMetrics

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SCENARIO = "N(2048,256)/(32,8)"
# Float rounding only: stamps are exact floats (repr), a time is the difference of two of them.
EXACT = 1e-9


def _launch(tmp_path: Path, *flags: str) -> SimProcess:
    sim = SimProcess(tmp_path, "--sim-startup-scale", "0.02", "--sim-seed", "5", *flags, model=MODEL)
    sim.wait_ready()
    return sim


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SimProcess]:
    sim = _launch(tmp_path)  # default speed-up (1) and noise
    try:
        yield sim
    finally:
        sim.kill()


def _measure(sim: SimProcess, plan: BenchmarkPlan) -> list[CellMetrics]:
    info = sim.get_json("/server_info")
    endpoint = Endpoint(sim.base, "m", time_scale=info["sim_speedup"], server_info=info)
    return run_benchmark(endpoint, plan).cells


def _timeline(sim: SimProcess, skip: int) -> list[dict[str, Any]]:
    """The simulator's requests in arrival order, without the first ``skip`` (warm-up) arrivals."""
    data = sim.get_json("/sim/timeline")
    assert data["late_promises"] == 0
    rows: list[dict[str, Any]] = sorted(data["requests"], key=lambda r: (r["arrival"], r["rid"]))
    return rows[skip:]


@pytest.mark.parametrize(("concurrency", "requests"), [(8, 24), (64, 128)])
def test_client_ttft_and_e2e_are_the_timelines_exactly(server: SimProcess, concurrency: int, requests: int) -> None:
    plan = BenchmarkPlan(
        (parse_scenario(SCENARIO),), (concurrency,), max_requests=requests, warmup_requests=concurrency
    )
    (cell,) = _measure(server, plan)
    assert cell.completed == requests
    rows = _timeline(server, skip=concurrency)
    assert len(rows) == requests
    origin = rows[0]["arrival"]
    records = sorted(cell.records, key=lambda r: r.send_time)
    assert [r.send_time for r in records] == pytest.approx([row["arrival"] - origin for row in rows], abs=EXACT)
    ours = sorted((r.send_time, r.ttft, r.e2e) for r in records)
    theirs = sorted(
        (row["arrival"] - origin, row["first_token"] - row["arrival"], row["finish"] - row["arrival"]) for row in rows
    )
    # flat lists: pytest 9.2's approx does not compare nested sequences
    assert [v for x in ours for v in x[1:]] == pytest.approx([v for x in theirs for v in x[1:]], abs=EXACT)
    assert cell.duration == pytest.approx(max(row["finish"] for row in rows) - origin, abs=EXACT)


def _figures(cells: list[CellMetrics]) -> list[tuple[float, ...]]:
    """Every request's send time, TTFT, E2E and chunk times, cell by cell (requests sent at one instant, such
    as a closed loop's first burst, in order of these figures: the wall order of their completions varies)."""
    out: list[tuple[float, ...]] = []
    for cell in cells:
        assert cell.completed == len(cell.records)
        assert all(r.ttft is not None and r.e2e is not None for r in cell.records)
        out += sorted((r.send_time, r.ttft or 0.0, r.e2e or 0.0, *r.chunk_times) for r in cell.records)
        out.append((cell.duration,))
    return out


@pytest.mark.parametrize(
    "flags",
    [(), ("--dp-size", "2", "--sim-num-gpus", "2", "--stream-interval", "4")],
    ids=["one-replica", "two-replicas"],
)
def test_a_plan_measures_the_same_at_speedups_1_and_10(tmp_path: Path, flags: tuple[str, ...]) -> None:
    # Noise stays on (3%, seeded): the whole run is reproducible, not only its noise-free part.
    plan = BenchmarkPlan((parse_scenario(SCENARIO),), (16,), request_rates=(20.0,), max_requests=48, warmup_requests=4)
    measured = []
    for speedup in ("1", "10"):
        sim = _launch(tmp_path, "--sim-speedup", speedup, *flags)
        try:
            measured.append(_figures(_measure(sim, plan)))
        finally:
            sim.kill()
    slow, fast = measured
    assert len(slow) == len(fast) == 2 * 48 + 2
    for a, b in zip(slow, fast, strict=True):
        assert a == pytest.approx(b, abs=EXACT)


@pytest.mark.slow
def test_a_one_point_spec_confirms_the_same_objective_at_speedups_1_and_10(pytester: pytest.Pytester) -> None:
    objectives = []
    for speedup in (1, 10):
        spec = {
            "task_name": "one-point",
            "model": {"id_or_path": MODEL},
            "runtime": "sim",
            "parameters": {"chunked-prefill-size": [2048]},
            "optimization": {"strategy": "grid", "objective": "minimize_latency", "max_iterations": 1,
                             "timeout_per_iteration": 300, "confirm_runs": 2},
            "benchmark": {"traffic_scenarios": [SCENARIO], "num_concurrency": [8], "max_requests_per_iteration": 24,
                          "warmup_requests": 2, "max_time_per_iteration": 600},
            "simulator": {"speedup": speedup, "startup_scale": 0.01},
        }  # fmt: skip
        (pytester.path / "tuning_specs").mkdir(exist_ok=True)
        (pytester.path / "tuning_specs" / "one-point.json").write_text(json.dumps(spec))
        result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=1)
        outcome = json.loads((pytester.path / "reports" / "one-point" / "results.json").read_text())
        assert outcome["best"]["confirmation_runs"] == 2
        objectives.append(outcome["best"]["objective"])
    assert objectives[0] == pytest.approx(objectives[1], rel=1e-9)


def test_the_server_prefills_a_closed_loops_burst_one_request_first_as_in_process(server: SimProcess) -> None:
    # Four equal requests promised for the same instant: the idle server starts a step with the first alone and
    # prefills the other three together in the next (sim/server.py `_enter`, the rule of sim/inprocess.py).
    plan = BenchmarkPlan((parse_scenario("D(512,8)"),), (4,), max_requests=4, warmup_requests=0)
    _measure(server, plan)
    rows = _timeline(server, 0)
    assert len(rows) == 4 and len({r["arrival"] for r in rows}) == 1
    firsts = sorted(r["first_token"] for r in rows)
    assert firsts[0] < firsts[1] == firsts[2] == firsts[3]


@pytest.fixture
def narrow_server(tmp_path: Path) -> Iterator[SimProcess]:
    sim = _launch(tmp_path, "--max-running-requests", "8")  # a batch of 8: at c=64 most requests must queue
    try:
        yield sim
    finally:
        sim.kill()


@pytest.mark.parametrize(("concurrency", "requests"), [(1, 6), (64, 96)])
def test_client_queue_times_are_the_timelines_admissions(
    narrow_server: SimProcess, concurrency: int, requests: int
) -> None:
    """Every record carries the simulator's queue time (arrival to the start of its prefill, from the first
    write's ``: sim-prefill`` stamp), exactly the timeline's: none at c=1, where each request finds the server
    idle, and most requests wait under overload (c=64 on a batch of 8)."""
    plan = BenchmarkPlan(
        (parse_scenario(SCENARIO),), (concurrency,), max_requests=requests, warmup_requests=concurrency
    )
    (cell,) = _measure(narrow_server, plan)
    assert cell.completed == requests
    rows = _timeline(narrow_server, skip=concurrency)
    theirs = sorted(row["prefill_start"] - row["arrival"] for row in rows)
    ours = sorted(r.queue_time for r in cell.records if r.queue_time is not None)
    assert ours == pytest.approx(theirs, abs=EXACT)
    assert all(r.prefill_time is not None and r.prefill_time > 0 for r in cell.records)
    if concurrency == 1:
        assert max(ours) == pytest.approx(0.0, abs=EXACT)
    else:
        waited = [q for q in ours if q > 0]
        assert len(waited) > requests / 2
        mean_ttft = sum(r.ttft or 0.0 for r in cell.records) / requests
        assert sum(ours) / requests > 0.5 * mean_ttft  # queueing, not prefill, is most of the wait


@pytest.mark.parametrize("interval", [1, 3])
def test_speculative_steps_stream_several_tokens_per_chunk_and_every_token_arrives(
    tmp_path: Path, interval: int
) -> None:
    """With speculative decoding a step gives a request 1 to num_steps + 1 tokens; they reach the client in one
    chunk (or cross a --stream-interval boundary), the client counts every token, and TPOT falls with the
    accepted length (0.9 acceptance at 4 draft steps: about 3.9 tokens a step)."""
    flags = ("--sim-speedup", "20", "--sim-noise", "0", "--stream-interval", str(interval))
    spec_flags = ("--speculative-algorithm", "EAGLE3", "--speculative-num-steps", "4", "--speculative-eagle-topk",
                  "1", "--sim-spec-acceptance", "0.9")  # fmt: skip
    plan = BenchmarkPlan((parse_scenario("D(512,128)"),), (2,), max_requests=6, warmup_requests=0)
    tpot = {}
    for name, extra in (("plain", ()), ("speculative", spec_flags)):
        (tmp_path / name).mkdir()
        sim = _launch(tmp_path / name, *flags, *extra)
        try:
            (cell,) = _measure(sim, plan)
        finally:
            sim.kill()
        assert cell.completed == 6 and all(r.output_tokens == 128 for r in cell.ok_records)
        chunks = [len(r.chunk_times) for r in cell.ok_records]
        if name == "speculative":
            assert max(chunks) < 128 / interval  # several tokens a chunk
        tpot[name] = cell.summary("tpot").mean
    assert tpot["speculative"] < tpot["plain"] / 2


def _stalled_host(proc: Any, at: float, pause: float) -> threading.Thread:
    """Freeze the simulator process (SIGSTOP) ``at`` wall seconds from now for ``pause`` seconds: a host too
    busy to run it, as a loaded CI runner is now and then."""

    def freeze() -> None:
        time.sleep(at)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            time.sleep(pause)
        finally:
            os.kill(proc.pid, signal.SIGCONT)

    thread = threading.Thread(target=freeze, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def reference_figures(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[float, ...]]:
    sim = _launch(tmp_path_factory.mktemp("reference"), "--sim-speedup", "10")
    try:
        return _figures(_measure(sim, STALL_PLAN))
    finally:
        sim.kill()


# max_time 60 and the request timeout 30 server seconds: at speed-up 10,000 that is 6 and 3 wall milliseconds
STALL_PLAN = BenchmarkPlan(
    (parse_scenario(SCENARIO),), (8,), request_rates=(20.0,), max_requests=32, warmup_requests=2, max_time=60.0,
    request_timeout=30.0,
)  # fmt: skip


@pytest.mark.parametrize("speedup", ["1000", "10000"])
@pytest.mark.parametrize(("at", "pause"), [(0.0, 0.4), (0.0, 1.0), (0.02, 0.8)])
def test_a_plan_measures_the_same_at_any_speedup_while_the_host_stalls_the_simulator(
    tmp_path: Path, reference_figures: list[tuple[float, ...]], speedup: str, at: float, pause: float
) -> None:
    """The family of "the host could not keep up": the simulator frozen for up to a wall second, at the start
    or during a cell, at speed-ups where that is hours of server time. Its clock does not run while it does
    nothing, so the client's limits (the request timeout, the cell's max_time) must be judged in server time too,
    not in wall seconds divided by the speed-up: the figures are those of an unhurried run at speed-up 10.

    The simulator's own limit: it holds its clock for a promised arrival at most ``--sim-promise-patience`` (10)
    wall seconds. Should a freeze plus a client slowed by a loaded host pass that, the simulator counts a late
    promise and its timeline is no longer the unhurried one: the one case where the figures may differ (a cell
    may even end stalled), and the simulator says so (``late_promises``)."""
    sim = _launch(tmp_path, "--sim-speedup", speedup)
    failure: TrialFailure | None = None
    try:
        freezer = _stalled_host(sim.proc, at, pause)
        try:
            cells = _measure(sim, STALL_PLAN)
        except TrialFailure as failed:
            cells, failure = [], failed
        freezer.join()
        late = sim.get_json("/sim/timeline")["late_promises"]
    finally:
        sim.kill()
    if late:
        return  # the host held the client past the promise grace, and the simulator counted it
    assert failure is None, failure.message
    figures = _figures(cells)
    assert len(figures) == len(reference_figures)
    for a, b in zip(figures, reference_figures, strict=True):
        assert a == pytest.approx(b, abs=EXACT)


LAG_PLANS = {
    "closed loop": BenchmarkPlan((parse_scenario(SCENARIO),), (4,), max_requests=24, warmup_requests=0),
    "open loop": BenchmarkPlan(
        (parse_scenario(SCENARIO),), (8,), request_rates=(20.0,), max_requests=24, warmup_requests=0
    ),
}


def _blocked_client(monkeypatch: pytest.MonkeyPatch, at_index: int, seconds: float) -> list[int]:
    """Block the client's whole event loop for ``seconds`` wall seconds as it prepares request ``at_index``: a
    host too busy to run the client (two trials and two CPU burners on two cores)."""
    real_token = cell_module.Cell.token
    blocked: list[int] = []

    def token(self: Any, index: int) -> str:
        if index == at_index and not blocked:
            blocked.append(index)
            time.sleep(seconds)
        return real_token(self, index)

    monkeypatch.setattr(cell_module.Cell, "token", token)
    return blocked


@pytest.fixture(scope="module")
def unhurried_lag_figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[float, ...]]]:
    figures = {}
    for loop, plan in sorted(LAG_PLANS.items()):  # a simulator each: its noise and cache depend on what it served
        sim = _launch(tmp_path_factory.mktemp("unhurried"), "--sim-speedup", "10")
        try:
            figures[loop] = _figures(_measure(sim, plan))
        finally:
            sim.kill()
    return figures


@pytest.mark.parametrize("loop", sorted(LAG_PLANS))
@pytest.mark.parametrize(("at_index", "seconds"), [(8, 3.0), (16, 6.0)])
def test_a_client_that_falls_seconds_behind_the_simulator_measures_the_same(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    unhurried_lag_figures: dict[str, list[tuple[float, ...]]],
    loop: str,
    at_index: int,
    seconds: float,
) -> None:
    """The family of "this host fell behind the simulator": the client's event loop blocked 3 or 6 wall seconds
    early or late in a closed or an open loop, at the default speed-up (100). The simulator holds its clock for the
    arrival the client promised until it comes (within ``PROMISE_PATIENCE``), so the figures are those of an
    unhurried run at speed-up 10, exactly, and the simulator gave up on no promise."""
    sim = _launch(tmp_path, "--sim-speedup", "100")
    blocked = _blocked_client(monkeypatch, at_index, seconds)
    try:
        cells = _measure(sim, LAG_PLANS[loop])
        late = sim.get_json("/sim/timeline")["late_promises"]
    finally:
        sim.kill()
    assert blocked
    assert late == 0
    figures, reference = _figures(cells), unhurried_lag_figures[loop]
    assert len(figures) == len(reference)
    for a, b in zip(figures, reference, strict=True):
        assert a == pytest.approx(b, abs=EXACT)


@pytest.mark.parametrize("loop", sorted(LAG_PLANS))
def test_a_client_further_behind_than_the_simulator_waits_fails_the_cell_as_host_too_slow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    """The other side: a client blocked longer than the simulator holds its clock for a promised arrival (here
    ``--sim-promise-patience 1`` against a 3 s block; by default 10 s). The simulator then stamps that request on
    arrival, later than the load meant, and the figures are no longer the plan's: the client must not report them
    but fail the cell as ``host_too_slow``, naming the speed-up to lower."""
    sim = _launch(tmp_path, "--sim-speedup", "100", "--sim-promise-patience", "1")
    blocked = _blocked_client(monkeypatch, 8, 3.0)
    try:
        with pytest.raises(TrialFailure) as failed:
            _measure(sim, LAG_PLANS[loop])
    finally:
        sim.kill()
    assert blocked
    assert failed.value.failure_class is FailureClass.HOST_TOO_SLOW, failed.value.message
    assert "speed-up 100" in failed.value.message and "simulator.speedup" in failed.value.message
