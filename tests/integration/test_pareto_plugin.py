"""A multi-objective spec through the whole plugin on the simulator: search, front, select, verdict, outputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from test_plugin import sim_spec, write_specs

pytestmark = pytest.mark.slow


def test_a_multi_objective_spec_reports_its_front_and_confirms_the_selected_configuration(
    pytester: pytest.Pytester,
) -> None:
    spec = sim_spec(
        "pareto-task",
        parameters={"max-running-requests": [2, 4, 8, 16], "chunked-prefill-size": [512, 2048]},
        optimization={
            "strategy": "grid",
            "objectives": ["maximize_throughput", "minimize_tpot"],
            "select": {"best": "minimize_tpot", "within": {"maximize_throughput": 0.3}},
            "max_iterations": 8,
            "timeout_per_iteration": 60,
            "confirm_runs": 1,
        },
        benchmark={
            "traffic_scenarios": ["D(64,32)"],
            "num_concurrency": [16],
            "max_requests_per_iteration": 24,
            "warmup_requests": 1,
        },
        slo={"ttft": {"p90": {"threshold": 30.0}}},
    )
    write_specs(pytester, pareto=spec)
    result = pytester.runpytest_subprocess("--autotune", "--junitxml=junit.xml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*trial #* -> maximize_throughput=* tok/s minimize_tpot=* ms SLO ok*",
        "*Pareto front (maximize_throughput, minimize_tpot): * of 8 trials (meets every SLO); select: best "
        "minimize_tpot among configurations with maximize_throughput within 30% of its best; the rule picked trial #*",
        "*minimize_tpot: * ms (confirmed, 1 run); maximize_throughput: * tok/s",
    ])  # fmt: skip
    folder = pytester.path / "reports" / "pareto-task"
    results = json.loads((folder / "results.json").read_text())
    pareto = results["pareto"]
    front = pareto["front"]
    assert results["objective"] == {"name": "minimize_tpot", "direction": "minimize", "per_gpu": False}  # primary
    assert pareto["considered"] == 8 and len(front) + len(pareto["dominated_trials"]) == 8
    # on the front: no point dominated by another; in the grid's measurements the max-running-requests trade-off
    for a in front:
        for b in front:
            ta, tb = a["objectives"], b["objectives"]
            better_or_equal = ta["maximize_throughput"] >= tb["maximize_throughput"]
            assert not (better_or_equal and ta["minimize_tpot"] <= tb["minimize_tpot"] and ta != tb), (a, b)
    assert len(front) >= 2, front
    # the rule by hand, on the front's figures
    best_tput = max(p["objectives"]["maximize_throughput"] for p in front)
    allowed = [p for p in front if p["objectives"]["maximize_throughput"] >= 0.7 * best_tput]
    expected = min(allowed, key=lambda p: p["objectives"]["minimize_tpot"])
    assert pareto["selected_trial"] == expected["trial"] == pareto["chosen_trial"]
    assert results["best"]["source_trial"] == expected["trial"] and results["best"]["params"] == expected["params"]
    assert results["verdict"]["status"] == "PASS"
    # the report: the front's table and the plot with the dominated points faded
    html = (folder / "index.html").read_text()
    assert 'id="pareto-front"' in html and 'id="plot-objectives"' in html and "could not be drawn" not in html
    assert f'<td class="num">{expected["trial"]} <span class="chip ok">chosen</span>' in html
    # JUnit carries the front and the rule
    props = {p.get("name"): p.get("value") for p in ET.parse(pytester.path / "junit.xml").getroot().iter("property")}
    assert json.loads(props["autotune_objectives"]) == ["maximize_throughput", "minimize_tpot"]
    assert [p["trial"] for p in json.loads(props["autotune_pareto_front"])] == [p["trial"] for p in front]
    assert props["autotune_select_rule"] == pareto["select"]["text"]
    assert props["autotune_best_trial"] == str(expected["trial"])


def test_a_select_rule_naming_an_objective_not_searched_is_a_collection_error(pytester: pytest.Pytester) -> None:
    optimization = {"strategy": "grid", "objectives": ["maximize_throughput", "minimize_tpot"],
                    "select": {"best": "minimize_ttft"}}  # fmt: skip
    write_specs(pytester, broken=sim_spec("broken", optimization=optimization))
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([
        "*ERROR collecting tuning_specs/broken.json*",
        "*`optimization.select.best`: objective 'minimize_ttft' is not one of `objectives` (maximize_throughput, "
        "minimize_tpot)*",
    ])  # fmt: skip
