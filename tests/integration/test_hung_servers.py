"""Servers that hang, crash or stop streaming, as a family: a generated matrix over the simulator's fault flags.

Each case launches a simulator with one fault and measures one cell through the benchmark client (closed or open
loop, the capacity ladder), as a trial does. The oracle is the simulator itself: ``/sim/timeline`` says when it
hung (``hung_at``, simulated seconds). The properties:

- a server that hung is never measured as if it had not: the trial fails as ``stalled``, or its cells carry the
  unfinished requests as censored samples (and so every latency statistic counts them);
- a whole-server hang that leaves at least the stall timeout (plus a slack for the floor and the poll) before the
  cell's end fails the trial as ``stalled``, whatever the concurrency, the number of requests before it, the
  speed-up or the loop;
- a server that crashed fails the trial; a slow server that never hangs is never called stalled.

The matrix is drawn from a fixed seed over n 1..64 (requests before the fault), concurrency 1..64, speed-up 1,
10 and 100 (the simulator's default), closed and open loop, so the suite stays bounded (about 2 s a case) and
reproducible; the reported case (1B, c=4, D(64,16), hang after 5, max_time 8) is in it explicitly at each.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from processes import SimProcess

from pytest_autotuner.bench.client import run_benchmark
from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, TrialFailure
from pytest_autotuner.core.spec.capacity_limits import CapacityLimits
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.evaluate import run_ladder
from pytest_autotuner.runtimes.base import Endpoint

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow

MAX_TIME = 8.0  # server seconds per cell, as in the report
SLACK = 1.5  # server seconds: the watchdog's poll and the client's reaction, beyond the stall timeout


@dataclasses.dataclass(frozen=True)
class Case:
    fault: str  # hang-after | hang-at | crash-after | replica | stop-stream | slowdown
    n: int  # requests before the fault (hang-after, crash-after, replica); tokens (stop-stream)
    concurrency: int
    speedup: float
    loop: str = "closed"  # closed | open | ladder
    at: float = 0.0  # hang-at: simulated seconds after ready
    warmup: int = 2

    @property
    def id(self) -> str:
        where = f"t{self.at:g}" if self.fault == "hang-at" else f"n{self.n}"
        return f"{self.fault}-{where}-c{self.concurrency}-x{self.speedup:g}-{self.loop}-w{self.warmup}"

    def flags(self) -> list[str]:
        flags = ["--sim-speedup", str(self.speedup), "--sim-startup-scale", "0.02", "--sim-noise", "0"]
        if self.fault == "hang-after":
            flags += ["--sim-hang-after", str(self.n)]
        elif self.fault == "hang-at":
            flags += ["--sim-hang-at", str(self.at)]
        elif self.fault == "crash-after":
            flags += ["--sim-crash-after", str(self.n)]
        elif self.fault == "replica":
            flags += ["--dp-size", "2", "--sim-num-gpus", "2", "--sim-hang-after", str(self.n)]
            flags += ["--sim-hang-replica", str(self.n % 2)]
        elif self.fault == "stop-stream":
            flags += ["--sim-stop-stream-after", str(self.n % 16), "--sim-stop-stream-every", str(1 + self.n % 3)]
        elif self.fault == "slowdown":
            flags += ["--sim-slowdown", f"{1 + self.n / 32:g}"]
        return flags


def _cases() -> list[Case]:
    rng = random.Random(2812)
    cases = [
        Case("hang-after", 5, 4, 1.0, warmup=0),  # the reported case, at both speed-ups
        Case("hang-after", 5, 4, 10.0, warmup=0),
        Case("hang-after", 5, 4, 100.0, warmup=0),  # and at the simulator's default speed-up
        Case("hang-after", 1, 1, 10.0),
        Case("hang-after", 64, 64, 10.0),
    ]
    kinds = ["hang-after", "hang-after", "hang-at", "crash-after", "replica", "stop-stream", "slowdown"]
    for i in range(20):
        fault = kinds[i % len(kinds)]
        loop = ("closed", "open", "ladder")[i % 3] if fault in ("hang-after", "hang-at", "slowdown") else "closed"
        cases.append(
            Case(
                fault,
                n=rng.randint(1, 64),
                concurrency=rng.choice([1, 2, 3, 4, 8, 16, 32, 64]),
                speedup=rng.choice([1.0, 10.0, 100.0]),
                loop=loop,
                at=round(rng.uniform(0.0, 2.0), 2),
                warmup=rng.choice([0, 2]),
            )
        )
    return cases


CASES = _cases()


@pytest.fixture
def launched(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SimProcess]:
    case: Case = request.param
    sim = SimProcess(tmp_path, *case.flags())
    try:
        sim.wait_ready()
        yield sim
    finally:
        sim.kill()


def _plan(case: Case) -> BenchmarkPlan:
    plan = BenchmarkPlan(
        (parse_scenario("D(64,16)"),),
        (case.concurrency,) if case.loop == "closed" else (),
        request_rates=(float(case.concurrency),) if case.loop == "open" else (),
        max_requests=72,  # more than any n: the fault always comes within the measured requests
        max_time=MAX_TIME,
        warmup_requests=case.warmup,
        request_timeout=60.0,
    )
    if case.loop == "ladder":
        plan = dataclasses.replace(plan, capacity=CapacityLimits(load="rate", min=1.0, max=64.0, max_steps=3))
    return plan


def _measure(sim: SimProcess, case: Case) -> tuple[BenchResult | None, TrialFailure | None]:
    info = sim.get_json("/server_info")
    endpoint = Endpoint(sim.base, "m", time_scale=info["sim_speedup"], server_info=info)
    plan = _plan(case)
    try:
        if case.loop == "ladder":
            return run_ladder(run_benchmark, endpoint, plan, Deadline(120.0)), None
        return run_benchmark(endpoint, plan, deadline=Deadline(120.0)), None
    except TrialFailure as failure:
        return None, failure


def _measured_start(sim: SimProcess, warmup: int) -> float:
    """Simulated second the measured requests began (the first arrival after the warm-ups)."""
    rows = sorted(sim.get_json("/sim/timeline")["requests"], key=lambda r: r["arrival"])
    return float(rows[warmup]["arrival"]) if len(rows) > warmup else float(rows[-1]["arrival"]) if rows else 0.0


@pytest.mark.parametrize("launched", CASES, ids=[c.id for c in CASES], indirect=True)
def test_a_faulty_server_is_never_measured_as_a_healthy_one(
    launched: SimProcess, request: pytest.FixtureRequest
) -> None:
    case: Case = request.node.callspec.params["launched"]
    result, failure = _measure(launched, case)
    crashed = launched.proc.poll() is not None
    timeline: dict[str, Any] = {} if crashed else launched.get_json("/sim/timeline")
    hung_at = timeline.get("hung_at")
    censored = sum(c.censored for c in result.cells) if result is not None else 0
    why = failure.message if failure is not None else f"measured, {censored} censored"

    if crashed:
        assert failure is not None, f"the server crashed but the trial was measured ({why})"
        return
    if case.fault == "slowdown":
        assert failure is None, f"a slow server that never hung failed: {why}"
        return
    if hung_at is None and case.fault != "stop-stream":
        assert failure is None or failure.failure_class is not FailureClass.STALLED, f"stalled without a hang: {why}"
        return
    # It hung (the whole server, one replica, or streams): never a trial measured without its unfinished requests.
    if failure is None:
        assert censored > 0, f"hung at {hung_at} s but measured with every request finished: {why}"
        for cell in result.cells if result is not None else ():
            for metric in ("ttft", "e2e"):
                assert cell.summary(metric).censored == len(cell.censored_bounds(metric))
    else:
        assert failure.failure_class is FailureClass.STALLED, why
    if case.fault in ("hang-after", "hang-at") and case.loop != "ladder":
        plan = _plan(case)
        stall = max(plan.stall_seconds(), 0.5 * case.speedup)  # the watchdog's wall floor, in server seconds
        left = _measured_start(launched, case.warmup) + MAX_TIME - max(hung_at, _measured_start(launched, case.warmup))
        if left >= stall + SLACK:
            assert failure is not None and failure.failure_class is FailureClass.STALLED, (
                f"hung {left:.1f} s before the cell's end (stall timeout {stall:g} s), but: {why}"
            )
