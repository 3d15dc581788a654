"""Early stopping's rule (core/measure/pruning.py) and the precision stop rule (core/measure/precision.py), on
synthetic cells."""

from __future__ import annotations

import math

import numpy as np
import pytest
from factories import cell, spec

from pytest_autotuner.core.measure.metrics import BenchResult, CellMetrics, CellSummary, json_safe
from pytest_autotuner.core.measure.precision import (
    PrecisionTracker,
    ratio_relative_half_width,
    relative_half_width,
)
from pytest_autotuner.core.measure.pruning import BestSoFar, PruningRule, partial_value, plan_cells, prune_reason
from pytest_autotuner.core.measure.scoring import score_result
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, TrialFailure

HARD_TTFT = {"ttft": {"p90": {"threshold": 0.5, "hard_fail": True, "fail_ratio": 0.5}}}


def summary(c: CellMetrics) -> CellSummary:
    return CellSummary.from_dict(json_safe(c.as_dict()))


def two_cells(e2e_light: float, e2e_heavy: float, **kwargs: object) -> list[CellSummary]:
    return [
        summary(cell(e2e_light, concurrency=1, **kwargs)),  # type: ignore[arg-type]
        summary(cell(e2e_heavy, concurrency=8, **kwargs)),  # type: ignore[arg-type]
    ]


def best_of(cells: list[CellSummary], value: float, feasible: bool = True) -> BestSoFar:
    return BestSoFar(number=3, value=value, feasible=feasible, cells=tuple(cells))


def test_partial_value_is_score_result_on_the_same_cells() -> None:
    s = spec(slo={"latency": {"p90": {"threshold": 1.0}}}, benchmark={"num_concurrency": [1, 8]})
    cells = [cell(0.8, concurrency=1), cell(1.3, concurrency=8, spread=0.4)]
    full = score_result(BenchResult(cells), s.optimization, s.slo)
    assert partial_value([summary(c) for c in cells], s.optimization, s.slo) == pytest.approx(full.value)
    assert full.penalty > 0  # the SLO penalty is part of both


def test_a_hard_slo_broken_at_the_lightest_load_prunes_once_a_feasible_trial_is_known() -> None:
    s = spec(slo=HARD_TTFT, benchmark={"num_concurrency": [1, 8]})
    hopeless = two_cells(2.0, 3.0, ttft=1.0)[:1]  # TTFT 1.0 s: 100% over 0.5 s, fail_ratio 0.5
    known = best_of(two_cells(1.0, 1.5, ttft=0.2), 1.25)
    reason = prune_reason(hopeless, optimization=s.optimization, slo=s.slo, total_cells=2, best=known)
    assert reason is not None and "hard SLO" in reason and "ttft p90" in reason and "trial #3" in reason
    # no feasible trial yet: an infeasible one may still be the least bad, so it is measured to the end
    for best in (None, best_of(two_cells(1.0, 1.5, ttft=2.0), 1.25, feasible=False)):
        assert prune_reason(hopeless, optimization=s.optimization, slo=s.slo, total_cells=2, best=best) is None
    # within fail_ratio (40% over): not infeasible, so the hard-SLO rule lets it go on ...
    near = two_cells(1.0, 1.0, ttft=0.7)[:1]
    hard_only = s.optimization.model_copy(update={"prune_margin": None})
    assert prune_reason(near, optimization=hard_only, slo=s.slo, total_cells=2, best=known) is None
    # ... but its SLO penalty (exp(0.4 / 0.1) - 1) puts its partial score far beyond the margin
    reason = prune_reason(near, optimization=s.optimization, slo=s.slo, total_cells=2, best=known)
    assert reason is not None and "prune_margin" in reason


def test_a_partial_score_worse_than_the_best_on_the_same_cells_by_the_margin_prunes() -> None:
    s = spec(benchmark={"num_concurrency": [1, 8]})  # no SLOs; prune_margin 0.5 by default
    assert s.optimization.prune_margin == 0.5 and s.optimization.early_stopping
    best = best_of(two_cells(1.0, 3.0), 2.0)
    opt = s.optimization
    # 1.4 at the light load: 40% worse than the best's 1.0 there (not than its 2.0 over both cells): goes on
    assert prune_reason(two_cells(1.4, 9.0)[:1], optimization=opt, slo=None, total_cells=2, best=best) is None
    # 1.6: 60% worse
    reason = prune_reason(two_cells(1.6, 9.0)[:1], optimization=opt, slo=None, total_cells=2, best=best)
    assert reason is not None and "prune_margin" in reason and "50%" in reason
    # a complete trial is never pruned: nothing is left to save
    assert prune_reason(two_cells(1.6, 9.0), optimization=opt, slo=None, total_cells=2, best=best) is None
    # prune_margin null: hard SLOs only
    off = spec(optimization={"prune_margin": None}).optimization
    assert prune_reason(two_cells(1.6, 9.0)[:1], optimization=off, slo=None, total_cells=2, best=best) is None


