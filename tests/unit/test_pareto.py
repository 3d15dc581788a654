"""Multi-objective search: dominance, fronts, hypervolume, the select rule, spec errors and the whole session."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import optuna
import pytest
from factories import cell, run_session, spec

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.scoring import score_result
from pytest_autotuner.core.measure.trial import Deadline, Params
from pytest_autotuner.core.outcome.pareto import SelectRule, dominates, front_indices, hypervolume, select_order
from pytest_autotuner.core.search.optuna_compat import optuna_hypervolume
from pytest_autotuner.core.search.space import SearchSpace
from pytest_autotuner.core.search.study import study_name_for
from pytest_autotuner.core.spec.spec_text import SpecError
from pytest_autotuner.inputs import load_spec
from pytest_autotuner.report.data import results_summary
from pytest_autotuner.report.html import render_report
from pytest_autotuner.report.summary import github_step_summary
from pytest_autotuner.report.terminal import summary_lines
from pytest_autotuner.report.view import report_view

MAX_MIN = ("maximize", "minimize")


# -- pure functions ---------------------------------------------------------------------------------------------


def test_dominance_needs_as_good_everywhere_and_better_somewhere() -> None:
    assert dominates((10, 1), (9, 2), MAX_MIN)
    assert dominates((10, 1), (10, 2), MAX_MIN)
    assert not dominates((10, 1), (10, 1), MAX_MIN)  # equal points do not dominate each other
    assert not dominates((10, 2), (9, 1), MAX_MIN)  # a trade-off


def test_the_front_keeps_trade_offs_and_equal_points() -> None:
    points = [(10, 5), (8, 2), (9, 6), (8, 2), (5, 1), (4, 3)]
    assert front_indices(points, MAX_MIN) == [0, 1, 3, 4]


def test_hypervolume_of_a_known_staircase() -> None:
    # minimize both, reference (4, 4): boxes 3 x 1 from (1, 3) and 2 x 3 from (2, 1), overlapping in 2 x 1
    assert hypervolume([(1, 3), (2, 1)], (4, 4), ("minimize", "minimize")) == pytest.approx(3 + 6 - 2)
    # a point beyond the reference adds nothing; a dominated one adds nothing
    assert hypervolume([(1, 3), (2, 1), (5, 0), (3, 3)], (4, 4), ("minimize", "minimize")) == pytest.approx(7)
    # maximizing the first objective flips it
    assert hypervolume([(3, 1)], (1, 2), MAX_MIN) == pytest.approx(2 * 1)


@pytest.mark.parametrize("dims", [2, 3])
def test_hypervolume_agrees_with_optunas(dims: int) -> None:
    rng = random.Random(dims)
    for _ in range(20):
        points = [tuple(rng.random() for _ in range(dims)) for _ in range(rng.randrange(1, 25))]
        ours = hypervolume(points, (1.1,) * dims, ("minimize",) * dims)
        assert ours == pytest.approx(optuna_hypervolume(np.array(points), np.full(dims, 1.1)), rel=1e-9)


def test_select_takes_the_best_on_one_objective_within_the_bounds_of_the_others() -> None:
    points = [{"tput": 100.0, "ttft": 0.5}, {"tput": 96.0, "ttft": 0.3}, {"tput": 90.0, "ttft": 0.1}]
    directions = {"tput": "maximize", "ttft": "minimize"}
    assert select_order(points, SelectRule("ttft", {"tput": 0.05}), directions) == [1, 0]
    assert select_order(points, SelectRule("ttft", {"tput": 0.2}), directions) == [2, 1, 0]
    assert select_order(points, SelectRule("tput"), directions) == [0, 1, 2]
    assert select_order([], SelectRule("tput"), directions) == []


# -- spec -------------------------------------------------------------------------------------------------------


def _write(tmp_path: Path, optimization: dict[str, object]) -> Path:
    raw = {"task_name": "t", "model": {"id_or_path": "m"}, "parameters": {"chunked-prefill-size": [512, 1024]},
           "optimization": optimization}  # fmt: skip
    path = tmp_path / "multi.json"
    path.write_text(json.dumps(raw))
    return path


TWO = ["maximize_throughput", "minimize_ttft"]


@pytest.mark.parametrize(
    ("optimization", "expected"),
    [
        ({"objectives": TWO, "select": {"best": "minimize_goodput"}},
         "`optimization.select.best`: unknown objective \"minimize_goodput\""),
        ({"objectives": TWO, "select": {"best": "minimize_tpot"}},
         "`optimization.select.best`: objective 'minimize_tpot' is not one of `objectives`"),
        ({"objectives": TWO, "select": {"best": "minimize_ttft", "within": {"minimize_latency": 0.1}}},
         "`optimization.select.within.minimize_latency`: objective 'minimize_latency' is not one of `objectives`"),
        ({"objectives": TWO, "select": {"best": "minimize_ttft", "within": {"minimize_ttft": 0.1}}},
         "`optimization.select.within.minimize_ttft`: 'minimize_ttft' is `select.best`"),
        ({"objectives": ["minimize_ttft", "minimize_ttft"]},
         "`optimization.objectives.1`: objective 'minimize_ttft' is listed twice"),
        ({"objectives": ["minimize_ttft"]}, "`optimization.objectives`: List should have at least 2 items"),
        ({"objectives": [*TWO, "minimize_tpot", "minimize_latency"]},
         "`optimization.objectives`: List should have at most 3 items"),
        ({"objectives": [*TWO, "minimize_tpot"], "strategy": "grid"},
         "`optimization.objectives`: three objectives (maximize_throughput, minimize_ttft, minimize_tpot) with the "
         "grid strategy"),
        ({"objectives": TWO, "objective": "minimize_ttft"},
         "`optimization.objective`: `objective` is 'minimize_ttft' but the first of `objectives` is "
         "'maximize_throughput'"),
        ({"objectives": TWO, "objective": "maximize_throughput", "select": {"best": "minimize_ttft"}},
         "`optimization.objective`: `objective` is 'maximize_throughput' but select.best is 'minimize_ttft'"),
        ({"select": {"best": "minimize_ttft"}}, "`optimization.select`: a select rule needs `objectives`"),
        ({"objectives": ["maximize_throughput", "maximise_ttft"]}, "`optimization.objectives.1`: unknown objective"),
        ({"sampler": "nsga2", "strategy": "random"}, "`optimization.sampler`: sampler 'nsga2' is the model of the"),
    ],
)  # fmt: skip
def test_multi_objective_spec_errors_name_the_field_and_value(
    tmp_path: Path, optimization: dict[str, object], expected: str
) -> None:
    path = _write(tmp_path, optimization)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value), str(err.value)


def test_the_primary_objective_is_the_select_rules_else_the_first(tmp_path: Path) -> None:
    first = load_spec(_write(tmp_path, {"objectives": TWO})).optimization
    assert first.objective == "maximize_throughput" and first.directions == ("maximize", "minimize")
    ruled = load_spec(_write(tmp_path, {"objectives": TWO, "select": {"best": "minimize_ttft"}})).optimization
    assert ruled.objective == "minimize_ttft" and ruled.objective_names == tuple(TWO)
    agreeing = load_spec(_write(tmp_path, {"objectives": TWO, "objective": "maximize_throughput"})).optimization
    assert agreeing.objective == "maximize_throughput"


def test_fields_left_at_their_defaults_keep_a_single_objective_studys_name() -> None:
    plain = spec()
    explicit = spec(optimization={"sampler": "tpe"})
    assert study_name_for(plain, "sim") == study_name_for(explicit, "sim")
    multi = spec(optimization={"objective": "maximize_throughput", "objectives": TWO})
    assert study_name_for(multi, "sim") != study_name_for(plain, "sim")


# -- the session ------------------------------------------------------------------------------------------------


def trade_off(params: Params) -> BenchResult:
    """Larger chunks: more output tokens per request (throughput) and a later first token (TTFT); lpm delays it."""
    chunk = int(params["chunked-prefill-size"])
    e2e = 1.0 + abs(float(params["mem-fraction-static"]) - 0.8)
    ttft = 0.05 * chunk / 512 + 0.1 * (params["schedule-policy"] == "lpm") + 0.01 * int(params["tp-size"])
    return BenchResult([cell(e2e, ttft=min(ttft, 0.9 * e2e), out_tokens=int(50 + chunk / 40))])


def evaluate(params: Params, deadline: Deadline) -> BenchResult:
    return trade_off(params)


def multi_spec(**optimization: object) -> object:
    return spec(optimization={"objective": "maximize_throughput", "objectives": TWO, "confirm_runs": 1,
                              **optimization})  # fmt: skip


def true_front(s: object) -> set[int]:
    """Brute force: every point of the space scored as the session scores it; the front's point keys."""
    space = SearchSpace.from_spec(s)  # type: ignore[arg-type]
    points = list(space.grid())
    values = [score_result(trade_off(p), s.optimization, None).values for p in points]  # type: ignore[attr-defined]
    return {hash(space.key(points[i])) for i in front_indices(values, MAX_MIN)}


