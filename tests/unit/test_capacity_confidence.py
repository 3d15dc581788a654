"""Issue 29: a load step's verdict carries its uncertainty (core/measure/capacity.py), every step is measured from
the same server state on arrivals seeded by its load alone (evaluate.run_ladder), and repeat runs of one configuration
agree; the neighbours of the reported case (a P99 decided by one short step's arrival sample) as a family."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pytest
from factories import spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from pytest_autotuner.core.measure.capacity import (
    Interval,
    Step,
    capacity_spread,
    judge_step,
    mean_interval,
    percentile_interval,
    sized_step_requests,
    step_seed,
)
from pytest_autotuner.core.measure.metrics import BenchResult, CellMetrics, RequestRecord
from pytest_autotuner.core.measure.plan import BenchmarkPlan, CellKey
from pytest_autotuner.core.measure.trial import Deadline, Params
from pytest_autotuner.core.outcome.baseline import capacity_change, compare, make_baseline
from pytest_autotuner.core.outcome.task import TaskOptions, run_task
from pytest_autotuner.core.spec.capacity_limits import CapacityLimits
from pytest_autotuner.evaluate import plan_from_spec, run_ladder
from pytest_autotuner.report.data import results_summary
from pytest_autotuner.report.html import render_report
from pytest_autotuner.report.text import answer_line
from pytest_autotuner.report.view import report_view

P99_TTFT = {"ttft": {"p99": {"threshold": 0.2}}}


def ttft_cell(ttfts: list[float] | np.ndarray, rate: float = 1.0, served: float | None = None) -> CellMetrics:
    """A ladder cell at ``rate`` whose requests had these TTFTs (and 1 s E2E, 100 tokens), completed at ``served``
    per second (default: the rate)."""
    records = [
        RequestRecord(
            send_time=i / rate, requested_input_tokens=100, requested_output_tokens=100, input_tokens=100,
            output_tokens=100, ttft=float(t), e2e=float(t) + 1.0,
        )
        for i, t in enumerate(ttfts)
    ]  # fmt: skip
    return CellMetrics("D(100,100)", 0, len(records) / (served or rate), records, request_rate=rate)


def judge(cells: list[CellMetrics], slo: dict[str, Any], *, final: bool) -> Step:
    s = spec(slo=slo)
    return judge_step(1.0, cells, max_error_rate=0.1, min_completed=None, slo=s.slo, final=final)


# -- the intervals ----------------------------------------------------------------------------------------------


def test_the_percentile_interval_is_the_order_statistic_interval() -> None:
    sample = np.arange(1, 401, dtype=float)  # x_(k) = k
    value, low, high = percentile_interval(sample, 0.9, 0.95)
    assert value == pytest.approx(np.percentile(sample, 90))
    # ranks from Binomial(400, 0.9): P(B < l) <= 2.5%, P(B < u) >= 97.5%
    assert low == binom.ppf(0.025, 400, 0.9) and high == binom.ppf(0.975, 400, 0.9) + 1
    assert binom.cdf(low - 1, 400, 0.9) <= 0.025 <= binom.cdf(low, 400, 0.9)


@pytest.mark.parametrize(("q", "need"), [(0.99, 368), (0.95, 72), (0.9, 36)])
def test_a_percentile_closes_above_from_the_sized_step_length_on(q: float, need: int) -> None:
    statistic = f"p{round(q * 100)}"
    assert sized_step_requests(spec(slo={"ttft": {statistic: {"threshold": 1.0}}}).slo) == need
    assert percentile_interval(np.zeros(need), q, 0.95)[2] == 0.0  # n = need: the largest sample bounds it
    assert math.isinf(percentile_interval(np.zeros(need - 1), q, 0.95)[2])  # one fewer: nothing bounds it


@settings(max_examples=25, deadline=None)
@given(
    q=st.sampled_from([0.5, 0.9, 0.99]),
    n=st.integers(min_value=40, max_value=1500),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_the_percentile_interval_covers_the_true_percentile_at_its_confidence(q: float, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = -math.log(1 - q)  # of Exp(1)
    draws = rng.exponential(1.0, size=(300, n))
    covered = 0
    for row in draws:
        _, low, high = percentile_interval(row, q, 0.9)
        covered += low <= truth <= high
    # at least 90% (conservative: discrete ranks), with room for 300 draws' own spread (3 sigma ~ 5%)
    assert covered / 300 >= 0.85


def test_the_mean_interval_is_a_t_interval() -> None:
    sample = np.array([1.0, 2.0, 3.0, 4.0])
    mean, _, high = mean_interval(sample, 0.95)
    assert mean == 2.5 and high - mean == pytest.approx(3.182446 * sample.std(ddof=1) / 2, rel=1e-5)
    assert math.isinf(mean_interval([1.0], 0.95)[2])


# -- the step rule: hold, break, or measure again -----------------------------------------------------------------


def test_a_step_holds_only_when_every_interval_is_within_its_threshold() -> None:
    step = judge([ttft_cell([0.1] * 400)], P99_TTFT, final=False)
    assert step.holds and step.decided and not step.extend
    assert step.intervals[0].outcome == "within" and step.intervals[0].n == 400
    assert step.verdict.startswith("held: every interval")


def test_a_step_whose_interval_straddles_is_measured_again_then_decided_on_the_point_estimate() -> None:
    # 4 of 400 over the threshold: the P99 interval reaches both sides of it
    cells = [ttft_cell([0.1] * 396 + [0.5] * 4)]
    step = judge(cells, P99_TTFT, final=False)
    assert step.extend and not step.holds and step.intervals[0].outcome == "straddles"
    assert "measuring again" in step.verdict
    last = judge(cells, P99_TTFT, final=True)  # the budget is spent: the point estimate (0.104 s) decides
    assert last.holds and not last.decided and not last.extend
    assert "point estimate" in last.verdict


def test_a_step_breaks_without_more_measurements_when_an_interval_is_wholly_over() -> None:
    # every tenth request slow, throughout the step: 10% over a P99 threshold in every block of it
    step = judge([ttft_cell([0.5 if i % 10 == 9 else 0.1 for i in range(400)])], P99_TTFT, final=False)
    assert not step.holds and step.decided and not step.extend
    assert "ttft p99 500 ms > 200 ms (95% interval [500 ms, 500 ms], n=400)" in step.reason


def test_one_burst_is_no_confident_break_but_a_reason_to_measure_again() -> None:
    # the same 40 slow requests in one burst at the end (a queue): per request a sure break, per block of the
    # step one bad block of eight; latencies of neighbours move together, so the step is measured again
    burst = [ttft_cell([0.1] * 360 + [0.5] * 40)]
    step = judge(burst, P99_TTFT, final=False)
    assert step.extend and step.intervals[0].low > 0.2 and step.intervals[0].block_low < 0.01
    assert not judge(burst, P99_TTFT, final=True).holds  # its point estimate, once the budget is spent


def test_a_short_step_cannot_hold_a_p99_with_confidence() -> None:
    # the reported case: 140 requests, all fast; its P99 is its second-largest sample, its interval is unbounded
    step = judge([ttft_cell([0.1] * 140)], P99_TTFT, final=False)
    assert step.extend and math.isinf(step.intervals[0].high)


def test_measurements_of_one_step_are_pooled() -> None:
    # alone each straddles (3 of 200 over, 1.5%); pooled with a clean second measurement, 3 of 600 (0.5%)
    first = ttft_cell([0.1] * 197 + [0.5] * 3)
    assert judge([first], P99_TTFT, final=False).extend
    pooled = judge([first, ttft_cell([0.1] * 400)], P99_TTFT, final=False)
    assert pooled.intervals[0].n == 600
    assert pooled.requests == 600


@settings(max_examples=60, deadline=None)
@given(
    repeats=st.lists(
        st.tuples(st.integers(100, 400), st.floats(0.0, 0.04), st.integers(0, 2**31)), min_size=1, max_size=3
    ),
    statistic=st.sampled_from(["p99", "p90", "mean"]),
    final=st.booleans(),
)
def test_a_steps_slo_checks_say_what_decided_it(
    repeats: list[tuple[int, float, int]], statistic: str, final: bool
) -> None:
    """The family of "a capacity that reads as an SLO miss": a step is held or broken on its measurements pooled,
    so the SLO checks it carries (what the trial's score, the summary's "SLO miss" and the report show) are the
    pooled statistics that decided it, one per scenario and SLO, never one measurement's own. Before, a step held
    on two pooled measurements carried each measurement's checks, and a confirmation run read "6.91 req/s per GPU,
    SLO miss x1" on the capacity it had just held."""
    slo = {"ttft": {statistic: {"threshold": 0.2}}} if statistic != "mean" else {"ttft": {"threshold": 0.2}}
    cells = []
    for n, share, seed in repeats:
        rng = np.random.default_rng(seed)
        slow = rng.random(n) < share
        cells.append(ttft_cell(np.where(slow, 0.5 if statistic != "mean" else 0.2 + 3 * share, 0.1 + share)))
    step = judge(cells, slo, final=final)
    assert len(step.checks) == 1
    (check,) = step.checks
    (interval,) = step.intervals
    assert check.value == interval.value and check.threshold == 0.2
    if step.holds:
        assert check.passed, (step.verdict, check)
    elif not step.extend:  # broken on the SLO (every request finished: no overload)
        assert not check.passed, (step.verdict, check)


