"""Search space: value lists, ranges and booleans; grid size and enumeration."""

from __future__ import annotations

import pytest
from factories import spec

from pytest_autotuner.core.search.space import Categorical, FloatRange, IntRange, SearchSpace


def test_seed_space_has_80_grid_points_in_spec_order() -> None:
    space = SearchSpace.from_spec(spec())
    assert space.grid_size == 2 * 5 * 2 * 4
    points = list(space.grid())
    assert len(points) == 80
    assert len({space.key(p) for p in points}) == 80
    assert list(points[0]) == ["tp-size", "mem-fraction-static", "schedule-policy", "chunked-prefill-size"]


def test_ranges_become_int_and_float_dimensions() -> None:
    space = SearchSpace.from_spec(spec(parameters={
        "max-running-requests": {"low": 16, "high": 64, "step": 16},
        "schedule-conservativeness": {"low": 0.5, "high": 1.0, "step": 0.25},
        "enable-mixed-chunk": [True, False],
    }))  # fmt: skip
    dims = {d.name: d for d in space.dimensions}
    assert dims["max-running-requests"] == IntRange("max-running-requests", 16, 64, 16)
    assert isinstance(dims["schedule-conservativeness"], FloatRange)
    assert isinstance(dims["enable-mixed-chunk"], Categorical)
    assert space.grid_size == 4 * 3 * 2
    assert {p["schedule-conservativeness"] for p in space.grid()} == {0.5, 0.75, 1.0}


def test_continuous_range_has_no_grid() -> None:
    space = SearchSpace.from_spec(spec(parameters={"schedule-conservativeness": {"low": 0.5, "high": 1.0}}))
    assert space.grid_size is None
    with pytest.raises(ValueError, match="`schedule-conservativeness` is a float range without `step`"):
        list(space.grid())


def test_distributions_contain_the_grid_points() -> None:
    space = SearchSpace.from_spec(spec())
    assert all(space.contains(p) for p in space.grid())
    assert not space.contains(
        {"tp-size": 3, "mem-fraction-static": 0.7, "schedule-policy": "lpm", "chunked-prefill-size": 512}
    )


def test_key_ignores_float_rounding_noise() -> None:
    space = SearchSpace.from_spec(spec(parameters={"mem": {"low": 0.5, "high": 0.9}}))
    assert space.key({"mem": 0.7}) == space.key({"mem": 0.7000000000001})


def test_the_first_value_at_or_above_a_threshold_is_arithmetic() -> None:
    assert IntRange("x", 1, 10**12).first_at_least(3) == 3
    assert IntRange("x", 1, 9, 4).first_at_least(2) == 5  # 1, 5, 9
    assert IntRange("x", 1, 9, 4).first_at_least(10) is None
    assert FloatRange("x", 0.0, 1.0, 1e-12).first_at_least(0.5) == 0.5
    assert FloatRange("x", 0.0, 1.0, 0.3).first_at_least(0.31) == 0.6
    assert FloatRange("x", 1.0, 8.0).first_at_least(3) == 3.0 and FloatRange("x", 1.0, 8.0).first_at_least(9) is None
