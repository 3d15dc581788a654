"""SGLang's own defaults for the flags users tune, and the configuration of a space closest to them.

The ``bayesian`` strategy evaluates this configuration first (``optimization.start_from_defaults``): it is
the configuration a team runs when it does not tune, so the study measures it anyway, it usually starts, and
TPE's first observation is an informed one instead of a random draw.

SGLang (0.5.x, ``ServerArgs._handle_gpu_memory_settings``) derives three defaults from the GPU's memory:
``chunked-prefill-size`` and ``cuda-graph-max-bs`` by memory band, then ``mem-fraction-static`` as the share
left after reserving room for activations (proportional to the chunk size) and CUDA graphs. ``sglang_defaults``
repeats that arithmetic, so the defaults trial on an H200 or an A100 is what SGLang would run there. Flags
without a fixed default (``max-running-requests`` comes from the KV-cache size) are left to the sampler.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.trial import Params, ParamValue
    from pytest_autotuner.core.search.space import Dimension, SearchSpace

__all__ = ["GPU_MEMORY_MIB", "defaults_in_space", "sglang_defaults"]

#: total memory nvidia-smi reports for the GPUs the simulator models, in MiB
GPU_MEMORY_MIB: dict[str, float] = {"h100": 81559, "h200": 143771, "a100-80g": 81920,
                                    # nvidia-smi totals of the GPUs aiconfigurator-core prices (its systems/*.yaml)
                                    "b200": 184320, "b300": 275040, "gb200": 189471, "gb300": 284208, "l40s": 46068,
                                    "rtx-pro-6000": 97887}  # fmt: skip

_FIXED: dict[str, ParamValue] = {
    "tp-size": 1,
    "dp-size": 1,
    "max-prefill-tokens": 16384,
    "schedule-policy": "fcfs",
    "schedule-conservativeness": 1.0,
    "disable-cuda-graph": False,
    "enable-mixed-chunk": False,
    "kv-cache-dtype": "auto",
    "stream-interval": 1,
}


def _memory_band(gpu_memory_mib: float, tp_size: int) -> tuple[int, int]:
    """(chunked-prefill-size, cuda-graph-max-bs) SGLang picks for a GPU of this much memory."""
    gib = 1024
    if gpu_memory_mib < 20 * gib:  # T4, RTX 4080
        return 2048, 8
    if gpu_memory_mib < 35 * gib:  # A10, RTX 4090/5090
        return 2048, 24 if tp_size < 4 else 80
    if gpu_memory_mib < 60 * gib:  # A100 40GB, L40
        return 4096, 32 if tp_size < 4 else 160
    if gpu_memory_mib < 160 * gib:  # H100, A100 80GB, H20, H200
        return 8192, 256 if tp_size < 4 else 512
    return 16384, 512  # B200, MI300


def _mem_fraction_static(gpu_memory_mib: float, chunked_prefill_size: int, cuda_graph_max_bs: int, tp_size: int,
                         max_prefill_tokens: int) -> float:  # fmt: skip
    reserved = 512 + max(chunked_prefill_size if chunked_prefill_size > 0 else max_prefill_tokens, 2048) * 1.5
    reserved += cuda_graph_max_bs * 2 + tp_size / 8 * 1024
    if gpu_memory_mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return round((gpu_memory_mib - reserved) / gpu_memory_mib, 3)


def sglang_defaults(
    gpu_memory_mib: float | None = None,
    *,
    tp_size: int = 1,
    chunked_prefill_size: int | None = None,
    cuda_graph_max_bs: int | None = None,
    max_prefill_tokens: int | None = None,
) -> Params:
    """SGLang's default for each flag users tune, on a GPU with this much memory (None: an H100 80GB).

    ``chunked_prefill_size``, ``cuda_graph_max_bs`` and ``max_prefill_tokens``, when given, are the values
    actually passed: SGLang sizes its default ``mem-fraction-static`` from them.
    """
    memory = GPU_MEMORY_MIB["h100"] if gpu_memory_mib is None else gpu_memory_mib
    band_chunk, band_graph = _memory_band(memory, tp_size)
    chunk = band_chunk if chunked_prefill_size is None else chunked_prefill_size
    graph = band_graph if cuda_graph_max_bs is None else cuda_graph_max_bs
    prefill = int(_FIXED["max-prefill-tokens"]) if max_prefill_tokens is None else max_prefill_tokens
    fraction = _mem_fraction_static(memory, chunk, graph, tp_size, prefill)
    return {**_FIXED, "tp-size": tp_size, "chunked-prefill-size": band_chunk, "cuda-graph-max-bs": band_graph,
            "mem-fraction-static": fraction}  # fmt: skip


def defaults_in_space(space: SearchSpace, gpu_memory_mib: float | None = None) -> Params:
    """SGLang's default for each tuned flag that has one, moved to the nearest value the space allows.

    A numeric default outside a list or range becomes the nearest listed value (the smaller on a tie) or the
    nearest step of the range; a non-numeric default that is not listed is left out, as are flags without a
    known default. A boolean flag (store-true) without a listed default is off, as SGLang leaves it. The result may
    set only some of the space's parameters: the others SGLang resolves itself at startup (e.g.
    ``max-running-requests`` from the KV pool), so the defaults trial does not pass them. The memory-dependent
    defaults are those of a GPU with ``gpu_memory_mib`` (None: an H100 80GB), and ``mem-fraction-static`` is the
    one SGLang would compute for the tensor-parallel size, chunk size and graph batch size the result sets.
    """
    dims = {dim.name: dim for dim in space.dimensions}
    out: Params = {}

    def snap(name: str, default: ParamValue) -> ParamValue:
        if name in dims:
            value = _nearest(dims[name], default)
            if value is not None:
                out[name] = value
                return value
        return default

    tp = snap("tp-size", _FIXED["tp-size"])
    base = sglang_defaults(gpu_memory_mib, tp_size=int(tp))
    chunk = snap("chunked-prefill-size", base["chunked-prefill-size"])
    graph = snap("cuda-graph-max-bs", base["cuda-graph-max-bs"])
    passed = sglang_defaults(gpu_memory_mib, tp_size=int(tp), chunked_prefill_size=int(chunk),
                             cuda_graph_max_bs=int(graph))  # fmt: skip
    for name, default in passed.items():
        if name not in out:
            snap(name, default)
    for dim in space.dimensions:  # store-true flags SGLang leaves off unless passed
        if dim.name not in out and dim.name not in passed and _is_switch(dim):
            out[dim.name] = False
    return {dim.name: out[dim.name] for dim in space.dimensions if dim.name in out}


def _is_switch(dim: Dimension) -> bool:
    """A boolean flag that may be off: ``[true, false]`` in the spec."""
    choices = getattr(dim, "choices", ())
    return any(c is False for c in choices) and all(isinstance(c, bool) for c in choices)


def _numeric(value: ParamValue) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _nearest(dim: Dimension, default: ParamValue) -> ParamValue | None:
    from pytest_autotuner.core.search.space import (  # here: the simulator needs only the table
        Categorical,
        FloatRange,
        IntRange,
    )

    if isinstance(dim, Categorical) and any(c == default and type(c) is type(default) for c in dim.choices):
        return default  # listed as is (True == 1, but not here)
    if not _numeric(default):
        return None
    assert isinstance(default, (int, float))
    if isinstance(dim, IntRange):  # arithmetic: a wide int range has too many values to list
        clipped = min(max(default, dim.low), dim.high)
        return dim.low + min(round((clipped - dim.low) / dim.step), (dim.high - dim.low) // dim.step) * dim.step
    if isinstance(dim, FloatRange) and dim.step is None:
        return min(max(float(default), dim.low), dim.high)
    values = dim.grid_values() or ()
    if isinstance(dim, FloatRange) and dim.step is not None and len(values) > 10_000:  # too many to list
        steps = math.ceil((min(max(float(default), dim.low), dim.high) - dim.low) / dim.step - 0.5)
        return values[min(max(steps, 0), len(values) - 1)]
    # a list, or a float range with a step: the nearest of its numeric values, the smaller on a tie
    numbers = [v for v in values if _numeric(v)]
    return min(numbers, key=lambda v: (abs(float(v) - default), float(v))) if numbers else None
