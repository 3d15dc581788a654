"""SGLang's own defaults for the flags users tune, and the configuration of a space closest to them.

The ``bayesian`` strategy evaluates this configuration first (``optimization.start_from_defaults``): it is
the configuration a team runs when it does not tune, so the study measures it anyway, it usually starts, and
TPE's first observation is an informed one instead of a random draw.

Values are SGLang's (0.5.x) for an H100 80GB; SGLang derives ``mem-fraction-static`` and
``chunked-prefill-size`` from the GPU's memory, so on other GPUs they are approximations. Flags without a
fixed default (``max-running-requests`` comes from the KV-cache size) are left to the sampler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_autotuner.space import Categorical, FloatRange, IntRange

if TYPE_CHECKING:
    from pytest_autotuner.space import Dimension, SearchSpace
    from pytest_autotuner.trial import Params, ParamValue

__all__ = ["SGLANG_DEFAULTS", "defaults_in_space"]

SGLANG_DEFAULTS: dict[str, ParamValue] = {
    "tp-size": 1,
    "dp-size": 1,
    "mem-fraction-static": 0.835,
    "chunked-prefill-size": 8192,
    "max-prefill-tokens": 16384,
    "schedule-policy": "fcfs",
    "schedule-conservativeness": 1.0,
    "cuda-graph-max-bs": 256,
    "disable-cuda-graph": False,
    "enable-mixed-chunk": False,
    "kv-cache-dtype": "auto",
    "stream-interval": 1,
}


def defaults_in_space(space: SearchSpace) -> Params:
    """SGLang's default for each tuned flag that has one, moved to the nearest value the space allows.

    A numeric default outside a list or range becomes the nearest listed value (the smaller on a tie) or the
    nearest step of the range; a non-numeric default that is not listed is left out, as are flags without a
    known default. The result may set only some of the space's parameters.
    """
    out: Params = {}
    for dim in space.dimensions:
        if dim.name in SGLANG_DEFAULTS:
            value = _nearest(dim, SGLANG_DEFAULTS[dim.name])
            if value is not None:
                out[dim.name] = value
    return out


def _numeric(value: ParamValue) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _nearest(dim: Dimension, default: ParamValue) -> ParamValue | None:
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
    # a list, or a float range with a step: the nearest of its numeric values, the smaller on a tie
    numbers = [v for v in dim.grid_values() or () if _numeric(v)]
    return min(numbers, key=lambda v: (abs(float(v) - default), float(v))) if numbers else None
