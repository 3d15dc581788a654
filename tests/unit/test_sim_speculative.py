"""Speculative decoding in the simulator: flags resolved as SGLang resolves them, accepted lengths drawn from the
acceptance model, and the trade-off it models: a longer draft pays while acceptance holds up and the verify
pass is cheap (low load), so the best draft length rises with acceptance and falls with load, and a long draft
at low acceptance under load is slower than no speculation at all. A grid tuning run finds a longer draft when
acceptance is high than when it is low."""

from __future__ import annotations

import random

import factories
import pytest
from factories import run_session
from hypothesis import given
from hypothesis import strategies as st

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.measure.trial import Deadline, Params
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.sim.cli import parse_argv, unmodelled_flags
from pytest_autotuner.sim.inprocess import run_benchmark_in_process
from pytest_autotuner.sim.scheduler import chunk_due
from pytest_autotuner.sim.speculative import Speculation, parse_acceptance

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
STEPS = (1, 2, 3, 4, 6, 8)


def throughput(concurrency: int, acceptance: str | None, steps: int | None = None) -> float:
    plan = BenchmarkPlan((parse_scenario("D(512,256)"),), (concurrency,), max_requests=max(8, 2 * concurrency),
                         warmup_requests=0)  # fmt: skip
    params: dict[str, object] = {}
    if steps is not None:
        params = {"speculative-algorithm": "EAGLE3", "speculative-num-steps": steps, "speculative-eagle-topk": 1}
        if acceptance is not None:
            params["sim-spec-acceptance"] = acceptance
    (cell,) = run_benchmark_in_process(MODEL, params, plan).cells  # type: ignore[arg-type]
    return cell.output_throughput


def best_steps(concurrency: int, acceptance: str) -> int:
    return max(STEPS, key=lambda steps: throughput(concurrency, acceptance, steps))


def test_unset_flags_resolve_as_sglang_resolves_them() -> None:
    auto = Speculation.resolve("eagle3", None, None, None, architecture="LlamaForCausalLM", num_layers=32)
    assert (auto.algorithm, auto.num_steps, auto.topk, auto.draft_tokens) == ("EAGLE3", 5, 4, 8)
    deepseek = Speculation.resolve("NEXTN", None, None, None, architecture="DeepseekV3ForCausalLM", num_layers=61)
    assert (deepseek.num_steps, deepseek.topk, deepseek.draft_tokens) == (3, 1, 4)
    chain = Speculation.resolve("EAGLE", 4, 1, 16, architecture="LlamaForCausalLM", num_layers=32)
    assert chain.draft_tokens == 5  # topk 1: num_steps + 1, as SGLang adjusts it
    assert Speculation.resolve("NGRAM", 3, 1, None, architecture="x", num_layers=32).draft_fraction == 0.0


def test_the_speculative_flags_are_modelled_now() -> None:
    args = parse_argv(["--model-path", MODEL, "--speculative-algorithm", "EAGLE3", "--speculative-num-steps", "3",
                       "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", "4"])  # fmt: skip
    assert not [flag for flag in unmodelled_flags(args) if flag.startswith("speculative")]


@pytest.mark.parametrize("text", ["", "0", "1.5", "0.8,x", "nan", "-0.1"])
def test_acceptance_outside_zero_to_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="sim-spec-acceptance"):
        parse_acceptance(text)


@given(
    rates=st.lists(st.floats(0.05, 1.0), min_size=1, max_size=8),
    steps=st.integers(1, 8),
    topk=st.integers(1, 4),
)
def test_drawn_lengths_average_the_expected_length_and_stay_in_range(rates: list[float], steps: int, topk: int) -> None:
    spec = Speculation.resolve("EAGLE3", steps, topk, steps * topk + 1, architecture="x", num_layers=32,
                               acceptance=tuple(rates))  # fmt: skip
    rng = random.Random(0)
    draws = [spec.draw(rng, 10_000) for _ in range(4000)]
    assert all(1 <= d <= steps + 1 for d in draws)
    assert sum(draws) / len(draws) == pytest.approx(spec.expected_tokens(), rel=0.06)
    assert all(spec.draw(rng, remaining) <= remaining for remaining in (1, 2, 3))


def test_full_acceptance_gives_every_draft_token() -> None:
    spec = Speculation.resolve("EAGLE3", 4, 1, None, architecture="x", num_layers=32, acceptance=(1.0,))
    assert spec.expected_tokens() == 5 and spec.draw(random.Random(1), 100) == 5


def test_a_step_that_jumps_over_a_chunk_boundary_closes_the_chunk() -> None:
    # --stream-interval 4: chunks close at tokens 1, 5, 9, ...; a speculative step from 3 to 6 crossed 5
    assert chunk_due(6, 100, 4, sent=3)
    assert not chunk_due(7, 100, 4, sent=6)
    assert chunk_due(9, 100, 4, sent=6)
    assert chunk_due(2, 100, 1, sent=1) and chunk_due(4, 100, 1, sent=1)


def test_speculation_pays_at_low_load_when_acceptance_is_high() -> None:
    assert throughput(1, "0.9", 4) > 1.8 * throughput(1, None)


def test_the_best_draft_length_rises_with_acceptance_and_falls_with_load() -> None:
    low, high = best_steps(1, "0.5"), best_steps(1, "0.9")
    assert low < high
    assert best_steps(64, "0.9") < high
    assert best_steps(16, "0.5") <= low


def test_a_long_draft_at_low_acceptance_under_load_is_slower_than_none() -> None:
    assert throughput(64, "0.5", 8) < throughput(64, None)


@pytest.mark.parametrize(("acceptance", "longer"), [("0.45", False), ("0.92", True)])
def test_a_grid_search_tunes_a_longer_draft_when_acceptance_is_high(acceptance: str, longer: bool) -> None:
    plan = BenchmarkPlan((parse_scenario("D(512,256)"),), (4,), max_requests=8, warmup_requests=0)

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        fixed = {"speculative-algorithm": "EAGLE3", "speculative-eagle-topk": 1, "sim-spec-acceptance": acceptance}
        return run_benchmark_in_process(MODEL, {**params, **fixed}, plan)  # type: ignore[dict-item]

    spec = factories.spec(
        model={"id_or_path": MODEL},
        parameters={"speculative-num-steps": list(STEPS)},
        optimization={"strategy": "grid", "objective": "maximize_throughput", "max_iterations": len(STEPS)},
    )
    outcome = run_session(spec, evaluate)
    assert outcome.best is not None
    tuned = int(outcome.best.params["speculative-num-steps"])
    assert (tuned >= 4) if longer else (tuned <= 3)
