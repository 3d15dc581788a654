"""Spec loading: the seed's JSON blocks load unchanged, and every error names file, field and value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_autotuner.core.spec.spec_text import SpecError
from pytest_autotuner.core.spec.task_spec import TaskSpec, spec_json_schema
from pytest_autotuner.inputs import load_spec

SEED_SHORT = {
    "optimization": {"strategy": "bayesian", "objective": "minimize_latency", "max_iterations": 50},
    "parameters": {
        "tp-size": [1, 2, 4],
        "mem-fraction-static": [0.7, 0.75, 0.8, 0.85, 0.9],
        "schedule-policy": ["lpm", "fcfs"],
    },
}
SEED_FULL = json.loads((Path(__file__).parents[2] / "tuning_specs" / "llama-3.2-1b-bayesian.json").read_text())


def write(tmp_path: Path, data: object, name: str = "task.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else str(data))
    return path


def test_seed_short_example_loads_with_seed_defaults(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, SEED_SHORT, "short-example.json"))
    assert spec.task_name == "short-example"
    assert spec.optimization.n_initial_random is None  # unset: 5, capped on small spaces (startup_trials)
    assert spec.optimization.timeout_per_iteration == 600
    assert spec.parameters["tp-size"] == [1, 2, 4]


def test_seed_full_task_loads_unchanged(tmp_path: Path) -> None:
    seed_block = {k: v for k, v in SEED_FULL.items() if k not in ("slo", "simulator", "runtime")}
    spec = load_spec(write(tmp_path, seed_block))
    assert spec.task_name == "bayesian-llama3-tune"
    assert spec.benchmark.num_concurrency == [4, 8]
    assert spec.benchmark.additional_params == {"temperature": 0.0}
    assert spec.runtime == "docker"


def test_defaults_follow_the_seed() -> None:
    spec = TaskSpec.model_validate({"parameters": {"tp-size": [1]}, "slo": {"ttft": {"threshold": 1}}})
    assert spec.optimization.max_iterations == 100
    assert spec.optimization.objective == "minimize_latency"
    assert spec.slo is not None and spec.slo.steepness == 0.1
    limit = spec.slo.ttft
    assert (limit.weight, limit.hard_fail, limit.fail_ratio) == (1.0, False, 0.5)  # type: ignore[union-attr]


def test_yaml_spec_loads(tmp_path: Path) -> None:
    text = "task_name: yaml-task\nparameters:\n  tp-size: [1, 2]\n  enable-mixed-chunk: [true, false]\n"
    spec = load_spec(write(tmp_path, text, "t.yaml"))
    assert spec.parameters["enable-mixed-chunk"] == [True, False]


def test_ranges_keep_integer_and_float_kinds(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, {"parameters": {
        "max-running-requests": {"low": 16, "high": 256, "step": 16},
        "schedule-conservativeness": {"low": 0.3, "high": 1.5},
    }}))  # fmt: skip
    assert spec.parameters["max-running-requests"].is_int  # type: ignore[union-attr]
    assert not spec.parameters["schedule-conservativeness"].is_int  # type: ignore[union-attr]


def test_slo_accepts_mean_or_percentile_blocks() -> None:
    spec = TaskSpec.model_validate({
        "parameters": {"tp-size": [1]},
        "slo": {"ttft": {"threshold": 0.2}, "tpot": {"p99": {"threshold": 0.05}}, "latency": {"p90": {"threshold": 3}}},
    })  # fmt: skip
    assert spec.slo is not None
    assert [(m, s) for m, s, _ in spec.slo.checks()] == [("e2e", "p90"), ("ttft", "mean"), ("tpot", "p99")]


@pytest.mark.parametrize(
    ("change", "field", "value_text"),
    [
        ({"optimization": {"strategy": "bayes"}}, "`optimization.strategy`", "bayesian, grid, random"),
        ({"optimization": {"objective": "fast"}}, "`optimization.objective`", "maximize_throughput"),
        (
            {"optimization": {"max_iterations": 5, "n_initial_random": 5}},
            "`optimization`",
            "n_initial_random` is 5",
        ),
        ({"optimization": {"max_iterations": "ten"}}, "`optimization.max_iterations`", '"ten"'),
        ({"parameters": {"tp-size": []}}, "`parameters.tp-size`", "empty value list"),
        ({"parameters": {"tp-size": [1, "2"]}}, "`parameters.tp-size`", "mixes value types"),
        ({"parameters": {"--tp-size": [1]}}, "`parameters.--tp-size`", "write 'tp-size'"),
        ({"benchmark": {"traffic_scenarios": ["D(100)"]}}, "`benchmark.traffic_scenarios.0`", "accepted forms"),
        (
            {"benchmark": {"traffic_scenarios": ["P(0,32,2000,100,100)"]}},
            "`benchmark.traffic_scenarios.0`",
            "`groups` (field 1 of P(groups,prompts,system,question,output)) must be at least 1, got 0",
        ),
        (
            {"benchmark": {"traffic_scenarios": ["C(4,0,100,10)"]}},
            "`benchmark.traffic_scenarios.0`",
            "`turns` (field 2 of C(sessions,turns,in,out,system,think_ms)) must be at least 1, got 0",
        ),
        (
            {"benchmark": {"traffic_scenarios": ["C(4,2,100,10)"], "request_rates": [2.0]}},
            "`benchmark`",
            "multi-turn scenario 'C(4,2,100,10)' and `request_rates` is [2.0]",
        ),
        ({"slo": {"ttft": {"threshold": 0}}}, "`slo.ttft.threshold`", "got 0"),
        ({"slo": {"latency": {"p90": {"threshold": -2}}}}, "`slo.latency.p90.threshold`", "got -2"),
        ({"optimisation": {}}, "`optimisation`", "unknown field"),
        ({"task_name": "  "}, "`task_name`", "task_name is blank"),
        ({"benchmark": {"min_completed": 0}}, "`benchmark.min_completed`", "greater than or equal to 1"),
        (
            {"benchmark": {"min_completed": 500, "max_requests_per_iteration": 40}},
            "`benchmark`",
            "`min_completed` is 500 but `max_requests_per_iteration` is 40",
        ),
    ],
)
def test_bad_specs_name_file_field_and_value(tmp_path: Path, change: dict, field: str, value_text: str) -> None:
    data = json.loads(json.dumps(SEED_SHORT))
    for key, value in change.items():
        if key == "parameters":
            data[key] = value
        elif isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert str(path) in message
    assert field in message
    assert value_text in message


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '{"parameters": {', "broken.yaml").with_suffix(".yaml")
    path.write_text("parameters: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
    jpath = tmp_path / "b.json"
    jpath.write_text('{"parameters": ')
    with pytest.raises(SpecError, match=r"b\.json:1:\d+: not valid JSON"):
        load_spec(jpath)


def test_initial_configs_must_cover_the_space(tmp_path: Path) -> None:
    data = {**SEED_SHORT, "initial_configs": [{"tp-size": 1}]}
    with pytest.raises(SpecError, match=r"initial_configs\[0\].*missing: \['mem-fraction-static'"):
        load_spec(write(tmp_path, data))


def test_shipped_schema_matches_the_models() -> None:
    shipped = Path(__file__).parents[2] / "pytest_autotuner" / "schema" / "tuning-spec.schema.json"
    assert json.loads(shipped.read_text()) == spec_json_schema(), (
        "the shipped JSON Schema is stale: run `python -m pytest_autotuner.schema`"
    )


def test_any_task_name_maps_to_one_safe_folder_name() -> None:
    spec = TaskSpec.model_validate({"task_name": '../x <script>"a"</script>', "parameters": {"tp-size": [1]}})
    assert spec.slug.startswith("x_script_a_script-")  # not already safe: a short hash of the full name follows
    assert "/" not in spec.slug and not spec.slug.startswith(".")
