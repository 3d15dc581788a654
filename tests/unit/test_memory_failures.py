"""Which configurations are certain to fail at startup, from SGLang's memory failures."""

from __future__ import annotations

from typing import Any

from factories import spec

from pytest_autotuner.core.search.memory_failures import certain_to_fail
from pytest_autotuner.core.search.samplers import grid_candidates
from pytest_autotuner.core.search.space import SearchSpace

_SPACE = {
    "tp-size": [1, 2, 4],
    "dp-size": [1, 2],
    "mem-fraction-static": [0.7, 0.8, 0.9],
    "chunked-prefill-size": [2048, 8192],
    "schedule-policy": ["lpm", "fcfs"],
}


def _doomed(failures: list[tuple[dict[str, Any], str]], parameters: dict[str, list[Any]] = _SPACE) -> set[str]:
    space = SearchSpace.from_spec(spec(parameters=parameters))
    dists = space.distributions()
    samples = grid_candidates(space, dists)
    mask = certain_to_fail(samples, dists, failures)
    points = [{n: dists[n].to_external_repr(samples[n][i]) for n in dists} for i in range(len(mask))]
    return {space.key(p) for p, doomed in zip(points, mask, strict=True) if doomed}


def _keys(**fixed: list[Any]) -> set[str]:
    space = SearchSpace.from_spec(spec(parameters={**_SPACE, **fixed}))
    return {space.key(p) for p in space.grid()}


def test_not_enough_memory_rules_out_smaller_fractions_and_smaller_tp_whatever_the_scheduler_flags() -> None:
    failed = {
        "tp-size": 2,
        "dp-size": 2,
        "mem-fraction-static": 0.8,
        "chunked-prefill-size": 8192,
        "schedule-policy": "lpm",
    }
    assert _doomed([(failed, "kv_cache_oom")]) == _keys(**{"tp-size": [1, 2], "mem-fraction-static": [0.7, 0.8]})


def test_a_cuda_oom_rules_out_larger_fractions_and_chunks_with_the_same_dp() -> None:
    failed = {
        "tp-size": 2,
        "dp-size": 1,
        "mem-fraction-static": 0.8,
        "chunked-prefill-size": 2048,
        "schedule-policy": "fcfs",
    }
    assert _doomed([(failed, "oom")]) == _keys(**{"tp-size": [1, 2], "dp-size": [1], "mem-fraction-static": [0.8, 0.9]})


def test_a_flag_the_rules_do_not_know_must_be_equal() -> None:
    parameters = {"tp-size": [1, 2], "mem-fraction-static": [0.7, 0.8], "kv-cache-dtype": ["auto", "fp8_e5m2"]}
    failed = {"tp-size": 2, "mem-fraction-static": 0.8, "kv-cache-dtype": "fp8_e5m2"}
    doomed = _doomed([(failed, "kv_cache_oom")], parameters)
    assert len(doomed) == 4 and all("fp8_e5m2" in key for key in doomed)


def test_other_failures_and_flags_left_to_the_server_rule_out_nothing() -> None:
    failed = {
        "tp-size": 4,
        "dp-size": 2,
        "mem-fraction-static": 0.9,
        "chunked-prefill-size": 8192,
        "schedule-policy": "lpm",
    }
    assert _doomed([(failed, "crashed"), (failed, "timeout"), (failed, "launch_failed")]) == set()
    partial = {k: v for k, v in failed.items() if k != "mem-fraction-static"}  # the defaults trial
    assert _doomed([(partial, "kv_cache_oom")]) == set()


def test_several_failures_add_up() -> None:
    low = {
        "tp-size": 1,
        "dp-size": 1,
        "mem-fraction-static": 0.7,
        "chunked-prefill-size": 2048,
        "schedule-policy": "lpm",
    }
    high = {
        "tp-size": 4,
        "dp-size": 1,
        "mem-fraction-static": 0.9,
        "chunked-prefill-size": 8192,
        "schedule-policy": "lpm",
    }
    both = _doomed([(low, "kv_cache_oom"), (high, "oom")])
    assert both == _doomed([(low, "kv_cache_oom")]) | _doomed([(high, "oom")])
    assert len(both) == 2 * 2 * 2 + 3 * 1 * 1 * 1 * 2  # tp 1 at 0.7 (dp, chunk, policy free); any tp at 0.9/8192/dp 1