def test_a_mean_slo_uses_its_t_interval() -> None:
    mean_slo = {"ttft": {"threshold": 0.2}}
    rng = np.random.default_rng(1)
    assert judge([ttft_cell(rng.uniform(0.0, 0.3, 400))], mean_slo, final=False).holds  # mean 0.15 +- 0.009
    assert judge([ttft_cell(rng.uniform(0.1, 0.3, 400))], mean_slo, final=False).extend  # mean 0.2: straddles


def test_steps_round_trip_through_results_json_with_their_intervals() -> None:
    step = judge([ttft_cell([0.1] * 396 + [0.5] * 4)], P99_TTFT, final=True)
    back = Step.from_dict(json.loads(json.dumps(step.as_dict())))
    assert json.dumps([i.as_dict() for i in back.intervals]) == json.dumps([i.as_dict() for i in step.intervals])
    assert not back.decided and back.verdict == step.verdict
    unbounded = Interval("c", "ttft", "p99", 0.1, 0.1, math.inf, 0.2, 140, 0.95, -math.inf, math.inf, 0.01)
    assert Interval.from_dict(json.loads(json.dumps(unbounded.as_dict()))).high == math.inf  # inf is written null


def test_capacity_spread_is_max_over_min() -> None:
    assert capacity_spread([2.0, 2.0]) == 0.0
    assert capacity_spread([1.6, 2.36]) == pytest.approx(0.475)
    assert math.isnan(capacity_spread([2.0]))


