"""Scoring: continuous SLO penalty, direction, graded finite failures, per-cell checks from raw samples."""

from __future__ import annotations

import math

import pytest
from factories import cell, result, spec

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.scoring import check_slos, objective_value, score_failure, score_result
from pytest_autotuner.core.measure.trial import FailureClass


def latency_spec(threshold: float = 1.0, **slo_extra: object):
    return spec(slo={"latency": {"p90": {"threshold": threshold, **slo_extra}}})


def test_penalty_is_continuous_at_the_threshold() -> None:
    s = latency_spec(1.0)
    at = score_result(result(1.0), s.optimization, s.slo)
    just_over = score_result(result(1.01), s.optimization, s.slo)
    assert at.penalty == 0.0
    assert at.value == pytest.approx(1.0)
    # 1% over with steepness 0.1: penalty exp(0.1) - 1 ~ 0.105, not a cliff
    assert just_over.value == pytest.approx(1.01 * math.exp(0.1), rel=1e-6)
    assert just_over.value / at.value < 1.2


def test_maximize_divides_by_the_penalty() -> None:
    s = spec(optimization={"objective": "maximize_throughput"}, slo={"latency": {"p90": {"threshold": 1.0}}})
    ok = score_result(result(1.0), s.optimization, s.slo)
    over = score_result(result(1.2), s.optimization, s.slo)
    assert over.objective is not None and ok.objective is not None
    assert over.value == pytest.approx(over.objective / (1 + over.penalty))
    assert over.value < over.objective
    assert s.optimization.direction == "maximize"


def test_objectives_are_means_over_cells() -> None:
    two = BenchResult([cell(1.0, concurrency=4), cell(3.0, concurrency=8)])
    assert objective_value(two, "minimize_latency") == pytest.approx(2.0)
    assert objective_value(two, "minimize_ttft") == pytest.approx(0.2)
    assert objective_value(two, "maximize_throughput") == pytest.approx(
        (two.cells[0].output_throughput + two.cells[1].output_throughput) / 2
    )


def test_slos_are_checked_in_every_cell_from_raw_samples() -> None:
    s = latency_spec(2.0)
    # mean latency is fine in both cells, but the second cell's p90 is over the threshold
    two = BenchResult([cell(1.0, concurrency=4), cell(1.9, concurrency=8, spread=0.4)])
    checks = check_slos(two, s.slo)
    assert [c.passed for c in checks] == [True, False]
    assert checks[1].value == pytest.approx(float(two.cells[1].summary("e2e").p90))
    assert checks[1].margin < 0


def test_hard_failure_is_infeasible_but_finite() -> None:
    s = latency_spec(1.0, hard_fail=True, fail_ratio=0.2)
    soft = score_result(result(1.1), s.optimization, s.slo)
    hard = score_result(result(1.5), s.optimization, s.slo)
    assert soft.feasible
    assert not hard.feasible and 0 < hard.constraint < 1
    assert math.isfinite(hard.value)


@pytest.mark.parametrize("objective", ["minimize_latency", "maximize_throughput"])
def test_failures_are_worse_than_any_success_and_graded(objective: str) -> None:
    s = spec(optimization={"objective": objective}, slo={"latency": {"p50": {"threshold": 0.001}}})
    terrible = score_result(result(500.0), s.optimization, s.slo)  # far over the SLO
    crashed = score_failure(FailureClass.CRASHED, s.optimization)
    kv = score_failure(FailureClass.KV_CACHE_OOM, s.optimization)
    worse = (lambda a, b: a > b) if objective == "minimize_latency" else (lambda a, b: a < b)
    assert math.isfinite(crashed.value) and math.isfinite(kv.value)
    assert worse(crashed.value, terrible.value)
    assert worse(kv.value, crashed.value)  # got less far: scored worse
    assert kv.constraint > crashed.constraint >= 1 > terrible.constraint


def test_no_completed_request_is_a_benchmark_failure() -> None:
    s = spec()
    empty = BenchResult([cell(1.0, n=0)])
    score = score_result(empty, s.optimization, s.slo)
    assert score.failure == FailureClass.BENCHMARK_ERRORS
