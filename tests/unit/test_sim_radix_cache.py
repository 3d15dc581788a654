"""The simulator's radix cache: matching, sharing, locking and LRU eviction, and how the scheduler uses it."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from pytest_autotuner.sim.cli import engine_config, parse_argv
from pytest_autotuner.sim.perf_model import MemoryPlan, plan_memory
from pytest_autotuner.sim.radix_cache import RadixCache
from pytest_autotuner.sim.scheduler import Scheduler, SimRequest

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def seq(prefix: str, n: int) -> tuple[Hashable, ...]:
    return tuple(f"{prefix}{i}" for i in range(n))


def test_a_shared_prefix_is_stored_once_and_matched_up_to_where_sequences_part() -> None:
    cache = RadixCache()
    assert cache.insert(seq("s", 100) + seq("a", 10))[0] == 110
    assert cache.insert(seq("s", 100) + seq("b", 10))[0] == 10
    assert cache.total == 120
    assert cache.match_length(seq("s", 100) + seq("c", 5)) == 100
    assert cache.match_length(seq("s", 40)) == 40
    assert cache.match(seq("s", 100) + seq("a", 3))[0] == 103  # splits the edge there
    assert cache.total == 120 and cache.match_length(seq("s", 100) + seq("a", 10)) == 110


def test_a_locked_path_is_not_evictable() -> None:
    cache = RadixCache()
    _, node = cache.insert(seq("x", 50))
    cache.lock(node)
    assert cache.evictable == 0
    assert cache.evict(50) == 0 and cache.total == 50
    cache.unlock(node)
    assert cache.evictable == 50 and cache.evict(50) == 50 and cache.total == 0


def test_eviction_frees_the_least_recently_used_leaves_first() -> None:
    cache = RadixCache()
    cache.insert(seq("old", 30))
    cache.insert(seq("new", 30))
    cache.match(seq("old", 30))  # used again: now the most recent
    assert cache.evict(1) == 30
    assert cache.match_length(seq("old", 30)) == 30 and cache.match_length(seq("new", 30)) == 0


def test_evicting_a_leaf_exposes_its_parent_for_eviction() -> None:
    cache = RadixCache()
    cache.insert(seq("s", 20) + seq("a", 5))
    cache.insert(seq("s", 20) + seq("b", 5))
    assert cache.evict(30) == 30 and cache.total == 0


def _scheduler(*flags: str, capacity: int | None = None) -> Scheduler:
    cfg = engine_config(parse_argv(["--model-path", MODEL, *flags]))
    memory = plan_memory(cfg)
    if capacity is not None:
        memory = MemoryPlan(capacity, memory.max_running_requests, memory.available_gpu_mem_gb)
    return Scheduler(config=cfg, memory=memory)


def _run(sched: Scheduler, reqs: list[SimRequest], start: float = 0.0) -> float:
    for req in reqs:
        req.arrival = start
        sched.submit(req)
    t = start
    while sched.busy:
        t = sched.step(t).end
    return t


def _request(rid: int, tokens: tuple[Hashable, ...], out: int = 4) -> SimRequest:
    return SimRequest(rid=rid, arrival=0.0, input_tokens=len(tokens), output_tokens=out, tokens=tokens)


def test_a_repeated_prefix_is_reported_cached_and_skips_prefill() -> None:
    sched = _scheduler()
    first, second = _request(0, seq("s", 2000) + seq("a", 100)), _request(1, seq("s", 2000) + seq("b", 100))
    _run(sched, [first])
    _run(sched, [second], start=10.0)
    assert (first.cached_tokens, second.cached_tokens) == (0, 2000)
    assert second.token_times[0] - 10.0 < 0.5 * first.token_times[0]


def test_disable_radix_cache_caches_nothing() -> None:
    sched = _scheduler("--disable-radix-cache")
    _run(sched, [_request(0, seq("s", 500))])
    again = _request(1, seq("s", 500))
    _run(sched, [again], start=5.0)
    assert again.cached_tokens == 0 and sched.kv_used == 0


def test_finished_requests_stay_in_the_pool_until_room_is_needed() -> None:
    sched = _scheduler(capacity=3000)
    _run(sched, [_request(0, seq("a", 2000))])
    assert sched.kv_used == 2003  # prompt + output (but the last token) kept as evictable cache
    newcomer = _request(1, seq("b", 2000))
    _run(sched, [newcomer], start=5.0)
    assert newcomer.finish_time is not None and sched.kv_used <= 3000
    assert sched.cache is not None and sched.cache.match_length(seq("a", 2000)) < 2000  # evicted for room


def test_the_whole_sequence_goes_into_the_cache_so_the_next_turn_hits_the_history() -> None:
    from pytest_autotuner.sim.scheduler import OUTPUT_WORDS

    sched = _scheduler()
    turn1 = _request(0, seq("t", 300), out=5)
    _run(sched, [turn1])
    history = seq("t", 300) + OUTPUT_WORDS[:5]
    turn2 = _request(1, history + seq("u", 50))
    _run(sched, [turn2], start=5.0)
    assert turn2.cached_tokens == 304  # the last output token has no KV yet (SGLang caches output_ids[:-1])


def _waiting_order(policy: str, *flags: str, waiting: int = 3) -> list[int]:
    """rids in the order the first prefill batch admits them, after one group's prefix got cached."""
    sched = _scheduler("--schedule-policy", policy, "--max-running-requests", "1", *flags)
    _run(sched, [_request(100, seq("hot", 1000) + seq("x", 10))])
    reqs = [_request(i, seq(f"cold{i}", 1010)) for i in range(waiting - 1)]
    reqs.append(_request(waiting - 1, seq("hot", 1000) + seq("y", 10)))
    for req in reqs:
        req.arrival = 5.0
        sched.submit(req)
    order = []
    t = 5.0
    while sched.busy:
        before = {r.rid for r in sched.waiting}
        t = sched.step(t).end
        order += [r.rid for r in reqs if r.rid in before and r not in sched.waiting]
    return order


