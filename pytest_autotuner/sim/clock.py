"""The simulator's clock: simulated seconds that follow the wall clock, but never run past an event still owed.

A plain mapping ``sim = (wall - origin) * speedup`` lets wall-clock delays into the simulated timeline: a
benchmark client that takes 2 ms to send its next request on a busy machine delivers it 20 simulated ms late at
speed-up 10, and the simulated batch thins out. This clock is that mapping with two bounds:

- **Steps bound it.** Each replica announces the end of the step it has computed but not yet emitted
  (``begin_step``); simulated time never reads past it until the step is out (``emitted``). A request that
  arrives while its replica's driver is late is therefore stamped no later than the step boundary it really
  waits at, and joins the next step, as it would on time.
- **Promised arrivals bound it.** A client that will send a request at a known simulated time (the end of the
  request it replaces, or its next Poisson arrival) says so in advance; the server ``hold``s the clock at that
  time until the request is there (or gives up after a wall-clock grace, ``server.PROMISE_GRACE``). The step
  that follows cannot be computed before the request is in the queue, however slow the client or the host.

While bounded, the unbounded clock goes on; once the bound lifts, simulated time jumps to it and the steps
that are overdue are emitted back to back until the server has caught up. Every stamp is a simulated time
computed by the scheduler, never a wall-clock reading, so catching up changes when bytes leave, not what they
say; and simulated time keeps the speed-up's pace on average, so a client that times the server with its own
clock (times the speed-up) still sees roughly the right figures. Nothing here measures; ``now()`` is read only
when stamping an arrival.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Hashable

__all__ = ["TIMER_EARLY", "VirtualClock"]

# epoll waits in whole milliseconds (rounded up): waking half a millisecond early centres the timer error.
TIMER_EARLY = 0.0005


class VirtualClock:
    """Simulated seconds since the server became ready, bounded by un-emitted steps and promised arrivals."""

    def __init__(self, *, speedup: float, replicas: int, timer: Callable[[], float] | None = None) -> None:
        """``timer``: wall seconds (default: the running loop's clock)."""
        self.speedup = speedup
        self._timer = timer
        self._origin = 0.0  # wall time of simulated time 0
        self._steps = [math.inf] * replicas  # end of each replica's computed, not yet emitted step
        self._holds: dict[Hashable, float] = {}
        self._waiters: list[asyncio.Future[None]] = []

    # -- reading -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Simulated time 0 is now."""
        self._origin = self._wall()

    def _wall(self) -> float:
        return self._timer() if self._timer is not None else asyncio.get_running_loop().time()

    def _raw(self) -> float:
        return (self._wall() - self._origin) * self.speedup

    def limit(self) -> float:
        """The earliest promised arrival or un-emitted step end: simulated time stops there for now."""
        holds = min(self._holds.values(), default=math.inf)
        return min(holds, min(self._steps))

    def now(self) -> float:
        """The current simulated time (what an arriving request is stamped with)."""
        return min(self._raw(), self.limit())

    def wall_delay(self, t: float) -> float:
        """Wall seconds until simulated time ``t`` if nothing holds the clock before then."""
        return (t - self._raw()) / self.speedup

    def held_before(self, t: float, *, inclusive: bool) -> bool:
        """Whether a promised arrival at or before ``t`` (``inclusive``), or strictly before, is still owed."""
        return any(at <= t if inclusive else at < t for at in self._holds.values())

    def step_pending_before(self, t: float, replica: int, *, inclusive: bool) -> bool:
        """Whether another replica still has to emit a step ending at or before ``t``."""
        return any(i != replica and (end <= t if inclusive else end < t) for i, end in enumerate(self._steps))

    def _owed_before(self, t: float, replica: int, *, inclusive: bool) -> bool:
        return self.held_before(t, inclusive=inclusive) or self.step_pending_before(t, replica, inclusive=inclusive)

    def may_step(self, start: float, replica: int) -> bool:
        """A step beginning at ``start`` can be computed: every request arriving by then is known."""
        return self.wall_delay(start) <= TIMER_EARLY and not self._owed_before(start, replica, inclusive=True)

    def may_emit(self, end: float, replica: int) -> bool:
        """A step ending at ``end`` can be emitted: its time has come and nothing earlier is owed."""
        return self.wall_delay(end) <= TIMER_EARLY and not self._owed_before(end, replica, inclusive=False)

    async def wait_for_step(self, start: float, replica: int) -> None:
        """Wait until ``may_step`` may have become true (the wall clock got there, or something changed)."""
        owed = self._owed_before(start, replica, inclusive=True)
        await self.changed(None if owed else self.wall_delay(start))

    async def wait_for_emit(self, end: float, replica: int) -> None:
        """Wait until ``may_emit`` may have become true."""
        owed = self._owed_before(end, replica, inclusive=False)
        await self.changed(None if owed else self.wall_delay(end))

    # -- changing the bounds -------------------------------------------------------------------------

    def in_step(self, replica: int) -> bool:
        """Whether the replica has computed a step that is not emitted yet (its end bounds the others)."""
        return self._steps[replica] != math.inf

    def begin_step(self, replica: int, end: float) -> None:
        self._steps[replica] = end
        if len(self._steps) > 1:
            self.notify()  # a replica waiting for this one to begin its step (``SimServer._begins_before``)

    def emitted(self, replica: int) -> None:
        """The replica's step is out: its end no longer bounds simulated time."""
        self._steps[replica] = math.inf
        self.notify()

    def hold(self, key: Hashable, at: float) -> None:
        """Do not let simulated time pass ``at`` until ``release(key)``."""
        self._holds[key] = at
        self.notify()

    def release(self, key: Hashable) -> None:
        if self._holds.pop(key, None) is not None:
            self.notify()

    # -- waiting -------------------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake everything waiting for a change (a new arrival, a release, an emission)."""
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def changed(self, timeout: float | None = None) -> None:
        """Return at the next ``notify()``, or after ``timeout`` wall seconds."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        handle = None if timeout is None else loop.call_later(max(0.0, timeout - TIMER_EARLY), _wake, fut)
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()
            if fut in self._waiters:
                self._waiters.remove(fut)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
