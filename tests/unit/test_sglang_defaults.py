"""SGLang's defaults by GPU memory, as its server_args computes them, moved into a search space: nearest listed
value, nearest range step, or left out."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from factories import spec

from pytest_autotuner.core.search.sglang_defaults import GPU_MEMORY_MIB, defaults_in_space, sglang_defaults
from pytest_autotuner.core.search.space import SearchSpace


def defaults(parameters: Mapping[str, object], gpu_memory_mib: float | None = None) -> dict[str, object]:
    return dict(defaults_in_space(SearchSpace.from_spec(spec(parameters=parameters)), gpu_memory_mib))


@pytest.mark.parametrize(
    ("memory_mib", "tp", "chunk", "graph", "fraction"),
    [
        (GPU_MEMORY_MIB["h100"], 1, 8192, 256, 0.835),  # the H100 figures SGLang's docs quote
        (GPU_MEMORY_MIB["h100"], 4, 8192, 512, 0.824),
        (GPU_MEMORY_MIB["h200"], 1, 8192, 256, 0.907),
        (GPU_MEMORY_MIB["a100-80g"], 1, 8192, 256, 0.836),
        (40960, 1, 4096, 32, 0.833),  # A100 40GB
        (24576, 1, 2048, 24, 0.847),  # A10 / RTX 4090
        (183359, 8, 16384, 512, 0.852),  # B200, eight ranks
    ],
)
def test_memory_dependent_defaults_follow_sglangs_bands(
    memory_mib: float, tp: int, chunk: int, graph: int, fraction: float
) -> None:
    got = sglang_defaults(memory_mib, tp_size=tp)
    assert got["chunked-prefill-size"] == chunk and got["cuda-graph-max-bs"] == graph
    assert got["mem-fraction-static"] == fraction
    assert sglang_defaults() == sglang_defaults(GPU_MEMORY_MIB["h100"])  # unknown memory: an H100 80GB


def test_the_memory_fraction_is_the_one_sglang_computes_for_the_flags_the_defaults_trial_passes() -> None:
    # chunked prefill 8192 is not in the space, 4096 is passed, so SGLang reserves less and uses 0.874 on an H100
    space = {"chunked-prefill-size": [2048, 4096], "mem-fraction-static": {"low": 0.5, "high": 0.95}}
    assert defaults(space) == {"chunked-prefill-size": 4096, "mem-fraction-static": 0.874}
    assert defaults(space, GPU_MEMORY_MIB["h200"]) == {"chunked-prefill-size": 4096, "mem-fraction-static": 0.929}
    # tp 2 is the nearest to 1 here; each tp rank reserves 128 MiB more
    tp_space = {"tp-size": [2, 4], "mem-fraction-static": {"low": 0.5, "high": 0.95}}
    assert defaults(tp_space) == {"tp-size": 2, "mem-fraction-static": 0.834}


def test_a_listed_default_is_kept_and_a_missing_number_moves_to_the_nearest_value() -> None:
    assert defaults({"tp-size": [2, 1, 4], "chunked-prefill-size": [2048, 16384]}) == {
        "tp-size": 1,
        "chunked-prefill-size": 2048,  # 8192 is nearer 2048 than 16384
    }
    assert defaults({"mem-fraction-static": [0.8, 0.87]}) == {"mem-fraction-static": 0.8}  # tie: the smaller


def test_ranges_clip_and_snap_to_their_step() -> None:
    got = defaults(
        {
            "cuda-graph-max-bs": {"low": 8, "high": 190, "step": 16},  # 256 -> clipped to 190 -> top step 184
            "schedule-conservativeness": {"low": 0.3, "high": 2.0},
            "mem-fraction-static": {"low": 0.5, "high": 0.95, "step": 0.1},
        }
    )
    assert got["cuda-graph-max-bs"] == 184
    assert got["schedule-conservativeness"] == 1.0
    assert abs(float(got["mem-fraction-static"]) - 0.8) < 1e-9


def test_unlisted_categories_unknown_flags_and_bool_number_confusion_are_left_out() -> None:
    assert defaults({"schedule-policy": ["lpm", "dfs-weight"], "max-running-requests": [16, 64]}) == {}
    assert defaults({"enable-mixed-chunk": [True, False]}) == {"enable-mixed-chunk": False}
    assert defaults({"tp-size": [True, False]}) == {}  # 1 is not True here