def test_a_grid_over_the_whole_space_finds_exactly_the_true_front() -> None:
    s = multi_spec(strategy="grid", max_iterations=80)
    outcome = run_session(s, evaluate)
    assert outcome.pareto is not None and len(outcome.trials) == 80
    space = SearchSpace.from_spec(s)
    assert {hash(space.key(t.params)) for t in outcome.pareto.front} == true_front(s)
    dominated = {t.number for t in outcome.pareto.dominated}
    assert dominated and not dominated & {t.number for t in outcome.pareto.front}


def test_tpe_tells_one_score_per_objective_and_the_rule_picks_the_confirmed_best() -> None:
    rule = {"best": "minimize_ttft", "within": {"maximize_throughput": 0.1}}
    outcome = run_session(multi_spec(objective="minimize_ttft", select=rule, max_iterations=20), evaluate)
    pareto = outcome.pareto
    assert pareto is not None and pareto.rule_given
    assert all(len(t.values) == 2 and set(t.objectives) == set(TWO) for t in outcome.trials if t.measured)
    # the rule by hand: the best TTFT among the front's points within 10% of the front's best throughput
    best_tput = max(t.objectives["maximize_throughput"] for t in pareto.front)
    allowed = [t for t in pareto.front if t.objectives["maximize_throughput"] >= 0.9 * best_tput]
    expected = min(allowed, key=lambda t: (t.objectives["minimize_ttft"], t.number))
    tuned = [n for n in pareto.eligible if n != 0]
    assert pareto.selected == tuned[0]
    if expected.origin != "sglang_defaults":
        assert pareto.selected == expected.number
    assert outcome.best is not None
    assert outcome.best.source_trial in pareto.eligible
    # the confirmed best's primary objective is the rule's, and it carries every objective
    assert outcome.best.score.objective == outcome.best.score.objectives["minimize_ttft"]


