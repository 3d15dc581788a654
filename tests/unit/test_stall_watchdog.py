"""The stall watchdog (``bench/client._stall_watch``) judges silence only while requests wait on the server.

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

from pytest_autotuner.bench.client import _stall_watch
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

    async def sim_now(self) -> float:
        await asyncio.sleep(0)
        if self.ends_on_read:  # its last write was stamped at 100; the clock ran on once nothing held it
            self.live.clear()
        return 100.0 + self.clock_ahead

    def server_silence(self, sim_now: float) -> float:
        return max(0.0, sim_now - self.server_progress)


@pytest.mark.parametrize("clock_ahead", [0.0, 5.0, 6.5, 171.4, 1e6])
@pytest.mark.parametrize("silent", [0.006, 0.2, 3.0])
@pytest.mark.parametrize("ends_on_read", [True, False])
def test_silence_is_a_stall_only_while_a_request_still_waits(
    clock_ahead: float, silent: float, ends_on_read: bool
) -> None:
    cell = _Cell(silent, clock_ahead, ends_on_read)
    watch = _stall_watch(cell, "c=1", Endpoint("http://127.0.0.1:1", "m"))  # type: ignore[arg-type]
    stalled = not ends_on_read and silent * cell.k >= 6.0 and clock_ahead >= 6.0
    if stalled:
        with pytest.raises(TrialFailure, match=r"sent nothing for .* while 1 request\(s\) waited"):
            asyncio.run(watch(0.0))
    else:
        asyncio.run(watch(0.0))
    assert math.isfinite(cell.server_progress)