def test_lpm_admits_the_request_with_the_longest_cached_prefix_first() -> None:
    assert _waiting_order("fcfs") == [0, 1, 2]
    assert _waiting_order("lpm") == [2, 0, 1]


def test_lpm_is_fcfs_without_a_radix_cache() -> None:
    assert _waiting_order("lpm", "--disable-radix-cache") == [0, 1, 2]


def test_lpm_falls_back_to_fcfs_when_more_than_128_requests_wait() -> None:
    assert _waiting_order("lpm", waiting=128)[0] == 127
    assert _waiting_order("lpm", waiting=129)[0] == 0


@pytest.mark.parametrize("policy", ["fcfs", "lpm"])
def test_kv_accounting_returns_to_the_cache_alone_when_idle(policy: str) -> None:
    sched = _scheduler("--schedule-policy", policy, capacity=20_000)
    reqs = [_request(i, seq(f"g{i % 4}-", 1500) + seq(f"q{i}-", 100), out=20) for i in range(40)]
    _run(sched, reqs)
    assert all(r.finish_time is not None for r in reqs)
    assert sched.cache is not None
    assert sched.kv_used == sched.cache.total == sched.cache.evictable  # no request holds tokens any more


@pytest.mark.parametrize("scenario", ["C(2,2,10,4)", "dataset(chat.jsonl)"])
def test_the_in_process_simulator_refuses_traffic_only_the_client_can_send(scenario: str) -> None:
    from pytest_autotuner.core.measure.plan import BenchmarkPlan
    from pytest_autotuner.core.spec.scenarios import parse_scenario
    from pytest_autotuner.sim.inprocess import run_benchmark_in_process

    plan = BenchmarkPlan((parse_scenario(scenario),), (1,), max_requests=2)
    with pytest.raises(ValueError, match="need the benchmark client"):
        run_benchmark_in_process(MODEL, {}, plan)


def test_a_full_pool_retracts_only_as_many_requests_as_the_next_decode_step_needs() -> None:
    """A retracted request's prompt stays cached (evictable), so it frees room: one retraction is enough here."""
    sched = _scheduler()
    reqs = [_request(i, seq(f"p{i}", 1000), out=8) for i in range(3)]
    for req in reqs:
        sched.submit(req)
    t = sched.step(0.0).end  # one prefill batch: all three prompts in the tree, locked by their requests
    assert len(sched.running) == 3 and sched.kv_used == 3000 and sched._evictable == 0
    sched.capacity = 3001  # the next decode step needs 3 more tokens: 2 over
    while not sched.running or sched.running[0].generated < 2:
        t = sched.step(t).end
    assert sum(r.retractions for r in reqs) == 1 and len(sched.running) == 2
