"""The traffic scenario grammar: D(in,out), N(mi,si)/(mo,so), U(...)/(...) and short U(max_in,max_out)."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_autotuner.core.spec.scenarios import ACCEPTED_FORMS, ScenarioError, parse_scenario


def test_deterministic_scenario() -> None:
    scenario = parse_scenario("D(100,200)")
    assert (scenario.kind, scenario.input, scenario.output) == ("D", (100, 0), (200, 0))
    assert scenario.sample(np.random.default_rng(0), 3) == [(100, 200)] * 3


def test_normal_scenario() -> None:
    scenario = parse_scenario("N(480,240)/(300,150)")
    assert (scenario.kind, scenario.input, scenario.output) == ("N", (480, 240), (300, 150))


def test_uniform_scenario_with_both_ranges() -> None:
    scenario = parse_scenario("U(50,100)/(60,200)")
    assert (scenario.kind, scenario.input, scenario.output) == ("U", (50, 100), (60, 200))


def test_short_uniform_scenario_starts_at_one() -> None:
    scenario = parse_scenario("U(100,200)")
    assert (scenario.input, scenario.output) == ((1, 100), (1, 200))


@pytest.mark.parametrize("text", ["D(1)", "X(1,2)", "D(0,5)", "U(5,1)/(1,2)", "D(1, 2)", "N(1,2) /(3,4)", ""])
def test_invalid_scenarios_name_the_accepted_forms(text: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text)
    assert repr(text) in str(info.value)
    if text not in ("D(0,5)", "U(5,1)/(1,2)"):
        assert ACCEPTED_FORMS in str(info.value)


def test_zero_or_reversed_bounds_explain_the_rule() -> None:
    with pytest.raises(ScenarioError, match="at least 1"):
        parse_scenario("D(0,5)")
    with pytest.raises(ScenarioError, match="min <= max"):
        parse_scenario("U(5,1)/(1,2)")


def test_seeded_sampling_is_reproducible() -> None:
    scenario = parse_scenario("U(10,1000)/(5,500)")
    first = scenario.sample(np.random.default_rng(42), 50)
    assert first == scenario.sample(np.random.default_rng(42), 50)
    assert first != scenario.sample(np.random.default_rng(43), 50)


def test_uniform_samples_stay_inside_the_ranges() -> None:
    pairs = parse_scenario("U(10,20)/(5,6)").sample(np.random.default_rng(0), 500)
    assert {i for i, _ in pairs} == set(range(10, 21)) and {o for _, o in pairs} == {5, 6}


def test_normal_samples_clamp_input_to_one_and_output_to_two() -> None:
    pairs = parse_scenario("N(1,50)/(1,50)").sample(np.random.default_rng(0), 500)
    assert min(i for i, _ in pairs) == 1 and min(o for _, o in pairs) == 2


def test_max_total_tokens_covers_the_largest_request() -> None:
    assert parse_scenario("U(10,20)/(5,6)").max_total_tokens == 26
    assert parse_scenario("D(7,3)").max_total_tokens == 10


def test_shared_prefix_scenario_reads_like_bench_servings_generated_shared_prefix() -> None:
    scenario = parse_scenario("P(8,32,2000,100,50)")
    assert scenario.kind == "P" and scenario.shared is not None
    assert (scenario.shared.groups, scenario.shared.prompts, scenario.shared.system) == (8, 32, 2000)
    assert scenario.sample(np.random.default_rng(0), 2) == [(2100, 50)] * 2
    assert scenario.max_total_tokens == 2150


def test_shared_prefix_requests_cover_every_prompt_once_before_any_repeats() -> None:
    shared = parse_scenario("P(3,4,10,5,5)").shared
    assert shared is not None
    picks = shared.assign(np.random.default_rng(1), 15)
    assert sorted(picks[:12]) == [(g, q) for g in range(3) for q in range(4)]
    assert picks[:12] != sorted(picks[:12])  # shuffled, so groups interleave as in bench_serving
    assert picks == shared.assign(np.random.default_rng(1), 15)


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [("P(0,32,2000,100,100)", "groups", 0), ("P(8,0,2000,100,100)", "prompts", 0),
     ("P(8,32,0,100,100)", "system", 0), ("P(8,32,2000,100,0)", "output", 0)],
)  # fmt: skip
def test_shared_prefix_errors_name_the_field_and_value(text: str, field: str, value: int) -> None:
    with pytest.raises(ScenarioError, match=rf"`{field}` .* must be at least 1, got {value}"):
        parse_scenario(text)


def test_a_shared_prefix_with_missing_fields_names_the_accepted_forms() -> None:
    with pytest.raises(ScenarioError, match=r"P\(groups,prompts,system,question,output\)"):
        parse_scenario("P(8,32,2000)")


def test_a_chat_turn_resends_the_history_so_prompts_grow_by_in_plus_out_per_turn() -> None:
    scenario = parse_scenario("C(16,4,200,100,1000,500)")
    chat = scenario.chat
    assert chat is not None and (chat.sessions, chat.turns, chat.system, chat.think) == (16, 4, 1000, 0.5)
    assert scenario.sample(np.random.default_rng(0), 5) == [(1200, 100), (1500, 100), (1800, 100), (2100, 100),
                                                            (1200, 100)]  # fmt: skip
    assert scenario.max_total_tokens == 2200
    assert chat.requests(1000) == 64 and chat.requests(10) == 10


def test_a_short_chat_form_has_no_system_prompt_and_no_think_time() -> None:
    chat = parse_scenario("C(2,3,10,5)").chat
    assert chat is not None and (chat.system, chat.think) == (0, 0.0)


@pytest.mark.parametrize(("text", "field"), [("C(0,4,1,1)", "sessions"), ("C(1,0,1,1)", "turns"),
                                             ("C(1,1,0,1)", "in"), ("C(1,1,1,0)", "out")])  # fmt: skip
def test_chat_errors_name_the_field_and_value(text: str, field: str) -> None:
    with pytest.raises(ScenarioError, match=rf"`{field}` .* must be at least 1, got 0"):
        parse_scenario(text)
