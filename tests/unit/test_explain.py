"""The answer explained in results.json and the summary: importance with the trials it rests on, where a
request's time goes, and serving cost only when the spec gives a price."""

from __future__ import annotations

import factories
import pytest
from factories import run_session, synthetic_evaluate

from pytest_autotuner.core.task import TaskOutcome
from pytest_autotuner.report.data import MIN_IMPORTANCE_TRIALS, results_summary
from pytest_autotuner.report.explain import gpu_price, serving_cost_line
from pytest_autotuner.report.text import summary_lines


def session(iterations: int, **overrides: object) -> TaskOutcome:
    initial = min(2, iterations - 1) or None
    spec = factories.spec(optimization={"max_iterations": iterations, "n_initial_random": initial}, **overrides)
    return run_session(spec, synthetic_evaluate())


@pytest.fixture(scope="module")
def enough() -> TaskOutcome:
    return session(12)


@pytest.mark.parametrize("iterations", range(1, MIN_IMPORTANCE_TRIALS))
def test_fewer_trials_than_the_evaluator_needs_is_a_warning_not_numbers(iterations: int) -> None:
    block = results_summary(session(iterations))["importance"]
    assert block["importances"] is None
    assert block["trials"] < MIN_IMPORTANCE_TRIALS
    assert block["warning"].startswith("not enough trials for parameter importance: only ")


def test_importance_in_results_rests_on_its_trials(enough: TaskOutcome) -> None:
    block = results_summary(enough)["importance"]
    assert block["trials"] >= MIN_IMPORTANCE_TRIALS and block["warning"] is None
    assert set(block["importances"]) <= set(enough.spec.parameters)
    assert sum(block["importances"].values()) == pytest.approx(1.0)


def test_no_price_no_cost_figures(enough: TaskOutcome) -> None:
    assert results_summary(enough)["serving_cost"] is None
    assert serving_cost_line(enough) == ""
    assert not any("serving cost" in line for line in summary_lines(enough, None))


@pytest.mark.parametrize(
    ("gpu_hour", "price"), [(2.0, 2.0), ({"h100": 3.0, "a100-80g": 1.0}, 3.0), ({"H100": 3.0, "h100-sim": 4.0}, 3.0)]
)
def test_a_price_gives_cost_per_million_tokens_and_per_1000_requests(gpu_hour: object, price: float) -> None:
    outcome = session(3, cost={"gpu_hour": gpu_hour, "source": "quote 2026-12"}, runtime="sim")
    block = results_summary(outcome)["serving_cost"]
    assert block["gpu_hour"] == price and block["source"] == "quote 2026-12"
    (row,) = block["best"]
    gpus = row["gpus"]
    assert row["per_million_output_tokens"] == pytest.approx(gpus * price / 3600 / row["output_tokens_per_s"] * 1e6)
    assert row["per_1000_requests"] == pytest.approx(gpus * price / 3600 / row["requests_per_s"] * 1e3)
    assert block["tuning_run"]["cost"] == pytest.approx(outcome.cost.gpu_seconds / 3600 * price)
    line = serving_cost_line(outcome)
    assert line.startswith(f"serving cost at ${price:.2f} per ") and "(quote 2026-12)" in line
    assert any(line in summary for summary in summary_lines(outcome, None))


def test_a_table_without_the_gpu_says_so_instead_of_a_figure() -> None:
    outcome = session(2, cost={"gpu_hour": {"b200": 6.0}}, runtime="sim")
    assert gpu_price(outcome) == (None, "no price for the GPU 'h100' in cost.gpu_hour (priced: b200)")
    assert "best" not in results_summary(outcome)["serving_cost"]
    assert serving_cost_line(outcome) == "serving cost: no price for the GPU 'h100' in cost.gpu_hour (priced: b200)"


def test_time_breakdown_splits_e2e_at_the_first_token(enough: TaskOutcome) -> None:
    (row,) = results_summary(enough)["time_breakdown"]["cells"]
    best = row["best"]
    assert best["mean_waiting_and_prefill"] + best["mean_decode"] == pytest.approx(best["mean_e2e"])
    assert best["waiting_and_prefill_share"] == pytest.approx(0.1)  # the factory's TTFT is a tenth of E2E
    assert best["mean_in_flight"] > 0
