"""Lazy search spaces, owned flags and bounded error previews (the pieces behind the hostile-spec suite)."""

from __future__ import annotations

import itertools
import random

import pytest

from pytest_autotuner.core.search.space import SearchSpace
from pytest_autotuner.core.search.study import SHUFFLE_LIMIT, _AffinePermutation
from pytest_autotuner.core.spec.spec_model import owned_flags_in
from pytest_autotuner.core.spec.spec_text import preview
from pytest_autotuner.core.spec.task_spec import TaskSpec


def space_of(parameters: dict[str, object]) -> SearchSpace:
    return SearchSpace.from_spec(TaskSpec.model_validate({"task_name": "t", "parameters": parameters}))


def test_grid_points_are_decoded_in_product_order() -> None:
    space = space_of({"a": [1, 2, 3], "b": {"low": 0, "high": 1, "step": 0.5}, "c": [True, False]})
    axes = [[1, 2, 3], [0.0, 0.5, 1.0], [True, False]]
    expected = [dict(zip(["a", "b", "c"], combo, strict=True)) for combo in itertools.product(*axes)]
    assert list(space.grid()) == expected
    assert [space.point(i) for i in range(len(expected))] == expected
    assert space.grid_size == 18


def test_a_billion_point_range_is_counted_and_indexed_without_listing() -> None:
    space = space_of({"x": {"low": 1, "high": 10**9}, "y": {"low": 0.0, "high": 1.0, "step": 1e-9}})
    assert space.grid_size == 10**9 * (10**9 + 1)
    last = space.point(space.grid_size - 1)
    assert last == {"x": 10**9, "y": 1.0}
    assert space.point(10**9 + 1) == {"x": 2, "y": 0.0}  # the second row starts after one full y axis


def test_the_affine_order_is_a_permutation() -> None:
    for n in (SHUFFLE_LIMIT + 1, 1_000_003, 2**20):
        order = _AffinePermutation(n, random.Random(n))
        sample = [order[i] for i in range(0, n, max(1, n // 5000))]
        assert len(set(sample)) == len(sample) and all(0 <= v < n for v in sample)
    small = _AffinePermutation(1000, random.Random(1))
    assert sorted(small[i] for i in range(1000)) == list(range(1000))


@pytest.mark.parametrize(
    ("args", "owned"),
    [
        (["--host", "0.0.0.0"], ["--host"]),
        (["--port=80"], ["--port=80"]),
        (["--model", "x"], ["--model"]),
        (["--ho", "1"], ["--ho"]),  # argparse would take it for --host
        (["--mem-fraction-static", "0.8", "--tp-size", "2"], []),
        (["--sim-noise", "0.1"], []),
        (["host", "port", "model-path", "tp-size"], ["host", "port", "model-path"]),
        (["--MODEL_PATH", "/x"], ["--MODEL_PATH"]),
    ],
)
def test_owned_flags_are_found_in_any_spelling(args: list[str], owned: list[str]) -> None:
    assert owned_flags_in(args) == owned


def test_the_simulator_owns_its_seed_and_launch_time() -> None:
    assert owned_flags_in(["--sim-seed", "1", "--sim-noise", "0"], ("sim-seed", "sim-launched-at")) == ["--sim-seed"]


def test_a_preview_stops_building_at_its_limit() -> None:
    class Huge(list):  # type: ignore[type-arg]
        """A list that counts how many items the preview read."""

        read = 0

        def __iter__(self):  # type: ignore[no-untyped-def]
            for item in super().__iter__():
                Huge.read += 1
                yield item

    value = Huge(["lol"] * 1_000_000)
    text = preview({"x": value}, 80)
    assert len(text) <= 80 and text.endswith("...")
    assert Huge.read < 100  # not the million
    assert preview("a\x1b[31m", 40) == '"a\\u001b[31m"'
    assert preview(10**400, 60) == "<an integer of about 401 digits>"
