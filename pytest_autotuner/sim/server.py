"""The simulated SGLang HTTP server (aiohttp), driven by the same Scheduler as the in-process API.

Time: simulated time 0 is the moment the server becomes ready; it then runs at ``speedup`` simulated seconds
per wall second, bounded by the steps not yet emitted and the arrivals clients promised (``clock.py``). One
asyncio task per dp replica computes a step, waits until its end comes on that clock, and writes its tokens,
so CPU cost is per step, not per token timer.

Server time for the client: every response carries the request's simulated arrival (header
``X-Sim-Arrival``) and, when the request asks for it (``X-Sim-Token`` or ``X-Sim-Stamps``), every streamed
write its simulated time (``: sim-time`` comment line), so a client can measure TTFT, ITL and E2E in
simulated seconds, exactly as the scheduler produced them. Plain clients (SGLang's ``bench_serving``, which
fails on SSE comment lines) get SGLang's stream unchanged.

Arrivals a client announces (request headers; real SGLang ignores them, the simulator's timeline needs them to
be independent of how fast the client reacts):

- ``X-Sim-Token: <tag>.<n>`` names a request; ``n`` orders requests that arrive at the same simulated time.
- ``X-Sim-Then: end`` promises that a request will arrive exactly when this one finishes (closed loop);
  ``X-Sim-Then: +<s>`` that one arrives ``s`` simulated seconds after this one arrived (open loop, or the first
  burst of a closed loop with ``+0``). Both may be given, comma-separated.
- ``X-Sim-Think: <s>`` with ``X-Sim-Then: end``: the follower arrives ``s`` simulated seconds after this one's
  end (a chat user's think time between a reply and the next turn).
- ``X-Sim-After: <token>@end`` / ``<token>@start`` marks the request that keeps such a promise: its arrival is
  the promised time, whenever its bytes come in. ``POST /sim/release`` with the same header withdraws a
  promise that will not be kept (the closed loop ran out of requests).

A promise holds simulated time at the promised instant until it is kept, so the request joins exactly the step
it would join with a client that reacts in zero time, however far a busy host let the client fall behind. Only
a promise not kept within ``--sim-promise-patience`` wall seconds (10 by default) after its time came is
dropped, so that a client that died does not stop the clock for good (counted in ``/sim/timeline`` as
``late_promises``; ``/sim/now?tag=`` tells the cell's client, which then fails it as ``host_too_slow``); a
client withdraws the promises it will not keep when its cell ends (``POST /sim/release``). Requests that arrive at
the same simulated time enter the queue in token order, so a run is reproducible whatever the wall-clock order
of their bytes.

Why one module of about 660 lines: SGLang's endpoints and the simulator's own share the server's state; the clock,
the scheduler and the streaming helpers are modules of their own.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import os
import random
import sys
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from pytest_autotuner.core.spec.tokens import WORD_RULE, output_keys
from pytest_autotuner.sim.clock import VirtualClock
from pytest_autotuner.sim.protocol import (
    RequestError,
    ResponseShape,
    error_body,
    parse_generation,
    sse,
)
from pytest_autotuner.sim.scheduler import QUEUE_TIME_BUCKETS, Scheduler, SimRequest, chunk_due
from pytest_autotuner.sim.streaming import LiveRequest

if TYPE_CHECKING:
    import argparse

    from pytest_autotuner.core.spec.tokens import TokenCounter
    from pytest_autotuner.sim.perf_model import EngineConfig, MemoryPlan
    from pytest_autotuner.sim.protocol import Api, GenerationRequest

__all__ = ["PROMISE_GRACE", "SimServer", "parse_then", "parse_think"]

logger = logging.getLogger(__name__)

_MEAN_NATURAL_LENGTH = 256  # without ignore_eos, a request stops after ~Exp(256) tokens (seeded)
#: Wall seconds a request that keeps a promise waits for the server to make it (its predecessor's handler or
#: step has not run yet); longer means the predecessor failed here and the promise never comes.
PROMISE_GRACE = 2.0
_WITHDRAWN = -math.inf  # an early request's promise was withdrawn: it is stamped on arrival, and not late
_V = TypeVar("_V")
_TAGS_KEPT = 1024  # token tags (a benchmark cell each) whose progress and late arrivals ``/sim/now`` remembers
_UNORDERED = 1 << 62  # the order of requests without a token: after every token, then by receipt


def parse_then(value: str) -> tuple[bool, float | None]:
    """``X-Sim-Then``: (a request follows at this one's end, seconds after this one's arrival or None)."""
    at_end, after = False, None
    for part in value.split(","):
        part = part.strip()
        if part == "end":
            at_end = True
        elif part.startswith("+"):
            after = float(part[1:])
            if not after >= 0.0:  # also NaN
                raise ValueError(f"`X-Sim-Then` offset must be >= 0, got {part!r}")
        elif part:
            raise ValueError(f"`X-Sim-Then` takes `end` and/or `+<seconds>`, got {part!r}")
    return at_end, after


def parse_think(value: str) -> float:
    """``X-Sim-Think``: simulated seconds between this request's end and its follower's arrival."""
    think = float(value)
    if not think >= 0.0:  # also NaN
        raise ValueError(f"`X-Sim-Think` must be >= 0 seconds, got {value!r}")
    return think


def _order(token: str | None, receipt: int) -> int:
    """Queue order among requests of one simulated instant: the token's number, else the receipt order."""
    if token:
        number = token.rpartition(".")[2]
        if number.isdigit():
            return int(number)
    return _UNORDERED + receipt