# -- the ladder: clean state and arrivals seeded by the load ---------------------------------------------------


class QueueServer:
    """A fake server whose TTFTs at rate r are exponential with mean ``base / (1 - r / cap)`` (a queue), drawn
    from the plan's seed (the client draws its arrivals from it), serving at most ``cap`` requests per second; an
    overloaded step leaves a backlog that slows whatever runs next until ``drain`` is called."""

    def __init__(self, cap: float, base: float = 0.01) -> None:
        self.cap, self.base = cap, base
        self.backlog = 0.0
        self.calls: list[tuple[str, float, int]] = []

    def truth(self, threshold: float) -> float:
        """The rate whose P99 TTFT is ``threshold``."""
        return self.cap * (1 - self.base * math.log(100) / threshold)

    def drain(self) -> None:
        self.calls.append(("drain", 0.0, 0))
        self.backlog = 0.0

    def run_benchmark(self, endpoint: object, plan: BenchmarkPlan, deadline: Deadline | None = None) -> BenchResult:
        rate = plan.request_rates[0]
        self.calls.append(("step", rate, plan.seed))
        # a unit-rate sample scaled by the load when the plan asks for common arrivals (a ladder step), as the
        # client draws them; else keyed by the rate too
        key = 0 if plan.common_arrivals else round(rate * 1e6)
        rng = np.random.default_rng([plan.seed, key])
        util = rate / self.cap
        mean = self.base / (1 - util) if util < 0.98 else 5.0
        ttfts = rng.exponential(1.0, plan.max_requests) * mean + self.backlog
        self.backlog += 2.0 if util >= 0.98 else 0.0
        return BenchResult([ttft_cell(ttfts, rate, served=min(rate, self.cap))])


