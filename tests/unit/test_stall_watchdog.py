"""The stall watchdog (``bench/limits.stall_watch``) judges silence only while requests wait on the server.

Its read of the simulator's clock is an await: the last waiting request can end during it, and a server that
answered everything is not silent, however far its clock ran while nothing waited (at speed-up 1,000 it ran
171 simulated seconds in a cell's last 0.2 wall seconds, and the cell failed as ``stalled`` with 0 requests
waiting)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_autotuner.bench.cell import ServerView
from pytest_autotuner.bench.limits import stall_watch
from pytest_autotuner.core.measure.trial import TrialFailure
from pytest_autotuner.runtimes.base import Endpoint


@dataclass
class _Plan:
    seconds: float

    def stall_seconds(self) -> float:
        return self.seconds


@dataclass
class _Cell:
    """What the watchdog reads of a cell: one live request silent for ``silent`` wall seconds, and a simulator
    clock ``clock_ahead`` simulated seconds past the last stamp; ``ends_on_read``: the request ends while the
    clock is read."""

    silent: float
    clock_ahead: float
    ends_on_read: bool
    k: float = 1000.0
    simulated: bool = True
    plan: _Plan = field(default_factory=lambda: _Plan(6.0))
    server_progress: float = 100.0
    records: list[Any] = field(default_factory=list)
    live: dict[int, Any] = field(default_factory=lambda: {0: object()})

    def silence(self, now: float) -> float:
        return self.silent if self.live else 0.0

    async def server_view(self) -> ServerView:
        await asyncio.sleep(0)
        if self.ends_on_read:  # its last write was stamped at 100; the clock ran on once nothing held it
            self.live.clear()
        return ServerView(100.0 + self.clock_ahead)

    def server_silence(self, view: ServerView) -> float:
        return max(0.0, view.now - self.server_progress)


@pytest.mark.parametrize("clock_ahead", [0.0, 5.0, 6.5, 171.4, 1e6])
@pytest.mark.parametrize("silent", [0.006, 0.2, 3.0])
@pytest.mark.parametrize("ends_on_read", [True, False])
def test_silence_is_a_stall_only_while_a_request_still_waits(
    clock_ahead: float, silent: float, ends_on_read: bool
) -> None:
    cell = _Cell(silent, clock_ahead, ends_on_read)
    watch = stall_watch(cell, "c=1", Endpoint("http://127.0.0.1:1", "m"))  # type: ignore[arg-type]
    stalled = not ends_on_read and silent * cell.k >= 6.0 and clock_ahead >= 6.0
    if stalled:
        with pytest.raises(TrialFailure, match=r"sent nothing for .* while 1 request\(s\) waited"):
            asyncio.run(watch(0.0))
    else:
        asyncio.run(watch(0.0))
    assert math.isfinite(cell.server_progress)


@dataclass
class _FrozenThenCaughtUp(_Cell):
    """A simulator that says what it last did for the cell (``ServerView.last``): ``writes`` are its answers at
    successive reads, its clock far ahead of them (a host that froze it: it is catching up, or it hung)."""

    writes: list[float] = field(default_factory=list)

    async def server_view(self) -> ServerView:
        await asyncio.sleep(0)
        last = self.writes.pop(0) if len(self.writes) > 1 else self.writes[0]
        return ServerView(100.0 + self.clock_ahead, {"t.0": last}, last)


@pytest.mark.parametrize(
    ("writes", "reads", "stalled"),
    [
        ([100.0], [0.0, 0.1, 0.3], False),  # silent, but not yet for _STALL_CONFIRM wall seconds
        ([100.0], [0.0, 0.3, 0.6], True),  # hung: what it did never moves
        ([100.0, 100.5, 101.0, 101.5], [0.0, 0.3, 0.6, 0.9], False),  # catching up: it writes meanwhile
        ([100.0, 100.5, 100.5, 100.5], [0.0, 0.3, 0.6, 0.75], False),  # it wrote, then went silent at 0.3
        ([100.0, 100.5, 100.5, 100.5, 100.5], [0.0, 0.3, 0.6, 0.9, 1.2], True),  # ... and stays silent
    ],
)
def test_a_simulator_seen_silent_stalls_only_once_it_has_done_nothing_for_a_while(
    writes: list[float], reads: list[float], stalled: bool
) -> None:
    cell = _FrozenThenCaughtUp(silent=3.0, clock_ahead=1e6, ends_on_read=False, writes=writes)
    watch = stall_watch(cell, "c=1", Endpoint("http://127.0.0.1:1", "m"))  # type: ignore[arg-type]

    async def run() -> None:
        for now in reads:
            await watch(now)

    if stalled:
        with pytest.raises(TrialFailure, match="sent nothing for"):
            asyncio.run(run())
    else:
        asyncio.run(run())


@dataclass
class _AllWritten(_Cell):
    """A simulator that has written every request of the cell (it runs none of them): this client, reading
    behind it at a high speed-up, still waits on bytes already sent, while its clock runs on."""

    async def server_view(self) -> ServerView:
        await asyncio.sleep(0)
        return ServerView(100.0 + self.clock_ahead, {}, 100.0)


def test_a_simulator_that_wrote_everything_is_not_silent_while_this_client_reads_behind() -> None:
    cell = _AllWritten(silent=3.0, clock_ahead=1e6, ends_on_read=False)
    watch = stall_watch(cell, "c=1", Endpoint("http://127.0.0.1:1", "m"))  # type: ignore[arg-type]

    async def run() -> None:
        for now in (0.0, 1.0, 2.0, 30.0):
            await watch(now)

    asyncio.run(run())
