"""The screen's guide between trials (``core/outcome/screen_guide.py``, issue 32): the calibration is refitted as
real trials come in, a model that orders configurations as the server does picks the next trials and stops the
search when nothing left is predicted to beat the best, and one that does not is dropped, saying so. The models
are injected, so these run on known landscapes (``factories.latency_model``, minimized)."""

from __future__ import annotations

import factories
import pytest
from factories import run_session
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_autotuner.core.measure.trial import Params
from pytest_autotuner.core.outcome.screen_guide import REFIT_EVERY
from pytest_autotuner.core.search.calibration import MIN_TRIALS, PredictFn
from pytest_autotuner.core.search.space import SearchSpace

SPACE = SearchSpace.from_spec(factories.spec())
OPTIMUM = min(SPACE.grid(), key=factories.latency_model)


def model(landscape: object = factories.latency_model, ttft_scale: float = 1.0) -> PredictFn:
    """A screen model scoring by ``landscape`` with the real cells' TPOT and ``ttft_scale`` x their TTFT."""

    def predict(params: Params) -> tuple[float, dict[str, dict[str, float]]]:
        real = factories.result(factories.latency_model(params)).cells[0]
        cells = {real.label: {"ttft": real.summary("ttft").mean * ttft_scale, "tpot": real.summary("tpot").mean}}
        return landscape(params), cells  # type: ignore[operator]

    return predict


def screened(budget: int, seed: int = 1) -> object:
    return factories.spec(optimization={"max_iterations": budget, "screening": True, "screen_seeds": 2, "seed": seed})


def test_a_model_that_orders_as_the_server_does_finds_the_optimum_and_stops_the_search_early() -> None:
    notes: list[str] = []
    fitted: list[tuple[float, float]] = []

    def refit(prefill: float, decode: float) -> PredictFn:
        fitted.append((prefill, decode))
        return model()

    outcome = run_session(screened(30), factories.synthetic_evaluate(), predict=model(ttft_scale=0.5), refit=refit,
                          on_note=notes.append)  # fmt: skip
    assert outcome.best is not None and dict(outcome.best.params) == OPTIMUM
    assert outcome.stopped_early.startswith("no unmeasured configuration is predicted to beat the best measured")
    assert "trials of the budget not run" in outcome.stopped_early
    assert len(outcome.trials) < 30
    # refitted from MIN_TRIALS measured trials on, with the fitted TTFT factor (the model predicted half)
    assert fitted and fitted[0] == pytest.approx((2.0, 1.0))
    assert any("rescreened" in n and "on the fitted model" in n for n in notes)


def test_a_model_that_orders_against_the_server_is_dropped_and_the_search_runs_its_budget() -> None:
    notes: list[str] = []
    inverted = model(landscape=lambda p: -factories.latency_model(p))
    outcome = run_session(screened(14), factories.synthetic_evaluate(), predict=inverted, on_note=notes.append)
    dropped = [n for n in notes if "screening not trusted" in n]
    assert len(dropped) == 1 and "goes on as bayesian search without it" in dropped[0]
    assert outcome.stopped_early == ""
    assert len(outcome.trials) == 14
    # after the screen's first seeds, no trial came from it
    screen_trials = [t.number for t in outcome.trials if t.origin == "screen"]
    assert len(screen_trials) <= 2


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), budget=st.integers(MIN_TRIALS, 24), inverted=st.booleans())
def test_the_guide_never_stops_before_twice_min_trials_nor_spends_more_than_the_budget(
    seed: int, budget: int, inverted: bool
) -> None:
    """Any seed and budget, a good or a misleading model: the study stays within its budget, a stop on the
    screen's word comes only after 2 x MIN_TRIALS measured trials, and the answer is measured, never predicted."""
    landscape = (lambda p: -factories.latency_model(p)) if inverted else factories.latency_model
    outcome = run_session(screened(budget, seed), factories.synthetic_evaluate(), predict=model(landscape))
    assert len(outcome.trials) <= budget
    if outcome.stopped_early.startswith("no unmeasured configuration"):
        measured = [t for t in outcome.trials if t.measured and t.repeat_of is None]
        assert len(measured) >= 2 * MIN_TRIALS and not inverted
    assert outcome.best is not None and any(dict(t.params) == dict(outcome.best.params) for t in outcome.trials)


def test_refits_come_every_few_measured_trials() -> None:
    fitted: list[tuple[float, float]] = []

    def refit(prefill: float, decode: float) -> PredictFn:
        fitted.append((prefill, decode))
        return model(landscape=lambda p: 5.0)  # predicts nothing better: stops at 2 x MIN_TRIALS

    outcome = run_session(screened(40), factories.synthetic_evaluate(), predict=model(), refit=refit)
    measured = [t for t in outcome.trials if t.measured and t.repeat_of is None]
    assert len(fitted) == (len(measured) - MIN_TRIALS) // REFIT_EVERY + 1


def test_a_model_blind_to_one_parameter_does_not_stop_the_search_on_agreeing_ranks() -> None:
    """The model ignores the memory fraction (which moves latency by up to 9% here): its ranks agree with the
    measured ones well (tau above STOP_TAU), but its errors on the measured trials are larger than the noise, so it
    may pick trials and may not end the search; the budget runs and the optimum is found."""
    from pytest_autotuner.core.outcome.screen_guide import STOP_TAU

    def blind(params: Params) -> float:
        return factories.latency_model({**params, "mem-fraction-static": 0.8})

    notes: list[str] = []
    outcome = run_session(screened(20), factories.synthetic_evaluate(), predict=model(landscape=blind),
                          on_note=notes.append)  # fmt: skip
    assert outcome.calibration is not None and outcome.calibration.tau is not None
    assert outcome.calibration.tau >= STOP_TAU  # the ranks alone would have stopped it
    assert outcome.stopped_early == "" and len(outcome.trials) == 20
    assert any("no stop: it predicts the measured trials only within" in n for n in notes)
    # (with ranks alone it stopped after 11 trials on mem-fraction-static 0.75, 4.5% slower than the optimum)
    assert outcome.best is not None and dict(outcome.best.params) == OPTIMUM
