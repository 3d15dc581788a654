"""The real trials against the screen's model: fitted TTFT and TPOT factors (geometric means of measured over
predicted), their spread, and Kendall's tau between the predicted and the measured scores."""

from __future__ import annotations

import math
import random

import factories
import pytest
from factories import run_session
from hypothesis import given
from hypothesis import strategies as st

from pytest_autotuner.core.measure.trial import Params
from pytest_autotuner.core.search.calibration import MIN_TAU, MIN_TRIALS, Observation, fit_calibration, kendall_tau


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=30, unique=True))
def test_tau_is_one_for_the_same_order_minus_one_for_the_reverse(xs: list[float]) -> None:
    ys = [3 * x for x in xs]  # the same order (3x + 1 would round tiny x to equal values)
    assert kendall_tau(xs, ys) == pytest.approx(1.0)
    assert kendall_tau(xs, [-y for y in ys]) == pytest.approx(-1.0)


def test_tau_says_nothing_for_fewer_than_two_or_constant_scores() -> None:
    assert kendall_tau([1.0], [2.0]) is None
    assert kendall_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    assert kendall_tau([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(4 / 6)


@given(prefill=st.floats(0.2, 5.0), decode=st.floats(0.2, 5.0), n=st.integers(1, 12))
def test_uniform_factors_are_recovered_exactly_with_no_spread(prefill: float, decode: float, n: int) -> None:
    observations = []
    for i in range(n):
        predicted = {"D(8,8) c=1": {"ttft": 0.01 * (i + 1), "tpot": 0.002 * (i + 1)}}
        measured = {"D(8,8) c=1": {"ttft": 0.01 * (i + 1) * prefill, "tpot": 0.002 * (i + 1) * decode}}
        observations.append(Observation(i, predicted, measured, float(i), float(i)))
    fitted = fit_calibration(observations)
    assert fitted.prefill == pytest.approx(prefill) and fitted.decode == pytest.approx(decode)
    assert fitted.prefill_spread is None if n == 1 else fitted.prefill_spread == pytest.approx(1.0)
    assert fitted.trusted is (n >= MIN_TRIALS)


def test_noisy_factors_give_their_spread_and_a_shuffled_order_is_not_trusted() -> None:
    rng = random.Random(3)
    observations = []
    for i in range(20):
        noise = math.exp(rng.gauss(0, 0.2))
        cell = {"c": {"ttft": 1.0, "tpot": 1.0}}
        observations.append(Observation(i, cell, {"c": {"ttft": 1.5 * noise, "tpot": 1.0}}, float(i),
                                        float(rng.random())))  # fmt: skip
    fitted = fit_calibration(observations)
    assert fitted.prefill == pytest.approx(1.5, rel=0.15) and 1.1 < (fitted.prefill_spread or 0) < 1.4
    assert fitted.tau is not None and abs(fitted.tau) < MIN_TAU and not fitted.trusted
    assert "not trusted" in fitted.text


def test_a_screened_session_reports_its_calibration() -> None:
    """With a model that predicts half the real TTFT and the same TPOT, and orders trials as the truth does."""

    def predict(params: Params) -> tuple[float, dict[str, dict[str, float]]]:
        e2e = factories.latency_model(params)
        real = factories.result(e2e).cells[0]
        cells = {real.label: {"ttft": real.summary("ttft").mean / 2, "tpot": real.summary("tpot").mean}}
        return e2e, cells

    notes: list[str] = []
    spec = factories.spec(optimization={"max_iterations": 8, "screening": True, "screen_seeds": 2})
    outcome = run_session(spec, factories.synthetic_evaluate(), predict=predict, on_note=notes.append)
    calibration = outcome.calibration
    assert calibration is not None and calibration.trials >= MIN_TRIALS
    assert calibration.prefill == pytest.approx(2.0) and calibration.decode == pytest.approx(1.0)
    assert calibration.tau == pytest.approx(1.0) and calibration.trusted
    assert any("the server against the simulator over" in n and "TTFT x2" in n for n in notes)


def test_the_report_plots_each_real_trial_against_its_prediction_and_only_for_a_screened_session() -> None:
    from pytest_autotuner.report.plots import render_plots
    from pytest_autotuner.report.view import report_view

    def predict(params: Params) -> tuple[float, dict[str, dict[str, float]]]:
        real = factories.result(factories.latency_model(params)).cells[0]
        return factories.latency_model(params), {real.label: {"ttft": real.summary("ttft").mean * 0.8,
                                                              "tpot": real.summary("tpot").mean}}  # fmt: skip

    spec = factories.spec(optimization={"max_iterations": 6, "screening": True, "screen_seeds": 2})
    outcome = run_session(spec, factories.synthetic_evaluate(), predict=predict)
    assert outcome.calibration is not None
    assert len(outcome.calibration.observations) == outcome.calibration.trials >= MIN_TRIALS
    plots = {p.name: p for p in render_plots(report_view(outcome).series)}
    assert plots["calibration"].uri is not None and plots["calibration"].uri.startswith("data:image/png;base64,")
    plain = run_session(factories.spec(optimization={"max_iterations": 3}), factories.synthetic_evaluate())
    assert "calibration" not in {p.name for p in render_plots(report_view(plain).series)}
