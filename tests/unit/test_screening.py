"""Screening (``optimization.screening``): a cheap model scores the space before the first real trial, and the
first trials after SGLang's defaults go to its best configurations, apart from each other; the search goes on
as before after them. The model is injected, so these tests use known landscapes."""

from __future__ import annotations

import factories
import pytest
from factories import run_session
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_autotuner.core.measure.trial import Params
from pytest_autotuner.core.search.screening import screen_space
from pytest_autotuner.core.search.space import SearchSpace


def seed_space() -> SearchSpace:
    return SearchSpace.from_spec(factories.spec())  # 2 x 5 x 2 x 4 = 80 points


def landscape(params: Params) -> float:
    return factories.latency_model(params)  # best at mem 0.8, fcfs, small chunks, tp 1


def test_a_small_space_is_scored_whole_and_the_best_comes_first() -> None:
    screening = screen_space(seed_space(), landscape, size=500, seeds=3)
    assert screening.scored == 80 and screening.unscored == 0
    best = min((p for p in seed_space().grid()), key=landscape)
    assert screening.seeds[0] == best
    assert list(screening.predicted) == sorted(screening.predicted)


@settings(max_examples=30, deadline=None)
@given(seeds=st.integers(1, 8), spread=st.integers(1, 4), size=st.integers(1, 120))
def test_seeds_differ_from_each_other_in_at_least_spread_parameters(seeds: int, spread: int, size: int) -> None:
    screening = screen_space(seed_space(), landscape, size=size, seeds=seeds, spread=spread)
    assert screening.scored <= size and len(screening.seeds) <= seeds
    for i, a in enumerate(screening.seeds):
        for b in screening.seeds[i + 1 :]:
            assert sum(a[k] != b[k] for k in a) >= spread


def test_a_large_space_is_sampled_not_listed_and_unscorable_points_are_counted() -> None:
    spec = factories.spec(parameters={"max-running-requests": {"low": 1, "high": 10**9},
                                      "chunked-prefill-size": {"low": 64, "high": 10**6}})  # fmt: skip
    space = SearchSpace.from_spec(spec)
    calls: list[Params] = []

    def every_other(params: Params) -> float | None:
        calls.append(params)
        return None if len(calls) % 2 else float(params["max-running-requests"])

    progress: list[tuple[int, int]] = []
    screening = screen_space(space, every_other, size=300, seeds=2, on_progress=lambda d, t: progress.append((d, t)))
    assert len(calls) == 300 and screening.scored == 150 and screening.unscored == 150
    assert progress[-1] == (300, 300)
    assert "150 not scorable" in screening.summary


def test_the_first_trials_after_the_defaults_are_the_screens_seeds() -> None:
    notes: list[str] = []
    spec = factories.spec(optimization={"max_iterations": 8, "screening": True, "screen_seeds": 3})
    outcome = run_session(spec, factories.synthetic_evaluate(), predict=lambda p: (landscape(p), {}),
                          on_note=notes.append)  # fmt: skip
    trials = sorted(outcome.trials, key=lambda t: t.number)
    assert trials[0].origin == "sglang_defaults"
    screened = screen_space(seed_space(), landscape, size=500, seeds=3)
    assert [t.params for t in trials[1:4]] == list(screened.seeds)
    assert all(t.origin == "screen" for t in trials[1:4]) and all(t.origin == "" for t in trials[4:])
    assert any("screened 80 configurations on the simulator" in n for n in notes)
    assert outcome.best is not None and outcome.best.params == screened.seeds[0]  # the landscape is the truth here


def test_screening_without_a_model_says_why_and_searches_as_before() -> None:
    notes: list[str] = []
    spec = factories.spec(optimization={"max_iterations": 4, "screening": True})
    outcome = run_session(spec, factories.synthetic_evaluate(), no_screen="no model", on_note=notes.append)
    assert any(n.endswith("screening off: no model") for n in notes)
    assert not [t for t in outcome.trials if t.origin == "screen"]


@pytest.mark.parametrize("screening", [False, True])
def test_screening_does_not_change_the_study_name(screening: bool) -> None:
    from pytest_autotuner.core.search.study import study_name_for

    plain = factories.spec()
    other = factories.spec(optimization={"screening": screening, "screen_size": 77, "screen_seeds": 5})
    assert study_name_for(other, "sim") == study_name_for(plain, "sim")
