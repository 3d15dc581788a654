"""Run a benchmark plan against the simulator without HTTP: the same scheduler, in simulated time only."""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from pytest_autotuner.core.measure.metrics import BenchResult, CellMetrics, RequestRecord
from pytest_autotuner.core.measure.trial import FailureClass, TrialFailure
from pytest_autotuner.sim.cli import engine_config, params_to_argv, parse_argv, server_info
from pytest_autotuner.sim.distortion import Distortion, Effects
from pytest_autotuner.sim.perf_model import StartupFailure, plan_memory
from pytest_autotuner.sim.scheduler import Scheduler, SimRequest, stream_chunk_sizes

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.plan import BenchmarkPlan
    from pytest_autotuner.core.measure.trial import ParamValue
    from pytest_autotuner.core.spec.scenarios import Scenario
    from pytest_autotuner.sim.perf_model import EngineConfig, MemoryPlan

__all__ = ["ARRIVAL_STREAM", "FAILURE_CLASSES", "run_benchmark_in_process", "simulate_requests"]

ARRIVAL_STREAM = 7  #: ``default_rng([seed, ARRIVAL_STREAM])`` draws a ladder step's Poisson gaps (client too)

FAILURE_CLASSES = {
    "oom": FailureClass.OOM,
    "kv_cache_oom": FailureClass.KV_CACHE_OOM,
    "invalid_parallelism": FailureClass.INVALID_PARALLELISM,
}


def run_benchmark_in_process(
    model: str,
    params: Mapping[str, ParamValue],
    plan: BenchmarkPlan,
    *,
    gpu: str = "h100",
    num_gpus: int = 1,
    seed: int = 0,
    noise: float = 0.0,
    factors: tuple[float, float] | None = None,
) -> BenchResult:
    """Simulate every cell of ``plan`` on a server launched with ``params``; times in simulated seconds.

    The requests (lengths, shared prompts, Poisson arrivals) are drawn from ``plan.seed``, as the benchmark client
    draws them, so every configuration and every repeat sees the same traffic; ``seed`` and ``noise`` are the
    server's (its step-time noise). ``factors`` (prefill, decode) scale its prefill and decode steps, as a
    distortion file's ``prefill`` and ``decode`` do: the screen's model fitted to real trials. Raises ParamError
    (a ValueError) for flags the CLI would reject, and TrialFailure when the server would fail at startup.
    """
    argv = ["--model-path", model, "--sim-gpu", gpu, "--sim-num-gpus", str(num_gpus), "--sim-noise", str(noise)]
    argv += params_to_argv(params)
    args = parse_argv(argv, raising=True)
    cfg = engine_config(args)
    if factors is not None:
        fitted = Effects(prefill=factors[0], decode=factors[1])
        cfg = dataclasses.replace(cfg, distortion=Distortion(source="fitted factors", effects=fitted))
    try:
        memory = plan_memory(cfg)
    except StartupFailure as exc:
        raise TrialFailure(FAILURE_CLASSES[exc.kind], exc.message) from None
    cells = []
    for index, (scenario, concurrency, rate) in enumerate(plan.cells()):
        if scenario.chat is not None or scenario.dataset is not None:
            raise ValueError(
                f"{scenario.text!r}: multi-turn and dataset traffic need the benchmark client (their prompts carry "
                "the replies or the file's text); run it against the simulator process (`runtime: sim`)"
            )
        # the traffic is the plan's, as the client's: the same prompts for every trial (``seed`` is the server's)
        rng = np.random.default_rng([plan.seed, 0 if plan.common_arrivals else index])
        cells.append(_simulate_cell(cfg, memory, plan, scenario, concurrency, rate, rng=rng, seed=seed,
                                    noise=args.sim_noise))  # fmt: skip  # a distortion file may replace it
    return BenchResult(cells, server_info(args, cfg, memory))


def simulate_requests(
    cfg: EngineConfig,
    memory: MemoryPlan,
    *,
    seed: int,
    noise: float,
    next_arrivals: Callable[[SimRequest | None, float], list[SimRequest]],
) -> list[SimRequest]:
    """Discrete-event run over the dp replicas; ``next_arrivals(finished_or_None, now)`` feeds traffic.

    It is called once with None at time 0, then once per finished or rejected request. Requests are
    round-robined over replicas in arrival order. Returns every request, rejected ones with no tokens.

    A request arriving at the instant a step begins joins the step after it; an idle replica starts a step when
    one request arrives, with that request only (``server.py``: a client's requests are never simultaneous).
    """
    replicas = [Scheduler(config=cfg, memory=memory, seed=seed, noise=noise, replica=i) for i in range(cfg.schedulers)]
    clocks = [0.0] * cfg.schedulers
    heap: list[tuple[float, int, SimRequest]] = []
    seq = itertools.count()
    everything: list[SimRequest] = []
    robin = itertools.cycle(range(cfg.schedulers))

    def push(reqs: list[SimRequest]) -> None:
        for req in reqs:
            heapq.heappush(heap, (req.arrival, next(seq), req))

    push(next_arrivals(None, 0.0))
    inf = float("inf")
    while True:
        i, step_at = -1, inf
        for j, sched in enumerate(replicas):
            if clocks[j] < step_at and sched.busy:
                i, step_at = j, clocks[j]
        # An arrival at the very instant a step begins misses it (see simulate_requests' doc): strict.
        if heap and heap[0][0] < step_at:
            now, _, req = heapq.heappop(heap)
            everything.append(req)
            target = next(robin)
            sched = replicas[target]
            if sched.reject_reason(req) is not None:
                push(next_arrivals(req, now))
                continue
            if not sched.busy:
                clocks[target] = max(clocks[target], now)
            sched.submit(req)
            continue
        if i < 0:
            break
        outcome = replicas[i].step(clocks[i])
        if outcome.end <= outcome.start and not outcome.produced:
            raise RuntimeError("simulator scheduler made no progress")  # a bug, never a traffic effect
        clocks[i] = outcome.end
        for req in outcome.finished:
            push(next_arrivals(req, outcome.end))
    return everything


