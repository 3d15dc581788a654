"""``optimization.screening`` through the plugin on the simulator: the screen scores the space in process, the
first trials after SGLang's defaults are its best (marked in results.json and trials.csv), and a spec it cannot
screen says why and searches as before."""

from __future__ import annotations

import pandas as pd
import pytest
from test_plugin import sim_spec, write_specs

pytestmark = pytest.mark.slow


def test_the_screens_best_go_first_and_are_marked(pytester: pytest.Pytester) -> None:
    spec = sim_spec(
        "screened",
        parameters={
            "chunked-prefill-size": [512, 1024, 2048, 4096],
            "max-running-requests": [2, 8, 32],
            "schedule-policy": ["fcfs", "lpm"],
        },
        optimization={
            "strategy": "bayesian",
            "objective": "maximize_throughput",
            "max_iterations": 4,
            "timeout_per_iteration": 60,
            "confirm_runs": 1,
            "screening": True,
            "screen_seeds": 2,
        },
    )
    write_specs(pytester, screened=spec)
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*screened: screened 24 configurations on the simulator in *; its 2 best*",
            "*  screen: chunked-prefill-size=* (predicted score *)",
            "*  screen: chunked-prefill-size=* (predicted score *)",
        ]
    )
    trials = pd.read_csv(pytester.path / "reports" / "screened" / "trials.csv").sort_values("number")
    assert list(trials["origin"].fillna(""))[:3] == ["sglang_defaults", "screen", "screen"]


def test_a_spec_the_screen_cannot_model_searches_as_before_and_says_why(pytester: pytest.Pytester) -> None:
    spec = sim_spec(
        "chat",
        optimization={
            "strategy": "bayesian",
            "max_iterations": 2,
            "timeout_per_iteration": 60,
            "confirm_runs": 1,
            "screening": True,
        },
        benchmark={"traffic_scenarios": ["C(2,2,32,16)"], "num_concurrency": [2], "max_requests_per_iteration": 8},
    )
    write_specs(pytester, chat=spec)
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*chat: screening off: C(2,2,32,16): multi-turn and dataset traffic need*"])
