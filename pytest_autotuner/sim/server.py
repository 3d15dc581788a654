"""The simulated SGLang HTTP server (aiohttp), driven by the same Scheduler as the in-process API.

Time: simulated time 0 is the moment the server becomes ready; a step ending at simulated time ``t`` is
emitted at wall time ``origin + t / speedup``. One asyncio task per dp replica runs the scheduler steps
back to back and sleeps until each step's end, so CPU cost is per step, not per token timer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pytest_autotuner.sim.protocol import (
    RequestError,
    ResponseShape,
    error_body,
    parse_generation,
    sse,
)
from pytest_autotuner.sim.scheduler import Scheduler, SimRequest, chunk_due
from pytest_autotuner.sim.streaming import LiveRequest

if TYPE_CHECKING:
    import argparse

    from pytest_autotuner.sim.perf_model import EngineConfig, MemoryPlan
    from pytest_autotuner.sim.protocol import Api, GenerationRequest

__all__ = ["SimServer"]

logger = logging.getLogger(__name__)

_MEAN_NATURAL_LENGTH = 256  # without ignore_eos, a request stops after ~Exp(256) tokens (seeded)
_PREFIX_COMPARE_WORDS = 8192
# epoll waits in whole milliseconds (rounded up): aiming half a millisecond early centres the emission error.
_TIMER_EARLY = 0.0005


class SimServer:
    """Scheduler replicas + the HTTP handlers; ``ready`` flips when the simulated startup ends."""

    def __init__(
        self, *, args: argparse.Namespace, config: EngineConfig, memory: MemoryPlan, info: dict[str, Any]
    ) -> None:
        self.args = args
        self.config = config
        self.info = info
        self.speedup: float = args.sim_speedup
        self.served_model: str = info["served_model_name"]
        seed = args.sim_seed if args.sim_seed is not None else (args.random_seed or 0)
        self.schedulers = [
            Scheduler(config=config, memory=memory, seed=seed, noise=args.sim_noise, replica=i)
            for i in range(config.dp)
        ]
        self._rng = random.Random(f"lengths:{seed}")
        self._wakeups = [asyncio.Event() for _ in self.schedulers]
        self._latest_submit = [0.0] * config.dp
        self._live: dict[int, LiveRequest] = {}
        self.timeline: list[SimRequest] = []
        self.ready = False
        self.hung = False
        self._origin = 0.0
        self._generation_requests = 0
        self._streams = 0
        self._prev_words: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._lag: list[float] = []  # wall seconds each step was emitted after its due time

    # -- clock and drivers ---------------------------------------------------------------------------

    def sim_now(self) -> float:
        return (asyncio.get_running_loop().time() - self._origin) * self.speedup

    def start(self) -> None:
        """Mark the server ready: simulated time starts now and the replica drivers run."""
        self._origin = asyncio.get_running_loop().time()
        self.ready = True
        self._tasks = [asyncio.create_task(self._drive(i)) for i in range(len(self.schedulers))]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _drive(self, index: int) -> None:
        sched, wake = self.schedulers[index], self._wakeups[index]
        loop = asyncio.get_running_loop()
        clock = 0.0
        while True:
            if not sched.busy or self.hung:
                wake.clear()
                await wake.wait()
                # The GPU was idle: the step starts when the first new request was queued, not when we woke.
                clock = max(clock, self._latest_submit[index])
                continue
            # When the loop lagged behind, a step must not start before the requests it admits arrived.
            outcome = sched.step(max(clock, self._latest_submit[index]))
            delay = self._origin + outcome.end / self.speedup - loop.time()
            await asyncio.sleep(max(0.0, delay - _TIMER_EARLY))
            self._lag.append(loop.time() - (self._origin + outcome.end / self.speedup))
            clock = outcome.end
            interval = self.config.stream_interval
            for req in outcome.produced:
                live = self._live.get(req.rid)
                if live is not None and chunk_due(req.generated, req.output_tokens, interval):
                    live.advance(req.generated)

    def _submit(self, gen: GenerationRequest, now: float) -> LiveRequest:
        cached = 0
        for a, b in zip(self._prev_words[:_PREFIX_COMPARE_WORDS], gen.prompt_words, strict=False):
            if a != b:
                break
            cached += 1
        self._prev_words = gen.prompt_words
        rid = len(self.timeline)
        if gen.ignore_eos:
            n_out = gen.max_tokens
        else:
            n_out = min(gen.max_tokens, 1 + int(self._rng.expovariate(1.0 / _MEAN_NATURAL_LENGTH)))
        index = rid % len(self.schedulers)
        sim = SimRequest(
            rid=rid,
            arrival=now,
            input_tokens=gen.input_tokens,
            output_tokens=n_out,
            max_new_tokens=gen.max_tokens,
            cached_prefix=cached,
        )
        reason = self.schedulers[index].reject_reason(sim)
        if reason is not None:
            raise RequestError(reason)
        shape = ResponseShape(gen, f"{'chatcmpl' if gen.api == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}")
        malformed = False
        if gen.stream:
            self._streams += 1
            every = self.args.sim_malformed_sse_every
            malformed = every is not None and self._streams % every == 0
        live = LiveRequest(sim, shape, malformed=malformed)
        self._live[rid] = live
        self.timeline.append(sim)
        self._latest_submit[index] = self.sim_now()
        self.schedulers[index].submit(sim)
        self._wakeups[index].set()
        return live

    # -- HTTP ----------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/health_generate", self.health_generate)
        r.add_get("/v1/models", self.models)
        r.add_get("/server_info", self.server_info)
        r.add_get("/get_server_info", self.server_info)
        r.add_get("/get_model_info", self.model_info)
        r.add_post("/v1/chat/completions", self.chat)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/generate", self.generate)
        r.add_route("*", "/flush_cache", self.flush_cache)
        r.add_get("/sim/timeline", self.sim_timeline)
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
        sched = self.schedulers[0]
        sim = SimRequest(rid=-1, arrival=self.sim_now(), input_tokens=1, output_tokens=1)
        sched.submit(sim)
        self._wakeups[0].set()
        while sim.finish_time is None:
            await asyncio.sleep(0.01)
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": self.served_model, "object": "model", "owned_by": "sglang", "root": self.served_model}]
        return web.json_response({"object": "list", "data": data})

    async def server_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.info)

    async def model_info(self, request: web.Request) -> web.Response:
        return web.json_response({"model_path": self.args.model_path, "is_generation": True})

    async def flush_cache(self, request: web.Request) -> web.Response:
        for sched in self.schedulers:
            sched.flush_cache()
        self._prev_words = []
        return web.Response(text="Cache flushed.\n")

    async def sim_timeline(self, request: web.Request) -> web.Response:
        rows = [
            {
                "rid": r.rid,
                "replica": r.replica,
                "arrival": r.arrival,
                "first_token": r.first_token_time,
                "finish": r.finish_time,
                "input_tokens": r.input_tokens,
                "output_tokens": r.generated,
                "cached_prefix": r.cached_prefix,
            }
            for r in self.timeline
        ]
        lag = sorted(self._lag) or [0.0]
        emission = {"steps": len(self._lag), "p50": lag[len(lag) // 2], "max": lag[-1]}
        return web.json_response({"speedup": self.speedup, "emission_lag": emission, "requests": rows})

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
        if args.sim_hang_after is not None and n > args.sim_hang_after and not self.hung:
            logger.warning("simulated hang after %d requests", args.sim_hang_after)
            self.hung = True
        if n <= args.sim_http_500_burst:
            return web.json_response(error_body("Internal server error (simulated burst)", 500), status=500)
        return None

    async def _generation(self, api: Api, request: web.Request) -> web.StreamResponse:
        # Stamp the arrival, then let the other requests of a burst stamp theirs before anyone parses: the
        # parsing delay then shows in the timeline (the request reaches the scheduler later) as it does
        # for the client, instead of shifting the arrival stamps.
        arrival = self.sim_now()
        await asyncio.sleep(0)
        if not self.ready:
            return web.json_response(error_body("The server is not ready yet.", 503), status=503)
        fault = self._count_and_inject_faults()
        if fault is not None:
            return fault
        await self._hang_if_needed()
        try:
            gen = parse_generation(api, await request.read(), self.served_model)
            live = self._submit(gen, arrival)
        except RequestError as exc:
            return web.json_response(error_body(str(exc)), status=400)
        try:
            if gen.stream:
                return await self._stream(request, live)
            await live.done.wait()
            body = live.shape.full_body(live.text(0, live.sent), live.sent, live.finish_reason)
            return web.json_response(body)
        finally:
            self._live.pop(live.sim.rid, None)

    async def _stream(self, request: web.Request, live: LiveRequest) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if live.shape.req.api == "chat":
            await resp.write(sse(live.shape.role_chunk()))
        live.attach(request.transport)
        await live.done.wait()
        await resp.write_eof()
        return resp
