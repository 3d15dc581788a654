"""Continuous batching on one data-parallel replica, in simulated seconds.

One ``step(start)`` call runs one scheduler iteration and returns when it ends. Rules (a simplification of
SGLang's scheduler, documented so results can be read):

- A prefill batch takes the in-progress chunked request first, then waiting requests in policy order while
  max-running-requests and the KV pool allow (KV need = prompt + remaining max_new_tokens x new_token_ratio,
  the ratio decaying from 0.7 x conservativeness as SGLang does). Its token budget is chunked-prefill-size
  (prompts are split at it), or max-prefill-tokens when chunking is disabled (whole prompts, at least one).
- A request's first token comes at the end of the step that prefills its last prompt token.
- Prefill first: whenever a prefill batch can be formed (a chunked request to continue, or waiting requests
  that fit) the step is a prefill step, else a decode step, as SGLang's ``Scheduler.get_next_batch_to_run``
  ("Run prefill first if possible", ``python/sglang/srt/managers/scheduler.py``, 0.5.2). So without
  --enable-mixed-chunk a long prompt's chunks run back to back and decoding requests wait for all of them;
  with it, every prefill step also advances all decoding requests.
- When a decode step would overflow the KV pool, the most recently admitted request is retracted: its KV is
  freed and it re-queues at the front, to re-prefill prompt + generated tokens.
- Radix cache (``radix_cache.py``, SGLang's RadixAttention), under every policy unless
  ``--disable-radix-cache``: a request admitted to a prefill batch takes the longest cached prefix of its tokens
  (at most all but the last prompt token, as SGLang's ``max_prefix_len``), locks it, and computes only the rest;
  what it prefilled is inserted into the tree when its prefill (or a chunk of it) ends, so requests admitted
  later share it while it still runs (SGLang's ``cache_unfinished_req``); prompt + output go in when it
  finishes (``cache_finished_req``). Cached tokens occupy the KV pool: the pool holds the requests' own tokens
  plus the tree, admission counts unlocked tree tokens as free, and allocation evicts unlocked leaves, least
  recently used first. ``cached_tokens`` is the prefix hit of the request's first admission (what SGLang
  reports as ``prompt_tokens_details.cached_tokens``).
- ``lpm`` orders the waiting queue by the longest cached prefix (``match_length``), and deprioritises a request
  whose own match is at most 32 tokens when an earlier waiting request shares its first 32 tokens (SGLang's
  in-batch prefix caching: one request of a new group computes the shared prefix, the others then hit it). It
  falls back to fcfs when more than 128 requests wait, and becomes fcfs when the radix cache is disabled, as
  SGLang's ``SchedulePolicy`` does (``_determine_active_policy``, ``_validate_and_adjust_policy``).
  ``dfs-weight`` is simulated as ``lpm``.

Why one module of about 470 lines: the scheduler's rules (above) and the code that applies them, read together.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_autotuner.core.spec.tokens import OUTPUT_WORDS
from pytest_autotuner.sim.perf_model import make_step_cost
from pytest_autotuner.sim.radix_cache import RadixCache, RadixNode

if TYPE_CHECKING:
    from pytest_autotuner.sim.perf_model import EngineConfig, MemoryPlan

__all__ = ["OUTPUT_WORDS", "Scheduler", "SimRequest", "StepOutcome", "chunk_due", "stream_chunk_sizes"]

_PREFIX_POLICIES = ("lpm", "dfs-weight")
_LPM_MAX_QUEUE = 128  # SGLang: lpm falls back to fcfs above this many waiting requests
_IN_BATCH_CHECK = 32  # SGLang's IN_BATCH_PREFIX_CACHING_CHECK_THRESHOLD (and DEPRIORITIZE_THRESHOLD)


def stream_chunk_sizes(output_tokens: int, interval: int) -> list[int]:
    """Tokens per streamed chunk: the first token alone, then ``interval`` at a time, then the rest."""
    if output_tokens <= 0:
        return []
    rest = output_tokens - 1
    return [1] + [interval] * (rest // interval) + ([rest % interval] if rest % interval else [])


def chunk_due(generated: int, output_tokens: int, interval: int, sent: int | None = None) -> bool:
    """Whether the token count ``generated`` closes a streamed chunk (see stream_chunk_sizes). With ``sent`` (the
    tokens already streamed) a step that produced several tokens (speculative decoding) closes a chunk when it
    crossed a chunk boundary, not only when it landed on one."""
    if generated == 1 or generated >= output_tokens:
        return True
    if sent is not None and generated - sent > 1:
        return sent == 0 or (generated - 1) // interval > (sent - 1) // interval
    return (generated - 1) % interval == 0


@dataclass(eq=False)
class SimRequest:
    """One generation request and what happened to it, in simulated seconds."""

    rid: int
    arrival: float
    input_tokens: int
    output_tokens: int  # tokens it will generate (max_new_tokens, or an earlier stop without ignore_eos)
    max_new_tokens: int = 0  # what the KV reservation assumes; defaults to output_tokens
    tokens: tuple[Hashable, ...] | None = None  # the prompt's tokens (radix cache keys); None: unique to it
    #: the cache key of each generated token, cycling (``tokens.output_keys``: words, or a tokenizer's ids)
    output_keys: tuple[Hashable, ...] = OUTPUT_WORDS
    cached_tokens: int = 0  # prompt tokens its first admission found in the radix cache
    priority: int = 0
    replica: int = 0
    token_times: list[float] = field(default_factory=list)
    finish_time: float | None = None
    #: start of the step that first admitted it to a prefill batch (its queueing ends, its prefill begins)
    prefill_start: float | None = None
    retractions: int = 0
    # Scheduler state of the current admission.
    prefill_target: int = 0
    prefilled: int = 0
    context: int = 0  # KV tokens held
    cache_len: int = 0  # of which in the radix tree (locked at ``node``)
    node: RadixNode | None = None
    admitted: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            self.max_new_tokens = self.output_tokens

    def key(self, n: int) -> tuple[Hashable, ...]:
        """The first ``n`` tokens of prompt + output, as cache keys."""
        if self.tokens is None:  # unique: only its first token must differ from every other sequence's
            self.tokens = (("unique", id(self)), *range(1, self.input_tokens))
        if n <= len(self.tokens):
            return self.tokens[:n]
        out = n - len(self.tokens)
        keys = self.output_keys
        return self.tokens + tuple(keys[i % len(keys)] for i in range(out))

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


#: SGLang's buckets of ``sglang:queue_time_seconds`` (seconds)
QUEUE_TIME_BUCKETS = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0,
                      80.0, 90.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 900.0, 1000.0, 1200.0,
                      1400.0, 1600.0, 1800.0, 2000.0, 2500.0, 3000.0)  # fmt: skip


@dataclass
class QueueTimeHistogram:
    """A Prometheus histogram: the count and sum of the observations, and per bucket the count at or below it."""

    total: float = 0.0
    count: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * len(QUEUE_TIME_BUCKETS))

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.total += seconds
        self.count += 1
        for i, bound in enumerate(QUEUE_TIME_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1


class Scheduler:
    """The scheduler of one replica; deterministic for a given seed and arrival sequence."""

    def __init__(
        self, *, config: EngineConfig, memory: MemoryPlan, seed: int = 0, noise: float = 0.0, replica: int = 0
    ) -> None:
        self.config = config
        self._cost = make_step_cost(config)
        self.capacity = memory.max_total_num_tokens
        self.max_running = memory.max_running_requests
        self.replica = replica
        # The run factor is shared by all replicas of one server run; per-step jitter is per replica.
        self._run_factor = math.exp(random.Random(f"run:{seed}").gauss(0.0, noise)) if noise > 0 else 1.0
        self._rng = random.Random(f"{seed}:{replica}")
        self._spec_rng = random.Random(f"spec:{seed}:{replica}")  # accepted draft lengths, apart from the jitter
        self._jitter = noise
        self.waiting: deque[SimRequest] = deque()
        self.prefilling: SimRequest | None = None  # a partially prefilled (chunked) request
        self.running: list[SimRequest] = []
        self.cache = None if config.disable_radix_cache else RadixCache()
        self._private = 0  # KV tokens of admitted requests outside the radix tree
        self._reserved = 0  # sum of remaining_reserve over admitted requests
        cons = config.schedule_conservativeness
        self._init_ratio = min(1.0, 0.7 * cons)
        self._min_ratio = min(self._init_ratio, 0.14 * cons)
        self._ratio = self._init_ratio
        self._decay = (self._init_ratio - self._min_ratio) / 600
        self.steps = 0
        # SGLang's ``sglang:queue_time_seconds`` histogram (--enable-metrics): arrival to admission, observed
        # when a request is first admitted to a prefill batch
        self.queue_times = QueueTimeHistogram()

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

    @property
    def kv_used(self) -> int:
        """KV pool tokens in use: the requests' own plus the radix tree's (evictable or not)."""
        return self._private + (self.cache.total if self.cache is not None else 0)

    @property
    def _evictable(self) -> int:
        return self.cache.evictable if self.cache is not None else 0

    def flush_cache(self) -> bool:
        """Empty the radix cache, as SGLang's /flush_cache does only when no request is in flight."""
        if self.busy:
            return False
        if self.cache is not None:
            self.cache.reset()
        return True

    def _make_room(self, tokens: int) -> None:
        """Evict unlocked cache entries until ``tokens`` more fit in the pool (when they can)."""
        short = self.kv_used + tokens - self.capacity
        if short > 0 and self.cache is not None:
            self.cache.evict(short)

    # -- one iteration -------------------------------------------------------------------------------

    def step(self, start: float) -> StepOutcome:
        """Run one iteration beginning at simulated time ``start``."""
        batch = self._prefill_batch()  # prefill first whenever a prefill batch can be formed, as SGLang
        if batch:
            for req, _ in batch:
                if req.prefill_start is None:  # a retracted request's re-prefill keeps its first admission
                    req.prefill_start = start
                    self.queue_times.observe(start - req.arrival)
            outcome = self._run_prefill(start, batch)
        elif self.running:
            outcome = self._run_decode(start)
        else:
            outcome = StepOutcome(start, start, [], [])
        self.steps += 1
        return outcome

    def _ordered_waiting(self) -> list[SimRequest] | deque[SimRequest]:
        policy = self.config.schedule_policy
        if policy == "fcfs" or len(self.waiting) < 2:
            return self.waiting
        if policy in _PREFIX_POLICIES:
            if self.cache is None or len(self.waiting) > _LPM_MAX_QUEUE:
                return self.waiting
            return self._longest_prefix_first(self.cache)
        if policy == "lof":
            return sorted(self.waiting, key=lambda r: -r.max_new_tokens)
        if policy == "priority":
            return sorted(self.waiting, key=lambda r: r.priority)
        shuffled = list(self.waiting)
        self._rng.shuffle(shuffled)
        return shuffled

    def _longest_prefix_first(self, cache: RadixCache) -> list[SimRequest]:
        seen: set[tuple[Hashable, ...]] = set()
        keys: dict[int, float] = {}
        for req in self.waiting:
            match = cache.match_length(req.key(req.prefill_target - 1))
            keys[id(req)] = -match
            if match <= _IN_BATCH_CHECK and req.prefill_target > _IN_BATCH_CHECK:
                head = req.key(_IN_BATCH_CHECK)
                if head in seen:
                    keys[id(req)] = math.inf
                seen.add(head)
        return sorted(self.waiting, key=lambda r: keys[id(r)])

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
        # Unlocked cache entries count as free: allocation evicts them (SGLang's PrefillAdder does the same).
        free = self.capacity - self.kv_used + self._evictable - int(self._reserved * self._ratio)
        taken: list[SimRequest] = []
        for req in self._ordered_waiting():
            if admitted >= self.max_running or budget <= 0:
                break
            hit, node = 0, None
            if self.cache is not None:
                hit, node = self.cache.match(req.key(req.prefill_target - 1))
                before = self.cache.evictable
                self.cache.lock(node)
                free -= before - self.cache.evictable  # the matched path is no longer evictable
            todo = req.prefill_target - hit
            need = todo + int(req.remaining_reserve * self._ratio)
            idle = admitted == 0 and self._private == 0
            if (need > free and not (idle and req.prefill_target < self.capacity)) or (
                not chunking and todo > budget and batch
            ):
                if self.cache is not None and node is not None:
                    self.cache.unlock(node)
                break
            take = min(todo, budget) if chunking else todo
            if not req.admitted:
                req.admitted, req.cached_tokens = True, hit
            req.prefilled = hit
            req.context = req.cache_len = hit
            req.node = node
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
        if self.config.distortion is not None:
            seconds = self.config.distortion.step(seconds, prefill=True, waiting=len(self.waiting))
        end = start + self._noisy(seconds)
        produced: list[SimRequest] = []
        finished: list[SimRequest] = []
        if mixed:
            self._advance_decoders(end, produced, finished)
        self.prefilling = None
        self._make_room(tokens)
        for req, take in batch:
            req.prefilled += take
            req.context += take
            self._private += take
            self._cache_prefilled(req)
            if req.prefilled < req.prefill_target:
                self.prefilling = req
                continue
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
        spec = self.config.speculation
        per_request = spec.draft_tokens if spec is not None else 1  # KV slots a step needs per request
        # Retract until the new tokens fit once unlocked cache entries are evicted: a retracted request's cached
        # prefix stays in the tree (evictable), so counting the tree as used would retract every request.
        while self.running and self.kv_used - self._evictable + len(self.running) * per_request > self.capacity:
            self._retract(self.running[-1])
        self._make_room(len(self.running) * per_request)
        context = sum(r.context for r in self.running)
        batch = len(self.running)
        if spec is None:
            seconds = self._cost(decode_batch=batch, decode_context=context)
        else:
            # drafting: num_steps passes over batch x topk tokens, each a fraction of a target pass; verifying:
            # one target pass over batch x draft_tokens tokens that reads each request's KV once
            draft = spec.num_steps * spec.draft_fraction * self._cost(decode_batch=batch * spec.topk,
                                                                        decode_context=context)  # fmt: skip
            seconds = draft + self._cost(decode_batch=batch * spec.draft_tokens, decode_context=context)
        if self.config.distortion is not None:
            seconds = self.config.distortion.step(seconds, prefill=False, waiting=len(self.waiting))
        end = start + self._noisy(seconds)
        produced: list[SimRequest] = []
        finished: list[SimRequest] = []
        self._advance_decoders(end, produced, finished)
        self._ratio = max(self._min_ratio, self._ratio - self._decay)
        return StepOutcome(start, end, produced, finished)

    def _cache_prefilled(self, req: SimRequest) -> None:
        """Insert what ``req`` has prefilled into the tree; its own copy of tokens already there is freed."""
        if self.cache is None or req.prefilled <= req.cache_len:
            return
        _, node = self.cache.insert(req.key(req.prefilled))
        self.cache.lock(node)
        if req.node is not None:
            self.cache.unlock(req.node)
        self._private -= req.prefilled - req.cache_len
        req.node, req.cache_len = node, req.prefilled

    def _release(self, req: SimRequest, *, keep: bool) -> None:
        """Give back ``req``'s KV: its whole sequence goes into the tree when ``keep`` (a finished request)."""
        self._private -= req.context - req.cache_len  # its tokens outside the tree: into it, or freed
        if self.cache is not None:
            if keep:
                self.cache.insert(req.key(req.context))
            if req.node is not None:
                self.cache.unlock(req.node)
        req.node, req.context, req.cache_len = None, 0, 0

    def _advance_decoders(self, end: float, produced: list[SimRequest], finished: list[SimRequest]) -> None:
        still: list[SimRequest] = []
        spec = self.config.speculation
        n = 0
        for req in self.running:
            tokens = 1 if spec is None else spec.draw(self._spec_rng, req.output_tokens - req.generated)
            req.token_times.extend([end] * tokens)
            req.context += tokens
            n += tokens
            produced.append(req)
            if req.generated >= req.output_tokens:
                self._finish(req, end, finished)
            else:
                still.append(req)
        self._private += n
        self._reserved -= n
        self.running = still

    def _finish(self, req: SimRequest, end: float, finished: list[SimRequest]) -> None:
        req.finish_time = end
        self._reserved -= req.remaining_reserve
        self._release(req, keep=True)
        finished.append(req)

    def _retract(self, req: SimRequest) -> None:
        self.running.remove(req)
        self._reserved -= req.remaining_reserve
        self._release(req, keep=False)
        req.prefilled = 0
        req.prefill_target = req.input_tokens + req.generated
        req.retractions += 1
        self.waiting.appendleft(req)
        self._ratio = min(1.0, self._ratio + 0.1)
