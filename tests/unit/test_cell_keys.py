"""Cells are matched on their CellKey(scenario, concurrency, rate) all the way: two open-loop rates (both
concurrency 0) and two concurrencies stay four cells through confirmation, the baseline and its comparison."""

from __future__ import annotations

from factories import cell, run_session, spec

from pytest_autotuner.core.measure.metrics import BenchResult, CellMetrics
from pytest_autotuner.core.measure.plan import CellKey
from pytest_autotuner.core.measure.trial import Deadline, Params
from pytest_autotuner.core.outcome.baseline import compare, parse_baseline

KEYS = [CellKey("D(100,100)", 2), CellKey("D(100,100)", 4), CellKey("D(100,100)", 0, 1.0),
        CellKey("D(100,100)", 0, 8.0)]  # fmt: skip
LATENCY = {KEYS[0]: 0.5, KEYS[1]: 0.8, KEYS[2]: 0.4, KEYS[3]: 1.6}


def four_cells(slower: float = 1.0) -> BenchResult:
    cells = []
    for key in KEYS:
        c = cell(LATENCY[key] * slower, concurrency=key.concurrency or 4, spread=0.1)
        cells.append(CellMetrics(c.scenario, key.concurrency, c.duration, c.records, request_rate=key.rate))
    return BenchResult(cells)


def two_rate_spec() -> object:
    return spec(
        parameters={"chunked-prefill-size": [512, 1024]},
        optimization={"strategy": "grid", "max_iterations": 2, "confirm_runs": 3},
        benchmark={"traffic_scenarios": ["D(100,100)"], "num_concurrency": [2, 4], "request_rates": [1, 8]},
        slo={"latency": {"p90": {"threshold": 5.0}}},
        regression={"baseline_runs": 3},
    )


def evaluate(params: Params, deadline: Deadline) -> BenchResult:
    return four_cells()


def test_confirmation_and_the_baseline_keep_two_rates_and_two_concurrencies_apart() -> None:
    out = run_session(two_rate_spec(), evaluate, update_baseline=True)  # type: ignore[arg-type]
    assert out.best is not None and out.new_baseline is not None
    assert [c.key for c in out.best.merged.cells] == KEYS
    assert [len(c.records) for c in out.best.merged.cells] == [60, 60, 60, 60]  # 3 runs x 20, never pooled
    assert [c.key for c in out.new_baseline.cells] == KEYS
    assert [c.label for c in out.new_baseline.cells] == [k.label for k in KEYS]
    # the document round-trips, and a comparison matches each cell to its own baseline
    baseline = parse_baseline(out.new_baseline.model_dump(mode="json"), "test.baseline.json")
    slower_rate_8 = run_session(two_rate_spec(), lambda p, d: _slow_only(KEYS[3]))  # type: ignore[arg-type]
    assert slower_rate_8.best is not None
    comparison = compare(baseline, slower_rate_8.spec, slower_rate_8.best, baseline.fingerprint, path="b.json")
    regressed = {(c.cell, c.metric) for c in comparison.regressions}
    assert regressed and {key for key, _metric in regressed} == {KEYS[3]}  # only the rate-8 cell got slower


def _slow_only(slow: CellKey) -> BenchResult:
    result = four_cells()
    for i, c in enumerate(result.cells):
        if c.key == slow:
            slower = cell(LATENCY[slow] * 1.5, concurrency=4, spread=0.1)
            result.cells[i] = CellMetrics(c.scenario, 0, slower.duration, slower.records, request_rate=slow.rate)
    return result
