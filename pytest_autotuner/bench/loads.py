"""The loads that drive a cell (``cell.Cell``): a closed loop of workers, an open loop of Poisson arrivals, and
multi-turn sessions run as users. Each announces its next arrivals to the simulator (``X-Sim-Then`` /
``X-Sim-After``, see ``client.py``) so that this client's reaction time does not thin the simulated batch.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import numpy as np

from pytest_autotuner.bench.cell import Cell
from pytest_autotuner.bench.limits import supervise

__all__ = ["closed_loop", "open_loop", "sessions"]

_CONNECTION_BACKOFF = 0.01  # wall seconds a closed-loop worker waits after a connection error


async def closed_loop(cell: Cell, first: int, count: int, workers: int, keep: bool) -> None:
    """``workers`` loops over requests ``first .. first + count - 1``, each sending when its last ends.

    To the simulator: the first burst is one instant (each first request promises the next at ``+0``), and
    every request promises a follower at its end; a worker that runs out of requests withdraws its promise.
    """
    claim = itertools.count(first)
    if cell.requests.multi_turn and first < cell.plan.max_requests:
        await sessions(cell, count, workers, keep)
        return
    stop = first + count
    n = max(1, min(workers, count))
    burst = [next(claim) for _ in range(n)]

    async def worker(k: int) -> None:
        i = burst[k]
        after = f"{cell.token(burst[k - 1])}@start" if k else None
        then = "end, +0" if k + 1 < n else "end"
        while True:
            record = await cell.send(i, then=then, after=after)
            if keep:
                cell.keep(record)
            await cell.withdraw_if_failed(i, record)
            if record.error == "connection" and not cell.stopped_for_precision:
                await asyncio.sleep(_CONNECTION_BACKOFF)
            j = next(claim)
            promised = record.ok and cell.server_stamps
            if j >= stop or (keep and cell.stopped_for_precision):
                if promised:  # shielded: the cell may be cut (cancelled) while it is said
                    await asyncio.shield(cell.withdraw(f"{cell.token(i)}@end"))
                return
            i, after, then = j, (f"{cell.token(i)}@end" if promised else None), "end"

    await supervise([worker(k) for k in range(n)], float("inf"), None)


async def open_loop(cell: Cell, rate: float) -> None:
    """Poisson arrivals at ``rate`` requests per server second, from a schedule fixed in advance.

    Each request tells the simulator when the next one arrives (``X-Sim-Then: +gap``), so the schedule holds
    in server time even when this client sends late.
    """
    # a ladder step: the same unit-rate arrivals at every load, scaled (``BenchmarkPlan.common_arrivals``)
    arrivals = np.random.default_rng([cell.plan.seed, 7]) if cell.plan.common_arrivals else cell.requests.rng
    gaps = arrivals.exponential(1.0 / rate, cell.plan.max_requests)
    schedule = np.cumsum(gaps) - gaps[0]  # server seconds after the cell start; first at 0
    times = schedule.tolist()
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int, at: float) -> None:
        then = f"+{times[i + 1] - at!r}" if i + 1 < len(times) else None
        after = f"{cell.token(i - 1)}@start" if i else None
        cell.keep(await cell.send(i, scheduled=at, then=then, after=after))

    try:
        for i, at in enumerate(times):
            cell.next_scheduled = at
            delay = cell.t0 + at / cell.k - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if cell.stopped_for_precision:
                if i and cell.server_stamps:  # request i-1 promised this one
                    await asyncio.shield(cell.withdraw(f"{cell.token(i - 1)}@start"))
                break
            tasks.append(asyncio.create_task(one(i, at)))
        cell.next_scheduled = None
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def sessions(cell: Cell, count: int, workers: int, keep: bool) -> None:
    """``workers`` users, each running one session's turns in order (thinking between them), then the next.

    To the simulator: like ``closed_loop``, with the next turn promised ``think`` seconds after a reply ends
    (``X-Sim-Think``) and the next session's first turn at the end of the last.
    """
    sessions = [r for r in cell.requests.sessions_of if r.start < count]
    claim = itertools.count()
    n = max(1, min(workers, len(sessions)))
    starters = [next(claim) for _ in range(n)]
    think_s = cell.requests.think

    async def worker(k: int) -> None:
        session = starters[k]
        after = f"{cell.token(sessions[starters[k - 1]].start)}@start" if k else None
        then = "end, +0" if k + 1 < n else "end"
        while True:
            turns = sessions[session]
            last = min(count, turns.stop) - 1
            for i in range(turns.start, last + 1):
                think = think_s if i < last else 0.0
                cell.requests.bodies[i] = cell.requests.turn_body(i)
                record = await cell.send(i, then=then, after=after, think=think)
                if keep:
                    cell.keep(record)
                await cell.withdraw_if_failed(i, record)
                promised = record.ok and cell.server_stamps
                after, then = (f"{cell.token(i)}@end" if promised else None), "end"
                if i < last and think > 0:
                    await asyncio.sleep(think / cell.k)  # the user reads the reply (server seconds / k)
            session = next(claim)
            if session >= len(sessions):
                if after is not None:
                    await cell.withdraw(after)
                return

    await supervise([worker(k) for k in range(n)], float("inf"), None)
