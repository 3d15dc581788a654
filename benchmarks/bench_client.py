"""How fast is the benchmark client itself? Streams from a fast local server and measures the client's limits.

The server is a minimal HTTP/1.1 SSE server (raw asyncio, no framework) in its own process pinned to the
second core; the client runs ``run_cell`` unchanged, pinned to the first core. Each content chunk carries the
server's ``time.perf_counter()`` at write time in its ``id`` (CLOCK_MONOTONIC is system-wide on Linux), so the
lag from the server's write to the client's read is measured per chunk. Client CPU per chunk is the client
process's ``time.process_time`` over the cell divided by the chunks it received.

Modes: ``spread`` gives each stream a random phase (chunks arrive evenly); ``batched`` quantizes every stream
to one global step, as a real server does when one decode step emits a token for the whole batch.

Columns: achieved chunks/s; lag p50/p99 after a 0.5 s ramp (and p99 including it); client CPU per chunk; the
client's CPU share of the wall time (near 100%: the client is the bottleneck; well below with a large lag: the
client was starved by other processes); ``1-core cap`` = 1 / CPU per chunk, the chunk rate one dedicated core
could sustain at that per-chunk cost; ``steal``: the larger share of the cell's wall time that the hypervisor
gave either core to another machine (on a shared VM this, not the client, is what a lag spike often is).

``--repeat N`` runs every row N times (the shared VM's noise shows in the spread).

Run: ``python benchmarks/bench_client.py`` (about two minutes); ``--keep-gc`` shows the client with automatic
garbage collection left on during cells, as it was before ``paused_gc``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import multiprocessing as mp
import os
import random
import re
import time
from typing import Any, ClassVar

import numpy as np

from pytest_autotuner.bench import cell as bench_cell
from pytest_autotuner.bench import client
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.runtimes.base import Endpoint

CELL_SECONDS = 3.0
RAMP_SECONDS = 0.5  # lag percentiles leave out the burst of C simultaneous first requests
CONCURRENCIES = (64, 128, 256, 512, 1024)
TARGET_RATES = (10_000, 20_000, 40_000)  # chunks per second over all streams
BATCHED = ((512, 20_000), (1024, 20_000))
LAG_GOAL_MS = 2.0

_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
_CHUNK = b'data: {"id":"%.7f","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}\n\n'  # noqa: E501
_ROLE = b'data: {"id":"0","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
_TAIL = (
    b'data: {"id":"0","choices":[{"index":0,"delta":{"content":""},"finish_reason":"length"}]}\n\n'
    b'data: {"id":"0","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":%d,"total_tokens":0}}\n\n'
    b"data: [DONE]\n\n"
)


def _frame(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class _Stream:
    __slots__ = ("interval", "remaining", "sent", "transport")

    def __init__(self, transport: asyncio.Transport, remaining: int, interval: float) -> None:
        self.transport, self.remaining, self.interval, self.sent = transport, remaining, interval, 0


class _SseServer(asyncio.Protocol):
    heap: ClassVar[list[tuple[float, int, _Stream]]] = []
    seq = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.buf = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            match = re.search(rb"(?i)content-length:\s*(\d+)", self.buf[:end])
            length = int(match.group(1)) if match else 0
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4 : end + 4 + length], self.buf[end + 4 + length :]
            self._start(json.loads(body) if body else {})

    def _start(self, body: dict[str, Any]) -> None:
        interval = float(body.get("chunk_interval", 0.01))
        now = time.perf_counter()
        first = now + random.random() * interval
        if body.get("batched"):
            first = (now // interval + 1) * interval
        self.transport.write(_HEAD + _frame(_ROLE))
        _SseServer.seq += 1
        stream = _Stream(self.transport, int(body.get("max_tokens", 16)), interval)
        heapq.heappush(_SseServer.heap, (first, _SseServer.seq, stream))


async def _tick() -> None:
    heap = _SseServer.heap
    while True:
        now = time.perf_counter()
        while heap and heap[0][0] <= now:
            due, seq, stream = heapq.heappop(heap)
            if stream.transport.is_closing():
                continue
            stream.transport.write(_frame(_CHUNK % time.perf_counter()))
            stream.sent += 1
            if stream.sent >= stream.remaining:
                stream.transport.write(_frame(_TAIL % stream.sent) + b"0\r\n\r\n")
            else:
                heapq.heappush(heap, (due + stream.interval, seq, stream))
        await asyncio.sleep(min(0.0005, heap[0][0] - now) if heap else 0.0005)


def _serve(port_queue: Any) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_SseServer, "127.0.0.1", 0, backlog=4096)
        port_queue.put(server.sockets[0].getsockname()[1])
        await _tick()

    asyncio.run(main())


class _LagParser(bench_cell.StreamParser):
    """The client's parser, also keeping (arrival time, bytes) of each read for the lag analysis."""

    instances: ClassVar[list[_LagParser]] = []

    def __init__(self, api: str = "chat") -> None:
        super().__init__(api)
        self.reads: list[tuple[float, bytes]] = []
        _LagParser.instances.append(self)

    def feed(self, data: bytes, now: float) -> bool:
        self.reads.append((now, data))
        return super().feed(data, now)


_ID = re.compile(rb'"id":"(\d+\.\d+)"')


