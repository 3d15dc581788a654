"""The simulator's clock: simulated time bounded by un-emitted steps and promised arrivals, on a fake wall clock."""

from __future__ import annotations

import asyncio

import pytest

from pytest_autotuner.sim.clock import VirtualClock
from pytest_autotuner.sim.server import parse_then


class Wall:
    """A wall clock that moves only when told to."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def clock(speedup: float = 10.0, replicas: int = 1) -> tuple[VirtualClock, Wall]:
    wall = Wall()
    c = VirtualClock(speedup=speedup, replicas=replicas, timer=wall)
    c.start()
    return c, wall


def test_time_runs_at_the_speedup_while_nothing_bounds_it() -> None:
    c, wall = clock(speedup=10.0)
    wall.t += 0.25
    assert c.now() == pytest.approx(2.5)
    assert c.wall_delay(4.0) == pytest.approx(0.15)


def test_time_stops_at_the_end_of_a_step_not_yet_emitted() -> None:
    c, wall = clock()
    c.begin_step(0, 0.5)
    wall.t += 3.0  # the driver is late by 2.95 wall seconds
    assert c.now() == 0.5
    assert c.may_emit(0.5, 0)


def test_once_a_late_step_is_out_time_catches_up_with_the_wall_clock() -> None:
    c, wall = clock()
    c.begin_step(0, 0.5)
    wall.t += 3.0
    c.emitted(0)
    assert c.now() == pytest.approx(30.0)


def test_a_promised_arrival_holds_time_until_released_then_time_resumes_from_it() -> None:
    c, wall = clock()
    c.hold("a@end", 1.0)
    wall.t += 5.0
    assert c.now() == 1.0
    assert not c.may_step(1.0, 0) and not c.may_emit(1.5, 0)
    assert c.may_emit(1.0, 0)  # the step that ends at the promised instant is out before the request comes
    c.release("a@end")
    assert c.may_step(1.0, 0)
    assert c.now() == pytest.approx(50.0)


def test_a_future_promise_does_not_hold_earlier_time() -> None:
    c, wall = clock()
    c.hold("a@start", 3.0)
    wall.t += 0.1
    assert c.now() == pytest.approx(1.0)
    assert c.may_step(0.5, 0)
    assert not c.may_step(2.0, 0)  # not yet that late on the wall clock
    c.release("a@start")
    wall.t += 1.0
    assert c.now() == pytest.approx(11.0)


def test_a_replica_waits_for_another_replicas_earlier_step() -> None:
    c, wall = clock(replicas=2)
    c.begin_step(1, 0.2)
    wall.t += 1.0
    assert not c.may_step(0.3, 0) and not c.may_emit(0.3, 0)
    assert c.may_emit(0.2, 1)
    c.emitted(1)
    wall.t += 0.01
    assert c.may_step(0.3, 0)


def test_releasing_an_unknown_promise_changes_nothing() -> None:
    c, wall = clock()
    wall.t += 0.1
    c.release("nothing")
    assert c.now() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("end", (True, None)), ("+0.25", (False, 0.25)), ("end, +0", (True, 0.0)), ("", (False, None))],
)
def test_then_header(header: str, expected: tuple[bool, float | None]) -> None:
    assert parse_then(header) == expected


@pytest.mark.parametrize("header", ["later", "+-1", "+nan", "+x"])
def test_then_header_rejects_what_it_cannot_schedule(header: str) -> None:
    with pytest.raises(ValueError):
        parse_then(header)


def test_a_computed_step_is_known_to_the_other_replicas_and_wakes_them() -> None:
    # a replica waits for another that will begin a step earlier than its own (``SimServer._begins_before``): the
    # other's ``begin_step`` must wake it, and from then on the other's step end bounds it like any computed step
    async def scenario() -> None:
        c, wall = clock(replicas=2)
        waiting = asyncio.ensure_future(c.changed())
        await asyncio.sleep(0)
        assert not waiting.done() and not c.in_step(1)
        c.begin_step(1, 0.5)
        await asyncio.wait_for(waiting, 5.0)  # woken, not left waiting for a notify that never comes
        assert c.in_step(1)
        wall.t += 1.0
        assert not c.may_step(0.6, 0) and c.may_step(0.6, 1)  # replica 0 waits for the end replica 1 owes
        c.emitted(1)
        assert not c.in_step(1) and c.may_step(0.6, 0)

    asyncio.run(scenario())