def test_without_a_rule_the_first_objective_decides() -> None:
    outcome = run_session(multi_spec(strategy="grid", max_iterations=80), evaluate)
    assert outcome.pareto is not None and not outcome.pareto.rule_given
    best_tput = max(t.objectives["maximize_throughput"] for t in outcome.trials if t.measured)
    assert outcome.best is not None
    assert outcome.best.score.objectives["maximize_throughput"] == pytest.approx(best_tput)
    assert "(default: the first objective)" in outcome.pareto.describe_rule()


def test_defaults_outside_the_rule_are_compared_but_never_chosen() -> None:
    # with a tight rule on throughput, SGLang's defaults (mem 0.85 -> slower) are not eligible
    rule = {"best": "minimize_ttft", "within": {"maximize_throughput": 0.0}}
    outcome = run_session(multi_spec(objective="minimize_ttft", select=rule, max_iterations=25), evaluate)
    assert outcome.defaults is not None and outcome.pareto is not None
    assert 0 not in outcome.pareto.eligible
    assert not outcome.defaults.eligible and not outcome.defaults.defaults_chosen
    assert outcome.best is not None and outcome.best.source_trial != 0
    assert "not eligible under the select rule" in "\n".join(summary_lines(report_view(outcome), None))


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_both_samplers_search_three_objectives(sampler: str) -> None:
    s = spec(optimization={"objective": "maximize_throughput", "sampler": sampler, "max_iterations": 12,
                           "objectives": [*TWO, "minimize_latency"], "confirm_runs": 1})  # fmt: skip
    outcome = run_session(s, evaluate)
    assert outcome.pareto is not None and len(outcome.pareto.objectives) == 3
    assert len({json.dumps(t.params, sort_keys=True) for t in outcome.trials}) == len(outcome.trials)  # no repeats
    assert outcome.pareto.front and outcome.verdict.passed
    html = render_report(report_view(outcome))  # three panels, one per pair of objectives
    assert 'id="plot-objectives"' in html and "could not be drawn" not in html