def _tag_of(token: str) -> str:
    """The cell tag of an ``X-Sim-Token`` (``<tag>.<n>``) or of a promise key (``<tag>.<n>@end|start``)."""
    return token.partition("@")[0].rpartition(".")[0]


def _keep_recent(by_tag: dict[str, _V], tag: str, value: _V) -> None:
    """Set ``by_tag[tag]`` as the most recently used entry, forgetting the longest unused past ``_TAGS_KEPT``."""
    by_tag.pop(tag, None)
    by_tag[tag] = value
    if len(by_tag) > _TAGS_KEPT:
        del by_tag[next(iter(by_tag))]


@dataclass(order=True)
class _Arrival:
    """A received request waiting for its simulated arrival time to enter a scheduler."""

    at: float
    order: int
    seq: int
    sim: SimRequest = field(compare=False)
    gen: GenerationRequest | None = field(compare=False, default=None)  # None: a health check
    live: LiveRequest | None = field(compare=False, default=None)


class SimServer:
    """Scheduler replicas + the HTTP handlers; ``ready`` flips when the simulated startup ends."""

    def __init__(
        self,
        *,
        args: argparse.Namespace,
        config: EngineConfig,
        memory: MemoryPlan,
        info: dict[str, Any],
        counter: TokenCounter = WORD_RULE,
    ) -> None:
        self.args = args
        self.counter = counter  # counts prompts and gives the radix cache its keys (``core/spec/tokens.py``)
        self._output_keys = output_keys(counter)
        self.config = config
        self.info = info
        self.speedup: float = args.sim_speedup
        self.patience: float = args.sim_promise_patience
        self.served_model: str = info["served_model_name"]
        seed = args.sim_seed if args.sim_seed is not None else (args.random_seed or 0)
        self.schedulers = [
            Scheduler(config=config, memory=memory, seed=seed, noise=args.sim_noise, replica=i)
            for i in range(config.schedulers)
        ]
        self.clock = VirtualClock(speedup=self.speedup, replicas=config.schedulers)
        self._rng = random.Random(f"lengths:{seed}")
        self._incoming: list[_Arrival] = []  # received, replica not chosen yet (a heap by arrival, order)
        self._queued: list[list[_Arrival]] = [[] for _ in self.schedulers]  # chosen replica, not yet arrived
        self._robin = itertools.count()
        self._at = [0.0] * len(self.schedulers)  # each replica's time: the end of its last emitted step
        self._seq = itertools.count()
        self._promises: dict[str, float] = {}  # "<token>@end|start" -> promised simulated arrival
        self._early: dict[str, asyncio.Future[float]] = {}  # requests that came before their promise
        self._late_promises = 0
        self._late_by_tag: dict[str, int] = {}  # token tag -> arrivals it could not place on its clock (late)
        self._given_up: set[str] = set()  # promises dropped as late: their request is stamped on arrival
        self._withdrawn: set[str] = set()  # promises the client withdrew before they were made
        self._live: dict[int, LiveRequest] = {}
        self._finished_progress: dict[str, float] = {}  # token tag -> latest write of its finished requests
        self._named: dict[int, LiveRequest] = {}  # requests with an ``X-Sim-Token`` taken in and not yet answered
        self.timeline: list[SimRequest] = []
        self.ready = False
        self.hung = False  # the whole server stopped responding (--sim-hang-after / --sim-hang-at)
        self.hung_replicas: set[int] = set()  # replicas that stopped stepping (--sim-hang-replica)
        self.hung_at: float | None = None  # simulated second the hang began (``/sim/timeline``)
        self._generation_requests = 0
        self._streams = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._lag: list[float] = []  # wall seconds each step was emitted after its due time

    # -- clock and drivers ---------------------------------------------------------------------------

    def sim_now(self) -> float:
        return self.clock.now()

    def start(self) -> None:
        """Mark the server ready: simulated time starts now and the replica drivers run."""
        self.clock.start()
        self.ready = True
        self._tasks = [asyncio.create_task(self._drive(i)) for i in range(len(self.schedulers))]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _next_start(self, index: int, clock: float) -> float | None:
        """When replica ``index`` would begin its next step, or None when it has nothing to do."""
        if self.schedulers[index].busy:
            return clock
        first = [q[0].at for q in (self._queued[index], self._incoming) if q]
        return max(clock, min(first)) if first else None

    def _begins_before(self, index: int, t: float) -> bool:
        """Whether another replica, one that has not computed its next step yet, will begin it before ``t``.

        Its step may end before ``t``, and what ends then (a closed loop's promised follower, assigned round-robin
        to any replica) must be in place before a step beginning at ``t`` is computed, and out to the client
        before a step ending at ``t`` is emitted: the clock knows only steps already computed
        (``VirtualClock.begin_step``), so without this the replicas' drivers would go in the order asyncio wakes
        them whenever both are due (a busy host, a high speed-up), and the timeline would depend on it.
        """
        for other in range(len(self.schedulers)):
            if other == index or self.clock.in_step(other):
                continue
            begins = self._next_start(other, self._at[other])
            if begins is not None and begins < t:
                return True
        return False

    async def _drive(self, index: int) -> None:
        sched, clock = self.schedulers[index], self.clock
        interval = self.config.stream_interval
        at = 0.0  # this replica's time: the end of its last step
        while True:
            start = self._next_start(index, at)
            if start is None or self._stepping_hung(index, start):
                await clock.changed()
                continue
            if not clock.may_step(start, index):
                await clock.wait_for_step(start, index)
                continue  # what changed may also change the start
            if self._begins_before(index, start):
                await clock.changed()  # that replica steps first (``begin_step`` notifies)
                continue
            self._assign(start)
            self._enter(index, start)
            if not sched.busy:
                continue  # what arrived went to other replicas
            outcome = sched.step(start)
            clock.begin_step(index, outcome.end)
            while True:  # each condition read once a turn: ``may_emit`` turns true as the wall clock moves
                if not clock.may_emit(outcome.end, index):
                    await clock.wait_for_emit(outcome.end, index)
                elif self._begins_before(index, outcome.end):
                    await clock.changed()  # another replica's earlier step first (``begin_step`` notifies)
                else:
                    break
            self._lag.append(-clock.wall_delay(outcome.end))
            at = self._at[index] = outcome.end
            clock.emitted(index)
            for req in outcome.produced:
                live = self._live.get(req.rid)
                if live is not None and chunk_due(req.generated, req.output_tokens, interval, live.sent):
                    live.advance(req.generated, outcome.end)
            for req in outcome.finished:
                live = self._live.get(req.rid)
                if live is not None and live.follow_up is not None and not live.broken and not live.stopped:
                    self._promise(live.follow_up, outcome.end + live.think)

    def _stepping_hung(self, index: int, start: float) -> bool:
        """Whether replica ``index`` no longer steps: hung (a fault flag), or its step at ``start`` would begin at
        or after ``--sim-hang-at``."""
        hang_at = self.args.sim_hang_at
        if hang_at is not None and start >= hang_at:
            self._hang(f"simulated hang at {hang_at:g} s")
        return self.hung or index in self.hung_replicas

    def _hang(self, why: str) -> None:
        """Stop responding: the whole server, or only ``--sim-hang-replica`` (its requests never progress)."""
        replica = self.args.sim_hang_replica
        if self.hung_at is None:
            self.hung_at = self.sim_now()
        if replica is None:
            if not self.hung:
                logger.warning("%s", why)
            self.hung = True
        elif replica not in self.hung_replicas:
            logger.warning("%s (replica %d)", why, replica)
            self.hung_replicas.add(replica)
            self.clock.notify()

    def _assign(self, upto: float) -> None:
        """Requests arrived by ``upto`` get their rid, length and replica, in (arrival, token) order."""
        assigned = False
        while self._incoming and self._incoming[0].at <= upto:
            arrival = heapq.heappop(self._incoming)
            replica = next(self._robin) % len(self.schedulers)
            self._admit(arrival)
            heapq.heappush(self._queued[replica], arrival)
            assigned = True
        if assigned and len(self.schedulers) > 1:
            self.clock.notify()  # wake the other replicas' drivers for what they got

    def _enter(self, index: int, start: float) -> None:
        """Requests that arrived before the step beginning at ``start`` join it; one arriving at that very instant
        joins the next step, unless the replica is idle: then the first of them starts this step alone.

        No client's requests arrive together: a real one sends them one after the other, and SGLang's scheduler
        starts a step as soon as it has a request (``recv_requests`` before ``get_next_batch_to_run`` in its event
        loop), so a closed loop whose whole batch ended at once prefills its first new request alone and the rest
        in the next step, and a request sent when another ends always misses the step that begins then. SGLang's
        ``bench_serving`` on this simulator (no promises, so arrivals as they come) measures exactly that.
        """
        queued, sched = self._queued[index], self.schedulers[index]
        while queued and queued[0].at < start:
            sched.submit(heapq.heappop(queued).sim)
        if not sched.busy and queued and queued[0].at == start:
            sched.submit(heapq.heappop(queued).sim)

    def _admit(self, arrival: _Arrival) -> None:
        """Give an arrived request its place in the timeline (done in arrival order, so reproducible)."""
        gen, sim, live = arrival.gen, arrival.sim, arrival.live
        assert gen is not None and live is not None
        sim.rid = len(self.timeline)
        sim.arrival = arrival.at
        if not gen.ignore_eos:
            sim.output_tokens = min(gen.max_tokens, 1 + int(self._rng.expovariate(1.0 / _MEAN_NATURAL_LENGTH)))
        self._live[sim.rid] = live
        self.timeline.append(sim)

    def _receive(self, gen: GenerationRequest, *, stamped: bool = True) -> LiveRequest:
        """Check a parsed request against the engine's limits (HTTP 400 now, like SGLang) and wrap it."""
        sim = SimRequest(
            rid=-1,
            arrival=math.nan,
            input_tokens=gen.input_tokens,
            output_tokens=gen.max_tokens,
            max_new_tokens=gen.max_tokens,
            tokens=gen.tokens,
            output_keys=self._output_keys,
        )
        reason = self.schedulers[0].reject_reason(sim)  # every replica has the same limits
        if reason is not None:
            raise RequestError(reason)
        shape = ResponseShape(gen, f"{'chatcmpl' if gen.api == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}")
        malformed = False
        stop_after = None
        if gen.stream:
            self._streams += 1
            every = self.args.sim_malformed_sse_every
            malformed = every is not None and self._streams % every == 0
            if self._streams % self.args.sim_stop_stream_every == 0:
                stop_after = self.args.sim_stop_stream_after
        return LiveRequest(sim, shape, malformed=malformed, stamped=stamped, stop_after=stop_after)

    def _enqueue(self, gen: GenerationRequest, live: LiveRequest, at: float, order: int) -> None:
        heapq.heappush(self._incoming, _Arrival(at, order, next(self._seq), live.sim, gen, live))
        self.clock.notify()

    # -- promised arrivals ---------------------------------------------------------------------------

    def _promise(self, key: str, at: float) -> None:
        """A request keeping promise ``key`` arrives at simulated ``at``: hold the clock there until it does."""
        early = self._early.pop(key, None)
        if early is not None:
            if not early.done():
                # held until that request's handler, woken by the result, has it in the queue (``_arrival_of``):
                # a driver woken first would otherwise compute the step it belongs to without it
                self.clock.hold(key, at)
                early.set_result(at)
            return
        if key in self._withdrawn:  # the client said it will not come (its request failed on its side)
            self._withdrawn.discard(key)
            return
        self._promises[key] = at
        self.clock.hold(key, at)
        self._expire_later(key, at)

    def _expire_later(self, key: str, at: float) -> None:
        delay = max(0.0, self.clock.wall_delay(at)) + self.patience
        asyncio.get_running_loop().call_later(delay, self._expire, key, at)

    def _expire(self, key: str, at: float) -> None:
        if self._promises.get(key) != at:
            return  # kept or withdrawn
        if self.clock.wall_delay(at) > 0:  # its time has not come yet (the clock was held): wait again
            self._expire_later(key, at)
            return
        logger.warning("promised request %s did not arrive within %.1f s: simulated time goes on", key, self.patience)
        self._late_promises += 1
        self._given_up.add(key)
        self._withdraw(key)

    def _withdraw(self, key: str) -> float | None:
        at = self._promises.pop(key, None)
        self.clock.release(key)
        return at

    def _count_late(self, key: str) -> None:
        """An arrival of the cell that ``key`` names came, but not when its promise said (the client fell more
        than ``patience`` wall seconds behind, or its promise never came): it was stamped on arrival, later
        than the load meant. Promises of requests that never come (a cell cut short) are not counted here."""
        tag = _tag_of(key)
        _keep_recent(self._late_by_tag, tag, self._late_by_tag.get(tag, 0) + 1)

    async def _arrival_of(self, key: str) -> float | None:
        """The promised arrival of the request keeping ``key``; waits a while if the promise is not made yet."""
        if key in self._promises:
            return self._withdraw(key)
        if key in self._given_up:
            self._given_up.discard(key)
            self._count_late(key)
            return None
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._early[key] = future
        try:
            at = await asyncio.wait_for(future, PROMISE_GRACE)
            return None if at == _WITHDRAWN else at
        except (asyncio.TimeoutError, TimeoutError):
            logger.warning("request %s came without its promise: stamped on arrival", key)
            self._count_late(key)
            return None
        finally:
            self._early.pop(key, None)
            self.clock.release(key)  # ``_promise``'s hold: the caller queues the request before it next awaits

    # -- HTTP ----------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/health_generate", self.health_generate)
        r.add_get("/v1/models", self.models)
        r.add_get("/server_info", self.server_info)
        r.add_get("/get_server_info", self.server_info)
        r.add_get("/get_load", self.get_load)
        r.add_get("/get_model_info", self.model_info)
        r.add_post("/v1/chat/completions", self.chat)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/generate", self.generate)
        r.add_route("*", "/flush_cache", self.flush_cache)
        if self.args.enable_metrics:  # SGLang mounts /metrics only with --enable-metrics
            r.add_get("/metrics", self.metrics)
        r.add_get("/sim/timeline", self.sim_timeline)
        r.add_get("/sim/now", self.sim_clock)
        r.add_post("/sim/release", self.sim_release)
        return app

    async def _hang_if_needed(self) -> None:
        if self.hung:
            await asyncio.Event().wait()

    async def health(self, request: web.Request) -> web.Response:
        await self._hang_if_needed()
        return web.Response(status=200 if self.ready else 503)

    async def health_generate(self, request: web.Request) -> web.Response:
        await self._hang_if_needed()
        if not self.ready:
            return web.Response(status=503)
        sim = SimRequest(rid=-1, arrival=self.sim_now(), input_tokens=1, output_tokens=1)
        heapq.heappush(self._queued[0], _Arrival(sim.arrival, _UNORDERED, next(self._seq), sim))
        self.clock.notify()
        while sim.finish_time is None:
            await asyncio.sleep(0.01)
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": self.served_model, "object": "model", "owned_by": "sglang", "root": self.served_model}]
        return web.json_response({"object": "list", "data": data})

    async def server_info(self, request: web.Request) -> web.Response:
        # SGLang adds one ``internal_states`` entry per replica (bench_serving reads it after every run)
        states = [
            {"memory_usage": {"token_capacity": s.capacity}, "num_running_reqs": len(s.running),
             "num_waiting_reqs": len(s.waiting), "token_usage": s.kv_used / s.capacity if s.capacity else 0.0}
            for s in self.schedulers
        ]  # fmt: skip
        return web.json_response({**self.info, "internal_states": states})

    async def get_load(self, request: web.Request) -> web.Response:
        """Requests in the server per replica, as SGLang's ``/get_load`` (``num_reqs``, ``num_waiting_reqs``):
        the capacity search waits on it for a broken load step's backlog to drain."""
        loads = []
        for i, sched in enumerate(self.schedulers):
            waiting = len(sched.waiting) + len(self._queued[i]) + (len(self._incoming) if i == 0 else 0)
            running = len(sched.running) + (sched.prefilling is not None)
            loads.append({"dp_rank": i, "num_reqs": waiting + running, "num_waiting_reqs": waiting})
        return web.json_response(loads)

    async def metrics(self, request: web.Request) -> web.Response:
        """SGLang's Prometheus text: the queue-time histogram (per replica, as its ``dp_rank`` label) and the
        running and waiting request gauges, in simulated seconds."""
        lines = [
            "# HELP sglang:queue_time_seconds Histogram of queueing time in seconds.",
            "# TYPE sglang:queue_time_seconds histogram",
        ]
        model = self.served_model.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        for i, sched in enumerate(self.schedulers):
            hist, labels = sched.queue_times, f'dp_rank="{i}",model_name="{model}"'
            for bound, count in zip(QUEUE_TIME_BUCKETS, hist.buckets, strict=True):
                lines.append(f'sglang:queue_time_seconds_bucket{{le="{bound}",{labels}}} {float(count)}')
            lines.append(f'sglang:queue_time_seconds_bucket{{le="+Inf",{labels}}} {float(hist.count)}')
            lines.append(f"sglang:queue_time_seconds_count{{{labels}}} {float(hist.count)}")
            lines.append(f"sglang:queue_time_seconds_sum{{{labels}}} {hist.total!r}")
        for name, doc, value in (
            ("num_running_reqs", "The number of running requests.", lambda s: len(s.running)),
            ("num_queue_reqs", "The number of requests in the waiting queue.", lambda s: len(s.waiting)),
        ):
            lines += [f"# HELP sglang:{name} {doc}", f"# TYPE sglang:{name} gauge"]
            for i, sched in enumerate(self.schedulers):
                lines.append(f'sglang:{name}{{dp_rank="{i}",model_name="{model}"}} {float(value(sched))}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def model_info(self, request: web.Request) -> web.Response:
        return web.json_response({"model_path": self.args.model_path, "is_generation": True})

    async def flush_cache(self, request: web.Request) -> web.Response:
        if not all([sched.flush_cache() for sched in self.schedulers]):
            # SGLang refuses while requests run (HTTP 400, "Cache not flushed. Please check server logs.")
            return web.Response(status=400, text="Cache not flushed. Please check server logs.\n")
        return web.Response(text="Cache flushed.\n")

    async def sim_timeline(self, request: web.Request) -> web.Response:
        rows = [
            {
                "rid": r.rid,
                "replica": r.replica,
                "arrival": r.arrival,
                "prefill_start": r.prefill_start,
                "first_token": r.first_token_time,
                "finish": r.finish_time,
                "input_tokens": r.input_tokens,
                "output_tokens": r.generated,
                "cached_tokens": r.cached_tokens,
            }
            for r in self.timeline
        ]
        lag = sorted(self._lag) or [0.0]
        emission = {"steps": len(self._lag), "p50": lag[len(lag) // 2], "max": lag[-1]}
        body = {"speedup": self.speedup, "emission_lag": emission, "late_promises": self._late_promises,
                "hung_at": self.hung_at}  # fmt: skip
        return web.json_response({**body, "requests": rows})

    async def sim_clock(self, request: web.Request) -> web.Response:
        """The simulated time now (``clock.py``: bounded by steps not yet emitted and arrivals still owed, so a
        busy host or a late client never makes it run ahead of what the server did): the benchmark client's stall
        watchdog measures the server's silence in it.

        ``?tag=T``: also ``progress``, for each request still running here whose ``X-Sim-Token`` is ``T.<n>``, the
        simulated time of its latest write (its arrival before the first), and ``last``, the latest of those and of
        the finished requests of ``T``: what the server has done for them, which the client may not have read yet
        when this host is slower than the speed-up; and ``late``, how many of ``T``'s arrivals came too late to be
        placed where their promise said (the load the simulator served was not the one the client meant); and
        ``owed``, how many of ``T``'s promised arrivals the clock is held for (it waits for that client)."""
        body: dict[str, Any] = {"now": self.sim_now()}
        tag = request.query.get("tag")
        if tag:
            # the time up to which it has done its work: a replica that has work and is not hung is no further
            # than its next step (after this host froze the server, its clock reads ahead until it catches up)
            for index, sched in enumerate(self.schedulers):
                if self.hung or index in self.hung_replicas:
                    continue
                if sched.busy:
                    body["now"] = min(body["now"], self._at[index])
                if self._queued[index]:
                    body["now"] = min(body["now"], max(self._at[index], self._queued[index][0].at))
            if self._incoming and not self.hung:
                body["now"] = min(body["now"], self._incoming[0].at)
            prefix = tag + "."
            progress = {
                live.token: live.progress_at
                for live in self._named.values()
                if live.token is not None and live.token.startswith(prefix) and live.progress_at is not None
            }
            last = max([*progress.values(), self._finished_progress.get(tag, -math.inf)])
            body["progress"], body["last"] = progress, (last if last > -math.inf else None)
            body["late"] = self._late_by_tag.get(tag, 0)
            # promises of this cell's client the clock is held for: it waits on that client, not a hung step
            body["owed"] = sum(1 for key in self._promises if _tag_of(key) == tag)
        return web.json_response(body)

    async def sim_release(self, request: web.Request) -> web.Response:
        """Withdraw the promise named by ``X-Sim-After``: that request will not come."""
        key = request.headers.get("X-Sim-After", "")
        if key and key not in self._promises and key.endswith("@end"):
            self._withdrawn.add(key)  # not made yet: its request still runs here; never hold the clock for it
        if self._withdraw(key) is None and (early := self._early.pop(key, None)) is not None and not early.done():
            early.set_result(_WITHDRAWN)  # its request is here, waiting for the promise: stamp it on arrival
        return web.Response(status=204)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generation("chat", request)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generation("completions", request)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        return await self._generation("generate", request)

    def _count_and_inject_faults(self) -> web.Response | None:
        self._generation_requests += 1
        n = self._generation_requests
        args = self.args
        if args.sim_crash_after is not None and n > args.sim_crash_after:
            logger.error("Scheduler hit an exception: simulated crash after %d requests", args.sim_crash_after)
            sys.stderr.flush()
            os._exit(1)
        if args.sim_hang_after is not None and n > args.sim_hang_after:
            self._hang(f"simulated hang after {args.sim_hang_after} requests")
        if n <= args.sim_http_500_burst:
            return web.json_response(error_body("Internal server error (simulated burst)", 500), status=500)
        return None

    async def _generation(self, api: Api, request: web.Request) -> web.StreamResponse:
        # Stamp the arrival, then let the other requests of a burst stamp theirs before anyone parses.
        received = self.sim_now()
        receipt = next(self._seq)
        await asyncio.sleep(0)
        if not self.ready:
            return web.json_response(error_body("The server is not ready yet.", 503), status=503)
        fault = self._count_and_inject_faults()
        if fault is not None:
            return fault
        headers = request.headers
        token = headers.get("X-Sim-Token")
        try:
            at_end, after = parse_then(headers.get("X-Sim-Then", ""))
            think = parse_think(headers.get("X-Sim-Think", "0"))
            gen = parse_generation(api, await request.read(), self.served_model, self.counter)
            live = self._receive(gen, stamped="X-Sim-Token" in headers or "X-Sim-Stamps" in headers)
        except (RequestError, ValueError) as exc:
            return web.json_response(error_body(str(exc)), status=400)
        promised = headers.get("X-Sim-After")
        arrival = await self._arrival_of(promised) if promised else None
        if arrival is None:
            arrival = received
        live.token, live.progress_at = token, arrival
        if token:
            self._named[id(live)] = live
            if at_end:
                live.follow_up, live.think = f"{token}@end", think
            if after is not None:
                self._promise(f"{token}@start", arrival + after)
        # A hung server still took the request in (its promise is kept: the clock does not wait for it), and
        # never answers it.
        await self._hang_if_needed()
        self._enqueue(gen, live, arrival, _order(token, receipt))
        stamp = {"X-Sim-Arrival": repr(arrival)}  # exact: the client subtracts it from the write stamps
        try:
            if gen.stream:
                return await self._stream(request, live, stamp)
            await live.done.wait()
            live.shape.cached_tokens = live.sim.cached_tokens
            body = live.shape.full_body(live.text(0, live.sent), live.sent, live.finish_reason)
            return web.json_response(body, headers=stamp)
        finally:
            self._live.pop(live.sim.rid, None)
            self._named.pop(id(live), None)
            if live.token and live.progress_at is not None:
                tag = _tag_of(live.token)
                latest = max(self._finished_progress.get(tag, -math.inf), live.progress_at)
                _keep_recent(self._finished_progress, tag, latest)

    async def _stream(self, request: web.Request, live: LiveRequest, stamp: dict[str, str]) -> web.StreamResponse:
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **stamp}
        resp = web.StreamResponse(headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if live.shape.req.api == "chat":
            await resp.write(sse(live.shape.role_chunk()))
        live.attach(request.transport)
        await live.done.wait()
        if live.stopped:  # --sim-stop-stream-after: the stream never ends; the client's limits end it
            await asyncio.Event().wait()
        await resp.write_eof()
        return resp