def ladder_plan(**capacity: object) -> BenchmarkPlan:
    settings_ = {"min": 0.25, "max": 32, "max_steps": 8, "step_seconds": 40, **capacity}
    s = spec(
        optimization={"objective": "maximize_goodput"},
        benchmark={"capacity": settings_, "max_time_per_iteration": 60},
        slo=P99_TTFT,
    )
    return plan_from_spec(s, 0)


def test_every_measurement_starts_drained_and_every_load_meets_the_same_arrivals() -> None:
    server = QueueServer(cap=3.0)
    run_ladder(server.run_benchmark, None, ladder_plan(), Deadline(None), server.drain)  # type: ignore[arg-type]
    kinds = [kind for kind, _, _ in server.calls]
    assert kinds == ["drain", "step"] * (len(kinds) // 2)  # a drain before every measurement, not only after breaks
    seeds = [seed for kind, _, seed in server.calls if kind == "step"]
    # common random numbers: the first measurement of every load on one seed, whatever came before; a repeat of a
    # step on another (fresh arrivals)
    assert seeds[0] == step_seed(0, 0) and set(seeds) <= {step_seed(0, r) for r in range(3)}
    assert len({step_seed(0, r) for r in range(3)}) == 3


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cap=st.floats(min_value=0.8, max_value=28.0),
    step_seconds=st.sampled_from([10.0, 40.0]),
    top=st.sampled_from([16.0, 32.0, 64.0]),
)
def test_the_reported_family_repeat_ladders_agree_and_find_the_truth(
    cap: float, step_seconds: float, top: float
) -> None:
    """Neighbours of the reported case: a P99 SLO, a ceiling far above the capacity, short steps. Two runs of one
    (noise-free) configuration give one answer, within the ladder's tolerance (twice: one bisection step, one
    sampling step) below the truth, never above it by more than the interval's reach."""
    answers = []
    for _ in range(2):
        server = QueueServer(cap)
        plan = ladder_plan(max=top, step_seconds=step_seconds)
        result = run_ladder(server.run_benchmark, None, plan, Deadline(None), server.drain)  # type: ignore[arg-type]
        answers.append(result.capacities[0].capacity)
    assert answers[0] == answers[1]
    truth = min(top, QueueServer(cap).truth(0.2))  # a server holding the ceiling is answered 'at least max'
    assert truth / 1.1 <= answers[0] <= truth * 1.05, (answers, truth)


def test_a_budget_of_one_measurement_keeps_the_old_single_step_rule() -> None:
    server = QueueServer(cap=3.0)
    plan = ladder_plan(max_repeats=1, min_step_requests=20)
    ladder = run_ladder(server.run_benchmark, None, plan, Deadline(None), server.drain).capacities[0]  # type: ignore[arg-type]
    assert all(step.repeats == 1 for step in ladder.steps)
    assert CapacityLimits(min_step_requests=20).step_requests(0.5, 0) == 20


@pytest.mark.parametrize(("min_repeats", "max_repeats"), [(1, 1), (1, 3), (2, 3), (3, 3), (3, 5)])
@pytest.mark.parametrize("cap", [1.3, 3.0, 12.0])
def test_every_step_is_measured_at_least_min_repeats_times_and_judged_pooled(
    min_repeats: int, max_repeats: int, cap: float
) -> None:
    """``benchmark.capacity.min_repeats``: however clearly a step's first measurement held or broke, it is measured
    min_repeats times on distinct arrival samples, each from a drained server, and judged on all of them; never
    more than max_repeats."""
    server = QueueServer(cap=cap)
    plan = ladder_plan(min_repeats=min_repeats, max_repeats=max_repeats)
    ladder = run_ladder(server.run_benchmark, None, plan, Deadline(None), server.drain).capacities[0]  # type: ignore[arg-type]
    assert all(min_repeats <= step.repeats <= max_repeats for step in ladder.steps)
    steps = [(rate, seed) for kind, rate, seed in server.calls if kind == "step"]
    assert len(steps) == sum(step.repeats for step in ladder.steps)
    for step in ladder.steps:
        seeds = [seed for rate, seed in steps if rate == step.load]
        assert seeds[: step.repeats] == [step_seed(0, r) for r in range(step.repeats)]
        assert plan.capacity is not None  # every measurement's requests are in the verdict (pooled)
        assert step.requests == step.repeats * plan.capacity.step_requests(step.load, plan.max_requests)


