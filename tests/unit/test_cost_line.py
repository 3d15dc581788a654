"""The summary's serving-cost figures: one per load, and a capacity's ladder steps of every run as one range."""

from __future__ import annotations

from pytest_autotuner.report.explain import _by_load, _money_range


def row(cell: str, tokens: float, requests: float) -> dict[str, object]:
    return {"cell": cell, "per_million_output_tokens": tokens, "per_1000_requests": requests}


def test_each_fixed_load_is_its_own_figure() -> None:
    groups = _by_load([row("D(100,100) c=4", 1.0, 0.1), row("D(100,100) c=8", 0.8, 0.09)])
    assert [label for label, _ in groups] == ["D(100,100) c=4", "D(100,100) c=8"]


def test_the_ladder_steps_of_every_confirmation_run_are_one_range() -> None:
    rows = [
        row("D(1000,200) rate=5.55628/s (ladder)", 1.40, 0.28),
        row("D(1000,200) rate=5.82266/s (ladder)", 1.34, 0.27),
    ]
    ((label, group),) = _by_load(rows)
    assert label == "D(1000,200) (at the 2 capacities the runs found)"
    assert _money_range([r["per_million_output_tokens"] for r in group], "USD") == "$1.34-$1.40"  # type: ignore[misc]


def test_runs_that_found_the_same_capacity_read_as_one_capacity_not_one_run() -> None:
    """Two confirmation runs that both held 20 req/s share one ladder step: that is one capacity, not "1 run"."""
    ((label, _),) = _by_load([row("D(1000,200) rate=20/s (ladder)", 0.22, 0.0448)])
    assert label == "D(1000,200) (at the capacity found)"


def test_a_range_of_one_value_or_none_reads_plainly() -> None:
    assert _money_range([0.5, 0.5], "USD") == "$0.50"
    assert _money_range([None], "EUR") == "n/a"
