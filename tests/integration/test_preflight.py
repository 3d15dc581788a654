"""The preflight through the plugin: bad flags fail before any trial, unhostable configurations are no trials."""

from __future__ import annotations

import json

import pytest
from test_plugin import FAST_SIM, sim_spec, write_specs

pytestmark = pytest.mark.slow


def test_a_flag_the_imitated_sglang_lacks_fails_collection_with_the_closest_options(pytester: pytest.Pytester) -> None:
    params = {"cuda-graph-max-bs": [8, 16], "schedule-policy": ["fcfs"]}
    write_specs(
        pytester,
        new=sim_spec("on-0523", parameters=params, simulator={**FAST_SIM, "sglang_version": "0.5.23"}),
        old=sim_spec("on-052", parameters=params, simulator={**FAST_SIM, "sglang_version": "0.5.2"}),
    )
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", "tuning_specs/new.json")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*on-0523: 1 flag problem(s) against SGLang 0.5.23*no trial was run*",
        "*--cuda-graph-max-bs is not an option of SGLang 0.5.23; closest: --cuda-graph-max-bs-decode*",
    ])  # fmt: skip
    assert "on-0523: grid search" not in result.stdout.str()  # no trial, no session
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", "tuning_specs/old.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*on-052: flags checked against SGLang 0.5.2*", "*on-052: grid search on sim*"])


def test_a_value_outside_the_choices_names_them(pytester: pytest.Pytester) -> None:
    write_specs(pytester, bad=sim_spec("bad-policy", parameters={"schedule-policy": ["lpm", "fcfs", "bogus"]}))
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*--schedule-policy 'bogus' is not one of its choices (SGLang 0.5.23): lpm, random*"])


def test_configurations_needing_more_gpus_than_simulated_are_not_trials(pytester: pytest.Pytester) -> None:
    spec = sim_spec(
        "one-gpu",
        parameters={"tp-size": [1, 2], "chunked-prefill-size": [512, 2048]},
        optimization={"strategy": "grid", "max_iterations": 4, "timeout_per_iteration": 60, "confirm_runs": 1},
        simulator={**FAST_SIM, "num_gpus": 1},
    )
    write_specs(pytester, one=spec)
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["*tp-size=2 needs 2 GPUs; this runner has 1: skipped*"])
    assert out.count("tp-size=2 needs") == 1  # reported once
    trial_lines = [line for line in out.splitlines() if line.strip().startswith("trial #")]
    assert len(trial_lines) == 2 and all("tp-size=1" in line for line in trial_lines)


def test_flags_the_simulator_does_not_model_run_and_the_report_says_they_had_no_effect(
    pytester: pytest.Pytester,
) -> None:
    params = {"kv-cache-dtype": ["auto", "fp8_e5m2"], "sampling-backend": ["pytorch"]}
    write_specs(pytester, spec=sim_spec("unmodelled", parameters=params))
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    (results,) = (pytester.path / "reports").glob("*/results.json")
    environment = json.loads(results.read_text())["environment"]
    assert environment["sglang_version"] == "0.5.23-sim"
    assert environment["no_effect_in_simulation"] == "sampling-backend (accepted by the simulator, not modelled)"
    assert environment["fingerprint"]["sglang_version"] == "0.5.23-sim"


def test_a_range_of_300_million_values_starts_its_trials_at_once(pytester: pytest.Pytester) -> None:
    # issue 28: the note on what the runner hosts walked every value of the range before the first trial (the
    # strategies' first proposals on such spaces: tests/unit/test_space_bounds.py)
    spec = sim_spec(
        "wide",
        parameters={"max-running-requests": {"low": 1, "high": 300_000_000}, "tp-size": {"low": 1, "high": 64}},
        optimization={"strategy": "random", "max_iterations": 2, "timeout_per_iteration": 60, "confirm_runs": 1},
        simulator={**FAST_SIM, "num_gpus": 2},
    )
    write_specs(pytester, wide=spec)
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*space of 19200000000 points*", "*tp-size=3..64 needs 3 to 64 GPUs; this runner has 2*"]
    )
    trial_lines = [line for line in result.stdout.str().splitlines() if line.strip().startswith("trial #")]
    assert len(trial_lines) == 2


def test_a_model_the_simulator_cannot_price_fails_collection_with_the_reason(pytester: pytest.Pytester) -> None:
    pytest.importorskip("aiconfigurator_core", reason="the [kernels] extra (part of [dev]) is not installed")
    write_specs(
        pytester,
        moe=sim_spec("moe", model={"id_or_path": "Qwen/Qwen3-30B-A3B"}, simulator={**FAST_SIM, "gpu": "b200"}),
        nope=sim_spec("nope", model={"id_or_path": "acme/NoSuchModel-7B"}),
    )
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", "tuning_specs/nope.json")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*nope.json: model.id_or_path: `--model-path` 'acme/NoSuchModel-7B' is not a model the simulator knows*"
        "; nor can the kernel tables price it: 'acme/NoSuchModel-7B' is neither a local folder with a config.json "
        "nor one of the * Hugging Face ids aiconfigurator-core 0.12.* ships a config for",
    ])  # fmt: skip
    # a model only the kernel tables know runs with no download, priced by them (the report's environment says so)
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", "tuning_specs/moe.json")
    result.assert_outcomes(passed=1)
    report = json.loads(next(pytester.path.glob("reports/moe/results.json")).read_text())
    assert report["environment"]["sim_pricing"].startswith("aiconfigurator-core")