def test_min_repeats_above_max_repeats_is_an_error_naming_both() -> None:
    with pytest.raises(ValueError, match=r"`min_repeats` \(4\) is above `max_repeats` \(3\)"):
        ladder_plan(min_repeats=4)


# -- confirmation: the spread, the gate, the report --------------------------------------------------------------


def test_the_capacity_gate_allows_the_ladders_resolution_and_still_flags_a_real_drop() -> None:
    key = CellKey("D(100,100)", 0)
    # two noise-free runs each side, one bisection bracket (5%) apart: the same server, answered at two ends
    same_server = capacity_change("capacity", key, [2.0, 2.0], [1.9, 1.9], tolerance=0.03, resolution=0.05)
    assert same_server.p_value == 0.0 and not same_server.regressed  # certain, but within the resolution
    drop = capacity_change("capacity", key, [2.0, 2.0], [1.5, 1.5], tolerance=0.03, resolution=0.05)
    assert drop.regressed and drop.tolerance == pytest.approx(0.08)
    noisy = capacity_change("capacity", key, [2.0, 2.4, 1.7], [1.7, 1.8, 2.1], tolerance=0.1, resolution=0.05)
    assert not noisy.regressed  # the runs' spread: the t-test, as for other metrics


def test_a_goodput_session_reports_its_spread_and_each_steps_intervals() -> None:
    s = spec(
        parameters={"tp-size": [1]},
        optimization={"objective": "maximize_goodput", "max_iterations": 1, "confirm_runs": 2, "strategy": "grid"},
        benchmark={"capacity": {"min": 0.5, "max": 32, "max_steps": 8}},
        slo=P99_TTFT,
    )
    plan = plan_from_spec(s, 0)

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        server = QueueServer(cap=5.0)
        return run_ladder(server.run_benchmark, None, plan, deadline, server.drain)  # type: ignore[arg-type]

    outcome = run_task(s, TaskOptions(seed=1, study_name="unit"), evaluate, None)
    assert outcome.best is not None
    capacity = results_summary(outcome)["best"]["capacity"]
    assert capacity["spread"] == 0.0 and len(capacity["run_capacities"]) == 2  # one answer, twice
    assert capacity["resolution"] >= 0.05
    step = capacity["runs"][0]["steps"][-1]
    assert step["intervals"][0]["statistic"] == "p99" and step["verdict"] and step["requests"] >= 368
    line = answer_line(outcome)
    assert line is not None and "[2 runs " in line and "spread 0.0%]" in line
    baseline = make_baseline(s, outcome.best, dict(outcome.fingerprint))
    assert baseline.capacity_resolution is not None and baseline.capacity_resolution >= 0.05
    assert not compare(baseline, s, outcome.best, dict(outcome.fingerprint), path="b.json").regressed
    html = render_report(report_view(outcome))
    assert "SLO intervals" in html and "ttft p99" in html and "(95%, n=" in html


def test_ladder_steps_on_the_simulator_meet_the_same_arrivals_scaled_to_their_load() -> None:
    from pytest_autotuner.sim.inprocess import run_benchmark_in_process

    plan = dataclasses.replace(
        ladder_plan(), capacity=None, request_rates=(2.0,), concurrencies=(), max_requests=50, warmup_requests=0,
        common_arrivals=True,
    )  # fmt: skip
    slow = run_benchmark_in_process("meta-llama/Llama-3.2-1B-Instruct", {}, plan).cells[0]
    fast = run_benchmark_in_process(
        "meta-llama/Llama-3.2-1B-Instruct", {}, dataclasses.replace(plan, request_rates=(4.0,))
    ).cells[0]
    assert [r.send_time / 2 for r in slow.records] == pytest.approx([r.send_time for r in fast.records])
    other = dataclasses.replace(plan, seed=step_seed(0, 1))  # a repeat: fresh arrivals
    again = run_benchmark_in_process("meta-llama/Llama-3.2-1B-Instruct", {}, other).cells[0]
    assert [r.send_time for r in again.records] != [r.send_time for r in slow.records]
