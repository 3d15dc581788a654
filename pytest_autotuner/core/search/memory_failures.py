"""Configurations certain not to start, inferred from the servers that did not.

SGLang sizes a server's memory per GPU from a few flags, each in a known direction, and names the direction in
its error. Two startup failures carry over to other configurations:

- ``kv_cache_oom`` ("Not enough memory. Please try to increase --mem-fraction-static"): the weights on one GPU
  do not fit in ``mem-fraction-static`` of its memory (``ModelRunner.profile_max_num_token``: the KV pool's size
  is that fraction minus what the weights took, and it raises at zero or below). A smaller fraction, or a smaller
  tensor or pipeline parallel size (more weights per GPU), fails the same way, whatever the scheduler flags: the
  check runs before CUDA graphs, the chunked prefill buffers or any request exist.
- ``oom`` ("CUDA out of memory", at CUDA graph capture or later): what is left outside the static fraction does
  not hold the graphs and activations. A larger fraction, larger graphs (``cuda-graph-max-bs``), larger prefill
  chunks, more running requests, or a smaller tp / pp fails too.

A flag that is in neither list of a failure (quantization, kv-cache-dtype, attention backend, ...) must have the
same value as in the failed trial: nothing is inferred across it. dp-size is free for ``kv_cache_oom`` only (each
replica holds the same weights and pool); an ``oom`` can come from a load that dp spreads. Every other failure
class (a crash, a timeout, bad parallelism) teaches nothing about other points here.

The bayesian sampler never proposes a point this marks (``certain_to_fail``), as it never proposes one over the
runner's GPUs: such a launch would cost GPU time and a trial to learn what is already known.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_autotuner.core.search.gpu_pool import PARALLEL_FLAGS

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = ["MEMORY_DIRECTIONS", "certain_to_fail"]

_TP, _DP, _PP = PARALLEL_FLAGS["tp"], PARALLEL_FLAGS["dp"], PARALLEL_FLAGS["pp"]
_GRAPH_BS = ("cuda-graph-max-bs", "cuda-graph-max-bs-decode")
# flags that only steer the scheduler: they do not change what a GPU holds at startup
_SCHEDULING = (
    "schedule-policy",
    "schedule-conservativeness",
    "stream-interval",
    "stream-output",
    "disable-radix-cache",
    "enable-mixed-chunk",
    "priority-scheduling",
)


def _signs(sign: int, names: Iterable[str]) -> dict[str, int]:
    return dict.fromkeys(names, sign)


#: Per failure class: flag -> the direction in which the failure carries over (-1: a smaller value fails too,
#: +1: a larger one, 0: any value). Flags not listed must be equal.
MEMORY_DIRECTIONS: dict[str, dict[str, int]] = {
    "kv_cache_oom": {
        "mem-fraction-static": -1,
        **_signs(-1, _TP + _PP),
        **_signs(0, _DP + _GRAPH_BS + _SCHEDULING),
        "disable-cuda-graph": 0,
        "chunked-prefill-size": 0,
        "max-prefill-tokens": 0,
        "max-running-requests": 0,
    },
    "oom": {
        "mem-fraction-static": +1,
        **_signs(-1, _TP + _PP),
        **_signs(+1, _GRAPH_BS),
        "chunked-prefill-size": +1,
        "max-prefill-tokens": +1,
        "max-running-requests": +1,
        **_signs(0, _SCHEDULING),
    },
}


def certain_to_fail(
    samples: Mapping[str, np.ndarray],
    search_space: Mapping[str, BaseDistribution],
    failures: Iterable[tuple[Mapping[str, Any], str]],
) -> np.ndarray:
    """Which samples (internal representation, one array per flag) fail like one of ``failures`` (the params of a
    failed trial and its failure class) by the rules above."""
    n = len(next(iter(samples.values()))) if samples else 0
    doomed = np.zeros(n, dtype=bool)
    # each flag's distinct values, as the server gets them, and where each sample has them
    axes = {}
    for name, internal in samples.items():
        distinct, index = np.unique(np.asarray(internal, dtype=float), return_inverse=True)
        axes[name] = ([search_space[name].to_external_repr(float(v)) for v in distinct], index)
    for params, failure_class in failures:
        directions = MEMORY_DIRECTIONS.get(failure_class)
        if directions is None or not samples.keys() <= params.keys():
            continue  # a flag left to the server: its value is unknown, so is what it implies
        like = np.ones(n, dtype=bool)
        for name, (values, index) in axes.items():
            sign = directions.get(name)
            if sign == 0:
                continue
            carries = np.array([_carries(value, params[name], sign) for value in values])
            like &= carries[index]
        doomed |= like
    return doomed


def _carries(value: Any, failed_at: Any, sign: int | None) -> bool:
    """Whether a flag's ``value`` is at least as bad as the one a server failed with, in the direction ``sign``."""
    if sign is None or not (_ordered(value) and _ordered(failed_at)):
        return bool(value == failed_at)
    return float(value) <= float(failed_at) if sign < 0 else float(value) >= float(failed_at)


def _ordered(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
