"""Generated traffic is bounded at collection (issue 28): per request, per cell and in distinct prompts.

A family of scenarios of every kind, with fields from 1 to 12 digits (the grammar's limit), against request
counts of 1 to 10^6 per cell: a spec either loads, and then every request, the cell's tokens and the distinct
prompts of a shared prefix are within their limits, or it is a collection error naming the file, the
scenario's field path and its text. The cell's token count is checked against a request-by-request sum.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from pytest_autotuner.core.spec.scenarios import (
    MAX_CELL_TOKENS,
    MAX_PROMPTS,
    MAX_TOKENS_PER_REQUEST,
    ScenarioError,
    parse_scenario,
)
from pytest_autotuner.core.spec.spec_text import SpecError
from pytest_autotuner.inputs import load_spec

_FIELDS = {"D": 2, "N": 4, "U": 4, "P": 5, "C": 6}


def _number() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(1, 64), st.integers(1, 10**6), st.integers(1, 10**12 - 1))


@st.composite
def scenarios(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(sorted(_FIELDS)))
    n = [draw(_number()) for _ in range(_FIELDS[kind])]
    if kind == "D":
        return f"D({n[0]},{n[1]})"
    if kind == "N":
        return f"N({n[0]},{n[1]})/({n[2]},{n[3]})"
    if kind == "U":
        return f"U({min(n[0], n[1])},{max(n[0], n[1])})/({min(n[2], n[3])},{max(n[2], n[3])})"
    if kind == "P":
        return f"P({','.join(map(str, n))})"
    return f"C({','.join(map(str, n))})"


def _requests_by_request(text: str, measured: int, warmups: int) -> int:
    """Input + output tokens of a cell, request by request (as the client draws them; N and U at their largest)."""
    scenario = parse_scenario(text)
    if scenario.chat is not None:
        sent = scenario.chat.requests(measured)
        lengths = scenario.sample(np.random.default_rng(0), sent) + [(scenario.chat.prompt_tokens(0), 0)] * warmups
        return sum(i + o for i, o in lengths) + warmups * scenario.chat.output
    return sum(scenario.max_total_tokens for _ in range(measured + warmups))


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    text=scenarios(),
    measured=st.one_of(st.integers(1, 300), st.sampled_from([1000, 100_000, 1_000_000])),
    warmups=st.integers(0, 10),
)
@example(text="P(100000000,100000000,100000,100,100)", measured=100, warmups=2)  # the report
@example(text="P(1,1,999999999999,1,1)", measured=1, warmups=0)  # one request of 10^12 tokens
@example(text="C(1,100000,100,100)", measured=100, warmups=2)  # turns whose history outgrows any context
@example(text="D(100000,100)", measured=1_000_000, warmups=2)  # requests x tokens
@example(text="C(1000,1000,10,10)", measured=1_000_000, warmups=2)
def test_generated_traffic_is_bounded_or_refused_naming_the_scenario(
    tmp_path: Path, text: str, measured: int, warmups: int
) -> None:
    path = tmp_path / "spec.json"
    bench: dict[str, Any] = {"traffic_scenarios": [text], "max_requests_per_iteration": measured,
                             "warmup_requests": warmups}  # fmt: skip
    path.write_text(json.dumps({"task_name": "t", "parameters": {"tp-size": [1]}, "benchmark": bench}))
    try:
        scenario = parse_scenario(text)
    except ScenarioError:
        scenario = None
    try:
        load_spec(path)
    except SpecError as err:
        message = str(err)
        assert str(path) in message and "benchmark.traffic_scenarios" in message and text in message, message
        assert "Traceback" not in message
        if scenario is not None:  # the grammar took it: a limit refused it, by name
            assert "over the limit" in message or "over the cap" in message, message
        return
    assert scenario is not None
    assert scenario.max_total_tokens <= MAX_TOKENS_PER_REQUEST
    if scenario.shared is not None:
        assert scenario.shared.groups * scenario.shared.prompts <= MAX_PROMPTS
    tokens = scenario.cell_tokens(measured, warmups)
    assert tokens is not None and tokens <= MAX_CELL_TOKENS
    if measured <= 300:  # the arithmetic agrees with the sum over the requests
        assert tokens == _requests_by_request(text, measured, warmups)


def test_the_reported_shared_prefix_is_a_collection_error_naming_groups_and_prompts(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    bench = {"traffic_scenarios": ["D(10,10)", "P(100000000,100000000,100000,100,100)"]}
    path.write_text(json.dumps({"task_name": "t", "parameters": {"tp-size": [1]}, "benchmark": bench}))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert "benchmark.traffic_scenarios" in message and "`groups` x `prompts`" in message
    assert "10,000,000,000,000,000 distinct prompts" in message and f"{MAX_PROMPTS:,}" in message


def test_a_capacity_ladders_largest_step_counts_as_the_cells_requests(tmp_path: Path) -> None:
    # 100,000 requests at the top rate (capped per step), each of 2,000 tokens: 2e8 tokens, over the limit
    spec = {
        "task_name": "t",
        "parameters": {"tp-size": [1]},
        "optimization": {"objective": "maximize_goodput"},
        "slo": {"ttft": {"p99": {"threshold": 0.2}}},
        "benchmark": {"traffic_scenarios": ["D(1000,1000)"], "max_time_per_iteration": 3600,
                      "capacity": {"max": 10000, "step_seconds": 3600}},
    }  # fmt: skip
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(SpecError, match=r"benchmark\.traffic_scenarios\.0.*100,000 requests \(a capacity step"):
        load_spec(path)
    spec["benchmark"]["capacity"]["max"] = 10  # 36,000 requests of 2,000 tokens: within it
    path.write_text(json.dumps(spec))
    load_spec(path)