async def _measure(port: int, concurrency: int, rate: float, batched: bool) -> dict[str, float]:
    interval = concurrency / rate
    chunks = int(min(256, max(16, 1.0 / interval)))
    per_worker = CELL_SECONDS / (chunks * interval) + 2
    plan = BenchmarkPlan(
        # Varied lengths, so that streams do not all end (and restart) together after the first round.
        scenarios=(parse_scenario(f"U(4,4)/({chunks // 2},{chunks * 3 // 2})"),),
        concurrencies=(concurrency,),
        max_requests=int(concurrency * per_worker),
        max_time=CELL_SECONDS,
        warmup_requests=concurrency,  # opens the connections before measuring
        additional_params={"chunk_interval": interval, "batched": batched},
    )
    endpoint = Endpoint(f"http://127.0.0.1:{port}", "bench")
    _LagParser.instances.clear()
    async with client.new_session() as session:
        # Timing starts with the measured phase: its first request is the (concurrency + 1)-th parser.
        cell = client.run_cell(session, endpoint, plan, plan.scenarios[0], concurrency)
        measured = asyncio.create_task(cell)
        while len(_LagParser.instances) <= concurrency and not measured.done():
            await asyncio.sleep(0.0005)
        cpu, wall, steal = time.process_time(), time.perf_counter(), _steal_jiffies()
        await measured
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        stolen = {core: n - steal[core] for core, n in _steal_jiffies().items()}
    parsers = _LagParser.instances[concurrency:]
    arrivals = [(now, float(ts)) for p in parsers for now, data in p.reads for ts in _ID.findall(data)]
    lags_ms = np.array([now - ts for now, ts in arrivals]) * 1e3
    start = min((now for now, _ in arrivals), default=0.0)
    steady = np.array([now - ts for now, ts in arrivals if now > start + RAMP_SECONDS]) * 1e3
    n = max(1, len(arrivals))
    return {
        "chunks_per_s": len(arrivals) / wall,
        "lag_p50_ms": _pct(steady, 50),
        "lag_p99_ms": _pct(steady, 99),
        "lag_p99_all_ms": _pct(lags_ms, 99),
        "cpu_us_per_chunk": cpu / n * 1e6,
        "cpu_util": cpu / wall,
        "steal": max(stolen.values(), default=0) / os.sysconf("SC_CLK_TCK") / wall,
    }


def _steal_jiffies() -> dict[str, int]:
    """Per-core steal time (the hypervisor ran someone else) from /proc/stat, in jiffies; {} off Linux."""
    try:
        with open("/proc/stat") as stat:
            return {f[0]: int(f[8]) for line in stat if (f := line.split())[0] in ("cpu0", "cpu1")}
    except OSError:
        return {}


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def _print_capacity(results: dict[tuple[int, int, bool], list[dict[str, float]]]) -> None:
    """The largest loads whose every run kept p99 lag under the goal, by streams and by chunks per second."""
    for batched in (False, True):
        held = [
            (c, r, max(m["lag_p99_ms"] for m in runs))
            for (c, r, b), runs in results.items()
            if b == batched and all(m["lag_p99_ms"] < LAG_GOAL_MS and m["chunks_per_s"] >= 0.95 * r for m in runs)
        ]
        mode = "batched" if batched else "spread"
        if not held:
            print(f"{mode}: no load tried kept p99 lag under {LAG_GOAL_MS:g} ms in every run")
            continue
        c, r, worst = max(held, key=lambda row: (row[0], row[1]))
        c2, r2, worst2 = max(held, key=lambda row: (row[1], row[0]))
        print(
            f"{mode}: p99 lag under {LAG_GOAL_MS:g} ms in every run up to {c} streams at {r:,} chunks/s "
            f"(worst {worst:.2f} ms) and up to {r2:,} chunks/s at {c2} streams (worst {worst2:.2f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--rows", help="only these rows, e.g. 512x20000,b512x20000 (b: batched mode)")
    parser.add_argument("--keep-gc", action="store_true", help="leave automatic GC on during cells (to compare)")
    parser.add_argument("--bare", action="store_true", help="skip loading the plugin's heavy modules first")
    args = parser.parse_args()
    if not args.bare:  # the client runs inside pytest, beside pandas, Optuna and matplotlib: a heap GC walks
        import matplotlib.pyplot  # noqa: F401
        import optuna  # noqa: F401
        import pandas  # noqa: F401
    if args.keep_gc:
        client.paused_gc = contextlib.nullcontext  # type: ignore[assignment]
    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    port = ports.get(timeout=30)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    bench_cell.StreamParser = _LagParser  # type: ignore[misc]
    rows = [(c, r, False) for c in CONCURRENCIES for r in TARGET_RATES] + [(c, r, True) for c, r in BATCHED]
    if args.rows:
        pairs = (row.split("x") for row in args.rows.split(","))
        rows = [(int(c.lstrip("b")), int(r), c.startswith("b")) for c, r in pairs]
    rows = [row for row in rows for _ in range(args.repeat)]
    header = f"{'mode':8} {'streams':>7} {'target/s':>9} {'chunks/s':>9} {'lag p50':>8} {'lag p99':>8} "
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes on these cores distort lag)")
    print(header + f"{'p99 w/ ramp':>11} {'CPU/chunk':>10} {'client CPU':>10} {'1-core cap':>10} {'steal':>6}")
    try:
        results: dict[tuple[int, int, bool], list[dict[str, float]]] = {}
        for concurrency, rate, batched in rows:
            m = asyncio.run(_measure(port, concurrency, rate, batched))
            results.setdefault((concurrency, rate, batched), []).append(m)
            mode = "batched" if batched else "spread"
            print(
                f"{mode:8} {concurrency:7d} {rate:9,d} {m['chunks_per_s']:9,.0f} "
                f"{m['lag_p50_ms']:6.2f}ms {m['lag_p99_ms']:6.2f}ms {m['lag_p99_all_ms']:9.2f}ms "
                f"{m['cpu_us_per_chunk']:8.1f}us "
                f"{m['cpu_util']:9.0%} {1e6 / m['cpu_us_per_chunk']:10,.0f} {m['steal']:6.0%}",
                flush=True,
            )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        _print_capacity(results)
    finally:
        server.kill()


if __name__ == "__main__":
    main()
