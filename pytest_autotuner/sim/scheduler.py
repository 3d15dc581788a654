"""Continuous batching on one data-parallel replica, in simulated seconds.

One ``step(start)`` call runs one scheduler iteration and returns when it ends. Rules (a simplification of
SGLang's scheduler, documented so results can be read):

- A prefill batch takes the in-progress chunked request first, then waiting requests in policy order while
  max-running-requests and the KV pool allow (KV need = prompt + remaining max_new_tokens x new_token_ratio,
  the ratio decaying from 0.7 x conservativeness as SGLang does). Its token budget is chunked-prefill-size
  (prompts are split at it), or max-prefill-tokens when chunking is disabled (whole prompts, at least one).
- A request's first token comes at the end of the step that prefills its last prompt token.
- Without --enable-mixed-chunk, prefill and decode steps alternate while both have work, so one prefill
  chunk is the longest decode stall; with it, every prefill step also advances all decoding requests.
- When a decode step would overflow the KV pool, the most recently admitted request is retracted: its KV is
  freed and it re-queues at the front, to re-prefill prompt + generated tokens.
- Prefix cache: under ``lpm``/``dfs-weight`` a request's shared prefix (``cached_prefix``) is taken from the
  cache once an earlier request has prefilled it, so only the rest is computed. Other policies get no reuse.
  Ordering by prefix falls back to FCFS when more than 128 requests wait, as SGLang's lpm does.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_autotuner.sim.perf_model import StepCost

if TYPE_CHECKING:
    from pytest_autotuner.sim.perf_model import EngineConfig, MemoryPlan

__all__ = ["Scheduler", "SimRequest", "StepOutcome", "chunk_due", "stream_chunk_sizes"]

_PREFIX_POLICIES = ("lpm", "dfs-weight")
_LPM_MAX_QUEUE = 128


def stream_chunk_sizes(output_tokens: int, interval: int) -> list[int]:
    """Tokens per streamed chunk: the first token alone, then ``interval`` at a time, then the rest."""
    if output_tokens <= 0:
        return []
    rest = output_tokens - 1
    return [1] + [interval] * (rest // interval) + ([rest % interval] if rest % interval else [])


def chunk_due(generated: int, output_tokens: int, interval: int) -> bool:
    """Whether the token count ``generated`` closes a streamed chunk (see stream_chunk_sizes)."""
    return generated == 1 or (generated - 1) % interval == 0 or generated >= output_tokens


@dataclass(eq=False)
class SimRequest:
    """One generation request and what happened to it, in simulated seconds."""

    rid: int
    arrival: float
    input_tokens: int
    output_tokens: int  # tokens it will generate (max_new_tokens, or an earlier stop without ignore_eos)
    max_new_tokens: int = 0  # what the KV reservation assumes; defaults to output_tokens
    cached_prefix: int = 0  # prompt tokens shared with other requests' prompts
    priority: int = 0
    replica: int = 0
    token_times: list[float] = field(default_factory=list)
    finish_time: float | None = None
    retractions: int = 0
    # Scheduler state of the current admission.
    prefill_target: int = 0
    prefilled: int = 0
    context: int = 0  # KV tokens held

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            self.max_new_tokens = self.output_tokens

    @property
    def generated(self) -> int:
        return len(self.token_times)

    @property
    def first_token_time(self) -> float | None:
        return self.token_times[0] if self.token_times else None

    @property
    def remaining_reserve(self) -> int:
        return max(0, self.max_new_tokens - self.generated)


@dataclass
class StepOutcome:
    start: float
    end: float
    produced: list[SimRequest]  # requests that got a token at ``end``
    finished: list[SimRequest]


class Scheduler:
    """The scheduler of one replica; deterministic for a given seed and arrival sequence."""

    def __init__(
        self, *, config: EngineConfig, memory: MemoryPlan, seed: int = 0, noise: float = 0.0, replica: int = 0
    ) -> None:
        self.config = config
        self._cost = StepCost(config)
        self.capacity = memory.max_total_num_tokens
        self.max_running = memory.max_running_requests
        self.replica = replica
        # The run factor is shared by all replicas of one server run; per-step jitter is per replica.
        self._run_factor = math.exp(random.Random(f"run:{seed}").gauss(0.0, noise)) if noise > 0 else 1.0
        self._rng = random.Random(f"{seed}:{replica}")
        self._jitter = noise
        self.waiting: deque[SimRequest] = deque()
        self.prefilling: SimRequest | None = None  # a partially prefilled (chunked) request
        self.running: list[SimRequest] = []
        self.kv_used = 0
        self._reserved = 0  # sum of remaining_reserve over admitted requests
        cons = config.schedule_conservativeness
        self._init_ratio = min(1.0, 0.7 * cons)
        self._min_ratio = min(self._init_ratio, 0.14 * cons)
        self._ratio = self._init_ratio
        self._decay = (self._init_ratio - self._min_ratio) / 600
        self._prefix_cached = 0
        self._last_was_prefill = False
        self.steps = 0

    def reject_reason(self, req: SimRequest) -> str | None:
        """Why SGLang would refuse this request up front (HTTP 400), or None."""
        total = req.input_tokens + req.max_new_tokens
        if total > self.config.context_len:
            return (
                f"Requested token count exceeds the model's maximum context length of "
                f"{self.config.context_len} tokens. You requested a total of {total} tokens: "
                f"{req.input_tokens} tokens from the input messages and {req.max_new_tokens} tokens for the "
                "completion. Please reduce the number of tokens in the input messages or the completion "
                "to fit within the limit."
            )
        if req.input_tokens + 1 > self.capacity:
            return f"The input ({req.input_tokens} tokens) is longer than the KV cache ({self.capacity} tokens)."
        return None

    def submit(self, req: SimRequest) -> None:
        req.replica = self.replica
        req.prefill_target = req.input_tokens
        self.waiting.append(req)

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.prefilling or self.running)

    def flush_cache(self) -> None:
        self._prefix_cached = 0

    # -- one iteration -------------------------------------------------------------------------------

    def step(self, start: float) -> StepOutcome:
        """Run one iteration beginning at simulated time ``start``."""
        cfg = self.config
        want_decode = bool(self.running) and (self._last_was_prefill and not cfg.enable_mixed_chunk)
        batch = [] if want_decode else self._prefill_batch()
        if batch:
            outcome = self._run_prefill(start, batch)
        elif self.running:
            outcome = self._run_decode(start)
        else:
            outcome = StepOutcome(start, start, [], [])
        self._last_was_prefill = bool(batch)
        self.steps += 1
        return outcome

    def _ordered_waiting(self) -> list[SimRequest] | deque[SimRequest]:
        policy = self.config.schedule_policy
        if policy == "fcfs" or len(self.waiting) < 2:
            return self.waiting
        if policy in _PREFIX_POLICIES:
            if len(self.waiting) > _LPM_MAX_QUEUE:
                return self.waiting
            return sorted(self.waiting, key=lambda r: -min(r.cached_prefix, self._prefix_cached))
        if policy == "lof":
            return sorted(self.waiting, key=lambda r: -r.max_new_tokens)
        if policy == "priority":
            return sorted(self.waiting, key=lambda r: r.priority)
        shuffled = list(self.waiting)
        self._rng.shuffle(shuffled)
        return shuffled

    def _prefill_batch(self) -> list[tuple[SimRequest, int]]:
        """(request, tokens to prefill this step) of the next prefill batch."""
        cfg = self.config
        chunking = cfg.chunked_prefill_size > 0
        budget = min(cfg.chunked_prefill_size, cfg.max_prefill_tokens) if chunking else cfg.max_prefill_tokens
        batch: list[tuple[SimRequest, int]] = []
        if self.prefilling is not None:
            req = self.prefilling
            take = min(budget, req.prefill_target - req.prefilled) if chunking else req.prefill_target
            batch.append((req, take))
            budget -= take
        if budget <= 0 or not self.waiting:
            return batch
        admitted = len(self.running) + len(batch)
        free = self.capacity - self.kv_used - int(self._reserved * self._ratio)
        taken: list[SimRequest] = []
        for req in self._ordered_waiting():
            if admitted >= self.max_running or budget <= 0:
                break
            hit = 0
            if cfg.schedule_policy in _PREFIX_POLICIES and req.retractions == 0:
                hit = min(req.cached_prefix, self._prefix_cached, req.prefill_target - 1)
            todo = req.prefill_target - hit
            need = todo + int(req.remaining_reserve * self._ratio)
            idle = admitted == 0 and self.kv_used == 0
            if need > free and not (idle and req.prefill_target < self.capacity):
                break
            if not chunking and todo > budget and batch:
                break
            take = min(todo, budget) if chunking else todo
            req.prefilled = hit
            req.context = hit
            self.kv_used += hit
            self._reserved += req.remaining_reserve
            free -= need
            budget -= take
            admitted += 1
            batch.append((req, take))
            taken.append(req)
        for req in taken:
            self.waiting.remove(req)
        return batch

    def _noisy(self, seconds: float) -> float:
        if self._jitter <= 0:
            return seconds
        return seconds * self._run_factor * max(0.5, 1.0 + self._rng.gauss(0.0, self._jitter))

    def _run_prefill(self, start: float, batch: list[tuple[SimRequest, int]]) -> StepOutcome:
        mixed = self.config.enable_mixed_chunk and bool(self.running)
        tokens = pairs = ctx = 0
        for req, take in batch:
            p = req.prefilled
            tokens += take
            pairs += take * p + take * (take + 1) // 2
            ctx += p + take
        decoders = self.running if mixed else []
        seconds = self._cost(
            decode_batch=len(decoders),
            decode_context=sum(r.context for r in decoders),
            prefill_tokens=tokens,
            prefill_attention_pairs=pairs,
            prefill_context=ctx,
        )
        end = start + self._noisy(seconds)
        produced: list[SimRequest] = []
        finished: list[SimRequest] = []
        if mixed:
            self._advance_decoders(end, produced, finished)
        self.prefilling = None
        for req, take in batch:
            req.prefilled += take
            req.context += take
            self.kv_used += take
            if req.prefilled < req.prefill_target:
                self.prefilling = req
                continue
            if req.cached_prefix:
                self._prefix_cached = max(self._prefix_cached, min(req.cached_prefix, req.input_tokens))
            if req.generated == 0:  # a retracted request already had its first token
                req.token_times.append(end)
                self._reserved -= 1
                produced.append(req)
            if req.generated >= req.output_tokens:
                self._finish(req, end, finished)
            else:
                self.running.append(req)
        return StepOutcome(start, end, produced, finished)

    def _run_decode(self, start: float) -> StepOutcome:
        while self.running and self.kv_used + len(self.running) > self.capacity:
            self._retract(self.running[-1])
        seconds = self._cost(decode_batch=len(self.running), decode_context=self.kv_used - self._prefill_context())
        end = start + self._noisy(seconds)
        produced: list[SimRequest] = []
        finished: list[SimRequest] = []
        self._advance_decoders(end, produced, finished)
        self._ratio = max(self._min_ratio, self._ratio - self._decay)
        return StepOutcome(start, end, produced, finished)

    def _prefill_context(self) -> int:
        return self.prefilling.context if self.prefilling is not None else 0

    def _advance_decoders(self, end: float, produced: list[SimRequest], finished: list[SimRequest]) -> None:
        still: list[SimRequest] = []
        for req in self.running:
            req.token_times.append(end)
            req.context += 1
            produced.append(req)
            if req.generated >= req.output_tokens:
                self._finish(req, end, finished)
            else:
                still.append(req)
        n = len(self.running)
        self.kv_used += n
        self._reserved -= n
        self.running = still

    def _finish(self, req: SimRequest, end: float, finished: list[SimRequest]) -> None:
        req.finish_time = end
        self.kv_used -= req.context
        self._reserved -= req.remaining_reserve
        req.context = 0
        finished.append(req)

    def _retract(self, req: SimRequest) -> None:
        self.running.remove(req)
        self.kv_used -= req.context
        self._reserved -= req.remaining_reserve
        req.context = req.prefilled = 0
        req.prefill_target = req.input_tokens + req.generated
        req.retractions += 1
        self.waiting.appendleft(req)
        self._ratio = min(1.0, self._ratio + 0.1)
