"""``optimization.screening`` through the plugin on the simulator: the screen scores the space in process, the
first trials after SGLang's defaults are its best (marked in results.json and trials.csv), and a spec it cannot
screen says why and searches as before."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_plugin import FAST_SIM, sim_spec, write_specs

pytestmark = pytest.mark.slow


def test_the_screens_best_go_first_and_are_marked(pytester: pytest.Pytester) -> None:
    """The simulator the trials run on decodes 1.6x slower than the screen's model knows (a distortion file):
    the calibration after the search finds that factor in TPOT and none in TTFT."""
    reality = pytester.path / "reality.json"
    reality.write_text(json.dumps({"decode": 1.6}))
    spec = sim_spec(
        "screened",
        parameters={
            "chunked-prefill-size": [512, 1024, 2048, 4096],
            "max-running-requests": [8, 32],  # >= the 4 streams: TTFT has no queueing to distort
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
        simulator={**FAST_SIM, "extra_args": ["--sim-distortion", str(reality)]},
    )
    write_specs(pytester, screened=spec)
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*screened: screened 16 configurations on the simulator in *; its 2 best*",
            "*  screen: chunked-prefill-size=* (predicted score *)",
            "*  screen: chunked-prefill-size=* (predicted score *)",
        ]
    )
    trials = pd.read_csv(pytester.path / "reports" / "screened" / "trials.csv").sort_values("number")
    assert list(trials["origin"].fillna(""))[:3] == ["sglang_defaults", "screen", "screen"]
    block = json.loads((pytester.path / "reports" / "screened" / "results.json").read_text())["screening"]
    assert block["screened"] == 16 and block["seeded_trials"] == list(trials["number"])[1:3]
    calibration = block["calibration"]
    assert calibration["trials"] >= 2
    assert calibration["decode_factor"] == pytest.approx(1.6, rel=0.1)
    assert calibration["prefill_factor"] == pytest.approx(1.0, rel=0.15)
    result.stdout.fnmatch_lines(["*screening: 16 configurations scored on the simulator, 2 trials seeded; the server*"])


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
