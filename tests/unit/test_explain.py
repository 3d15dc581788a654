"""The answer explained in results.json and the summary: importance with the trials it rests on, where a
request's time goes, and serving cost only when the spec gives a price."""

from __future__ import annotations

import factories
import pytest
from factories import run_session, synthetic_evaluate
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_autotuner.core.measure.metrics import BenchResult, CellMetrics, RequestRecord
from pytest_autotuner.core.outcome.outcome import TaskOutcome
from pytest_autotuner.report.data import MIN_IMPORTANCE_TRIALS, results_summary
from pytest_autotuner.report.explain import cell_breakdown, gpu_price, serving_cost_line, time_breakdown
from pytest_autotuner.report.plots import render_plots
from pytest_autotuner.report.terminal import summary_lines
from pytest_autotuner.report.tradeoff import TradeoffPoint, tradeoff_frontier
from pytest_autotuner.report.view import report_view


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
    assert not any("serving cost" in line for line in summary_lines(report_view(enough), None))


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
    assert any(line in summary for summary in summary_lines(report_view(outcome), None))


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


POINT = st.builds(
    TradeoffPoint,
    trial=st.integers(0, 5),
    load=st.sampled_from(["c=1", "c=8"]),
    per_gpu=st.floats(1, 1e4),
    per_user=st.floats(1, 500),
)


@settings(max_examples=200, deadline=None)
@given(points=st.lists(POINT, max_size=30))
def test_the_frontier_is_every_point_nothing_beats_on_both_axes(points: list[TradeoffPoint]) -> None:
    front = tradeoff_frontier(points)

    def beaten(p: TradeoffPoint) -> bool:
        return any(
            (q.per_gpu >= p.per_gpu and q.per_user >= p.per_user) and (q.per_gpu, q.per_user) != (p.per_gpu, p.per_user)
            for q in points
        )

    assert {(p.per_gpu, p.per_user) for p in front} == {(p.per_gpu, p.per_user) for p in points if not beaten(p)}


def test_the_tradeoff_plot_and_block_need_more_than_one_load() -> None:
    one = session(3)
    assert results_summary(one)["tradeoff"] is None
    assert "tradeoff" not in {p.name for p in render_plots(report_view(one).series)}
    spec = factories.spec(
        optimization={"max_iterations": 3, "n_initial_random": 2}, benchmark={"num_concurrency": [2, 8]}
    )
    two = run_session(
        spec,
        lambda params, deadline: BenchResult([factories.cell(1.0, concurrency=2), factories.cell(2.0, concurrency=8)]),
    )
    block = results_summary(two)["tradeoff"]
    assert {p["load"] for p in block["points"]} == {"c=2", "c=8"}
    assert block["frontier"]
    (plot,) = [p for p in render_plots(report_view(two).series) if p.name == "tradeoff"]
    assert plot.uri is not None and plot.uri.startswith("data:image/png")


def test_per_dollar_states_the_per_gpu_objective_at_the_price() -> None:
    spec = factories.spec(
        parameters={"chunked-prefill-size": [512, 1024, 2048]},
        optimization={"objective": "maximize_throughput", "per_gpu": True, "per_dollar": True, "max_iterations": 3,
                      "n_initial_random": 2},
        cost={"gpu_hour": 2.0},
    )  # fmt: skip
    outcome = run_session(spec, synthetic_evaluate_chunks)
    block = results_summary(outcome)["serving_cost"]["per_dollar"]
    assert block["unit"] == "output tokens per USD"
    assert block["value"] == pytest.approx(outcome.best.score.objective * 3600 / 2.0)
    assert "maximize_throughput per dollar: " in serving_cost_line(outcome)


def synthetic_evaluate_chunks(params: dict[str, object], deadline: object) -> BenchResult:
    return factories.result(1.0 + int(str(params["chunked-prefill-size"])) / 4096)


def test_per_dollar_without_a_price_or_per_gpu_is_refused_naming_what_is_missing() -> None:
    with pytest.raises(ValueError, match=r"lacks a `cost.gpu_hour` price"):
        factories.spec(optimization={"objective": "maximize_throughput", "per_gpu": True, "per_dollar": True})
    with pytest.raises(ValueError, match=r"lacks `optimization.per_gpu`: true;"):
        factories.spec(optimization={"objective": "maximize_throughput", "per_dollar": True}, cost={"gpu_hour": 1})


def test_server_timings_split_the_time_before_the_first_token_into_queueing_and_prefill(
    enough: TaskOutcome,
) -> None:
    (row,) = time_breakdown(enough)["cells"]  # type: ignore[index]
    assert row["best"]["mean_queueing"] is None  # the factory's records carry no server timings
    assert "queueing and prefill are not told apart" in time_breakdown(enough)["source"]  # type: ignore[index]

    queued = run_session(
        factories.spec(optimization={"max_iterations": 12, "n_initial_random": 2}),
        lambda params, deadline: factories.result(factories.latency_model(params), queue=0.75),
    )
    block = time_breakdown(queued)
    assert block is not None
    best = block["cells"][0]["best"]
    assert best["server_timings"]
    assert best["queueing_share"] == pytest.approx(0.075)  # 3/4 of a TTFT that is a tenth of E2E
    assert best["prefill_share"] == pytest.approx(0.025)
    assert best["decode_share"] == pytest.approx(0.9)
    assert best["mean_running"] == pytest.approx(best["mean_in_flight"] * 0.925)  # all but the queued time
    assert block["source"].startswith("the server's per-request timings")
    (line,) = block["lines"]  # SGLang's defaults measured beside the best
    assert line.startswith("at D(100,100) c=4 the defaults queue ") and "x as many requests at once" in line
    assert "the best runs " in line  # running, not held: with the server's timings queued requests are left out


@settings(max_examples=100, deadline=None)
@given(
    timings=st.lists(
        st.tuples(st.floats(0.01, 100), st.floats(0, 1), st.floats(0, 1.5), st.booleans()), min_size=1, max_size=20
    ),
    histogram=st.none() | st.tuples(st.floats(0, 1e4), st.integers(0, 50)),
)
def test_queueing_prefill_and_decode_add_up_to_e2e_or_fall_back_to_the_first_token(
    timings: list[tuple[float, float, float, bool]], histogram: tuple[float, int] | None
) -> None:
    """Any mix of requests: with the queue time on every one the three parts are non-negative and add up to E2E
    (a queue time past the first token, which a server should not report, is capped there); if one lacks it, the
    server's queue-time histogram over the cell (SGLang's --enable-metrics) splits by its mean, capped the same
    way; with neither the cell keeps only the split at the first token."""
    records = [
        RequestRecord(
            0.0, 10, 10, output_tokens=10, ttft=e2e * first, e2e=e2e, queue_time=e2e * first * q if say else None
        )
        for e2e, first, q, say in timings
    ]
    row = cell_breakdown(CellMetrics("D(10,10)", 4, 10.0, records, server_queue=histogram))
    assert row["mean_waiting_and_prefill"] + row["mean_decode"] == pytest.approx(row["mean_e2e"])
    told = all(say for *_, say in timings) or (histogram is not None and histogram[1] > 0)
    if told:
        assert row["server_timings"] == ("per-request" if all(say for *_, say in timings) else "metrics")
        assert row["mean_queueing"] >= 0 and row["mean_prefill"] >= -1e-9
        parts = row["mean_queueing"] + row["mean_prefill"] + row["mean_decode"]
        assert parts == pytest.approx(row["mean_e2e"])
    else:
        assert row["mean_queueing"] is None and row["mean_prefill"] is None and not row["server_timings"]