def _simulate_cell(
    cfg: EngineConfig,
    memory: MemoryPlan,
    plan: BenchmarkPlan,
    scenario: Scenario,
    concurrency: int,
    rate: float | None,
    *,
    rng: np.random.Generator,
    seed: int,
    noise: float,
) -> CellMetrics:
    total = plan.warmup_requests + plan.max_requests
    lengths = scenario.sample(rng, total)
    prompts = _shared_prompts(scenario, rng, total)
    sent = 0

    def make(at: float) -> SimRequest:
        nonlocal sent
        n_in, n_out = lengths[sent]
        sent += 1
        tokens = prompts[sent - 1] if prompts else None
        return SimRequest(rid=sent - 1, arrival=at, input_tokens=n_in, output_tokens=n_out, tokens=tokens)

    if rate is not None:
        # a ladder step: the same unit-rate arrivals at every load (``BenchmarkPlan.common_arrivals``)
        arrivals = np.random.default_rng([plan.seed, ARRIVAL_STREAM]) if plan.common_arrivals else rng
        gaps = arrivals.exponential(1.0 / rate, total)
        times = np.cumsum(gaps) - gaps[0]
        schedule = [make(float(t)) for t in times if t <= plan.max_time]

        def next_arrivals(done: SimRequest | None, now: float) -> list[SimRequest]:
            return schedule if done is None else []

    else:

        def next_arrivals(done: SimRequest | None, now: float) -> list[SimRequest]:
            if done is None:
                return [make(0.0) for _ in range(min(concurrency, total))]
            if sent < total and now <= plan.max_time:
                return [make(now)]
            return []

    requests = simulate_requests(cfg, memory, seed=seed, noise=noise, next_arrivals=next_arrivals)
    measured = [r for r in requests if r.rid >= plan.warmup_requests]
    records = [_record(r, lengths[r.rid], cfg.stream_interval, open_loop=rate is not None) for r in measured]
    starts = [r.arrival for r in measured]
    ends = [r.finish_time for r in measured if r.finish_time is not None]
    duration = max(ends) - min(starts) if ends and starts else 0.0
    return CellMetrics(scenario.text, concurrency, duration, records, request_rate=rate)


def _shared_prompts(scenario: Scenario, rng: np.random.Generator, n: int) -> list[tuple[Hashable, ...]]:
    """Prompt tokens of a shared-prefix scenario (as the client's prompts share them); empty for other kinds."""
    shared = scenario.shared
    if shared is None:
        return []
    systems: dict[int, tuple[Hashable, ...]] = {}
    prompts = []
    for group, question in shared.assign(rng, n):
        if group not in systems:
            systems[group] = tuple(("system", group, j) for j in range(shared.system))
        prompts.append(systems[group] + tuple(("question", group, question, j) for j in range(shared.question)))
    return prompts


def _record(req: SimRequest, requested: tuple[int, int], interval: int, *, open_loop: bool) -> RequestRecord:
    if req.finish_time is None:
        return RequestRecord(
            send_time=req.arrival,
            requested_input_tokens=requested[0],
            requested_output_tokens=requested[1],
            scheduled_time=req.arrival if open_loop else None,
            error="http_status",
            error_detail="400: request longer than the context or the KV cache",
        )
    sizes = stream_chunk_sizes(req.generated, interval)
    ends = list(itertools.accumulate(sizes))
    times = tuple(req.token_times[e - 1] - req.arrival for e in ends)
    return RequestRecord(
        send_time=req.arrival,
        requested_input_tokens=requested[0],
        requested_output_tokens=requested[1],
        input_tokens=req.input_tokens,
        output_tokens=req.generated,
        ttft=times[0],
        e2e=req.finish_time - req.arrival,
        chunk_times=times,
        chunk_tokens=tuple(sizes),
        scheduled_time=req.arrival if open_loop else None,
        cached_tokens=req.cached_tokens,
        queue_time=None if req.prefill_start is None else req.prefill_start - req.arrival,
    )