def test_maximizing_compares_like_with_like_so_light_loads_do_not_look_hopeless() -> None:
    s = spec(optimization={"objective": "maximize_throughput"}, benchmark={"num_concurrency": [1, 8]})
    # throughput grows with load: the best's light cell is far below its score over both cells
    best_cells = two_cells(1.0, 0.5)
    best = best_of(best_cells, partial_value(best_cells, s.optimization, None))
    light_best = partial_value(best_cells[:1], s.optimization, None)
    assert best.value > 3 * light_best
    similar = two_cells(1.2, 0.5)[:1]  # 1/1.2 of the best's light-load throughput: within the margin
    slow = two_cells(2.0, 0.5)[:1]  # half of it: more than 50% worse in ratio form (best / (1 + 0.5))
    assert prune_reason(similar, optimization=s.optimization, slo=None, total_cells=2, best=best) is None
    assert prune_reason(slow, optimization=s.optimization, slo=None, total_cells=2, best=best) is not None


def test_the_rule_on_a_deadline_raises_pruned_and_keeps_the_cells() -> None:
    s = spec(benchmark={"num_concurrency": [1, 8]})
    assert plan_cells(s) == 2
    rule = PruningRule(s.optimization, s.slo, plan_cells(s), best_of(two_cells(1.0, 3.0), 2.0))
    deadline = Deadline(None, rule=rule)
    with pytest.raises(TrialFailure) as raised:
        deadline.report_cell(cell(2.0, concurrency=1))
    assert raised.value.failure_class is FailureClass.PRUNED
    assert len(deadline.cells) == 1 and deadline.cells[0].key.concurrency == 1
    assert FailureClass.PRUNED.progress == FailureClass.STALLED.progress  # graded like a failure that got far
    fine = Deadline(None, rule=rule)
    fine.report_cell(cell(1.1, concurrency=1))
    fine.report_cell(cell(9.0, concurrency=8))  # the last cell: never pruned
    assert len(fine.cells) == 2 and len(fine.cell_times) == 2


# -- precision ------------------------------------------------------------------------------------------------


def test_relative_half_width_is_the_normal_95_interval_of_the_mean() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    mean, sd = 2.5, float(np.std(values, ddof=1))
    assert relative_half_width(values) == pytest.approx(1.959964 * sd / math.sqrt(4) / mean, rel=1e-6)
    assert relative_half_width([5.0]) == math.inf
    assert relative_half_width([2.0] * 30) == pytest.approx(0.0, abs=1e-9)


def test_ratio_half_width_matches_the_delta_method_and_is_zero_for_proportional_pairs() -> None:
    rng = np.random.default_rng(3)
    e2e = rng.uniform(1.0, 3.0, 400)
    tokens = 100 * e2e  # every request at the same speed: the ratio is exact
    assert ratio_relative_half_width(tokens, e2e) == pytest.approx(0.0, abs=1e-6)
    noisy = tokens * rng.uniform(0.8, 1.2, 400)
    width = ratio_relative_half_width(noisy, e2e)
    # the spread of the ratio estimate over resamples agrees with the delta method's interval
    ratios = []
    for _ in range(400):
        idx = rng.integers(0, 400, 400)
        ratios.append(noisy[idx].sum() / e2e[idx].sum())
    boot = 1.959964 * float(np.std(ratios)) / (noisy.sum() / e2e.sum())
    assert width == pytest.approx(boot, rel=0.25)


def test_the_tracker_stops_after_the_minimum_when_samples_agree_and_not_while_they_scatter() -> None:
    steady = PrecisionTracker("e2e", precision=0.02, min_requests=20)
    stops = [steady.add(1.5) for _ in range(30)]
    assert stops.index(True) == 19  # the 20th request: no earlier, however steady
    scattered = PrecisionTracker("e2e", precision=0.02, min_requests=20)
    rng = np.random.default_rng(1)
    assert not any(scattered.add(float(v)) for v in rng.uniform(0.5, 1.5, 100))  # ~ +-6% after 100
    assert 0.02 < scattered.half_width < 0.1
    missing = PrecisionTracker("tpot", precision=0.02, min_requests=2)
    assert not missing.add(None) and missing.n == 0  # a one-token answer has no TPOT: not a sample
    throughput = PrecisionTracker("throughput", precision=0.02, min_requests=5)
    assert [throughput.add(None, tokens=100, e2e=2.0) for _ in range(5)][-1]
