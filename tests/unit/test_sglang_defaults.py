"""SGLang's defaults moved into a search space: nearest listed value, nearest range step, or left out."""

from __future__ import annotations

from factories import spec

from pytest_autotuner.sglang_defaults import defaults_in_space
from pytest_autotuner.space import SearchSpace


def defaults(parameters: dict[str, object]) -> dict[str, object]:
    return dict(defaults_in_space(SearchSpace.from_spec(spec(parameters=parameters))))


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