def test_the_sampler_option_builds_nsga2() -> None:
    from pytest_autotuner.core.search.tpe import make_sampler

    s = multi_spec(sampler="nsga2")
    assert isinstance(make_sampler(s.optimization, SearchSpace.from_spec(s), 0), optuna.samplers.NSGAIISampler)  # type: ignore[attr-defined]


def test_early_stopping_keeps_trials_that_may_be_on_the_front() -> None:
    from pytest_autotuner.core.outcome.session import TuningSession
    from pytest_autotuner.core.search.study import Search

    s = multi_spec()
    search = Search(spec=s, space=SearchSpace.from_spec(s), storage=None, study_name="x", seed=0)  # type: ignore[arg-type]
    rule = TuningSession(spec=s, search=search, evaluate=evaluate)._pruning_rule()  # type: ignore[arg-type]
    assert rule is not None and rule.optimization.prune_margin is None  # type: ignore[attr-defined]
    assert s.optimization.prune_margin == 0.5  # type: ignore[attr-defined]


def test_results_json_report_and_summary_carry_the_front() -> None:
    rule = {"best": "minimize_ttft", "within": {"maximize_throughput": 0.2}}
    outcome = run_session(multi_spec(objective="minimize_ttft", select=rule, max_iterations=15), evaluate)
    block = results_summary(outcome)["pareto"]
    assert [o["name"] for o in block["objectives"]] == TWO
    assert (
        block["select"]["text"]
        == "best minimize_ttft among configurations with maximize_throughput within 20% of its best"
    )
    assert {p["trial"] for p in block["front"]} == {t.number for t in outcome.pareto.front}  # type: ignore[union-attr]
    assert sum(p["chosen"] for p in block["front"]) == 1
    assert all(math.isfinite(v) for p in block["front"] for v in p["objectives"].values())
    json.dumps(results_summary(outcome), allow_nan=False)
    html = render_report(report_view(outcome))
    assert 'id="pareto-front"' in html and 'id="plot-objectives"' in html and "could not be drawn" not in html
    job = github_step_summary([(report_view(outcome), None)], Path("reports"))
    assert f"Pareto front of {len(outcome.pareto.front)}, select: best minimize_ttft among" in job  # type: ignore[union-attr]
    assert any(line.strip().startswith("Pareto front (maximize_throughput, minimize_ttft)")
               for line in summary_lines(report_view(outcome), None))  # fmt: skip


def test_a_single_objective_session_has_no_front_and_tells_one_value() -> None:
    outcome = run_session(spec(optimization={"max_iterations": 6, "confirm_runs": 1}), evaluate)
    assert outcome.pareto is None and results_summary(outcome)["pareto"] is None
    assert all(t.values == () and t.objectives == {} for t in outcome.trials)
    assert all(math.isfinite(t.value) for t in outcome.trials)


def test_new_best_marks_follow_the_front() -> None:
    events = []
    run_session(multi_spec(strategy="grid", max_iterations=30), evaluate, on_trial=events.append)
    seen: list[tuple[float, ...]] = []
    for event in (e for e in events if e.phase == "search"):
        point = event.score.values
        joins = not any(p == point or dominates(p, point, MAX_MIN) for p in seen)
        assert event.new_best == joins, (event.number, point)
        seen = [p for p in seen if not dominates(point, p, MAX_MIN)] + ([point] if joins else [])
    assert len(list(itertools.compress(events, [e.new_best for e in events]))) >= 2
