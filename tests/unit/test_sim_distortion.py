"""Reality stand-ins (``--sim-distortion FILE``): a simulator that differs on purpose from what a screening model
knows. A neutral file changes nothing; each field moves what it names, by the size it says, and only where it
applies (a flag effect only at its value); a bad file fails naming the file, the field and the value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_autotuner.core.measure.metrics import CellMetrics
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.sim.__main__ import startup_seconds
from pytest_autotuner.sim.cli import engine_config, parse_argv
from pytest_autotuner.sim.inprocess import run_benchmark_in_process
from pytest_autotuner.sim.perf_model import plan_memory

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def write(tmp_path: Path, content: object, name: str = "reality.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def cell(params: dict[str, object], concurrency: int = 1, scenario: str = "D(1024,64)") -> CellMetrics:
    plan = BenchmarkPlan((parse_scenario(scenario),), (concurrency,), max_requests=max(6, 2 * concurrency),
                         warmup_requests=0)  # fmt: skip
    (measured,) = run_benchmark_in_process(MODEL, params, plan).cells  # type: ignore[arg-type]
    return measured


def test_a_neutral_file_changes_nothing(tmp_path: Path) -> None:
    plain = cell({}, 8)
    neutral = cell({"sim-distortion": str(write(tmp_path, {"flags": []}))}, 8)
    for metric in ("ttft", "tpot", "e2e"):
        assert neutral.summary(metric).mean == plain.summary(metric).mean
    assert neutral.output_throughput == plain.output_throughput


@settings(max_examples=15, deadline=None)
@given(prefill=st.floats(0.5, 3.0), decode=st.floats(0.5, 3.0))
def test_step_factors_scale_ttft_and_tpot_by_their_size(tmp_path_factory: pytest.TempPathFactory, prefill: float,
                                                        decode: float) -> None:  # fmt: skip
    path = write(tmp_path_factory.mktemp("d"), {"prefill": prefill, "decode": decode})
    plain, distorted = cell({}), cell({"sim-distortion": str(path)})  # one request at a time: no queueing
    assert distorted.summary("ttft").mean == pytest.approx(plain.summary("ttft").mean * prefill, rel=0.02)
    assert distorted.summary("tpot").mean == pytest.approx(plain.summary("tpot").mean * decode, rel=0.02)


def test_a_flag_effect_applies_only_at_its_value(tmp_path: Path) -> None:
    effects = [
        {"flag": "schedule-policy", "value": "lpm", "decode": 1.5},
        {"flag": "enable-mixed-chunk", "value": False, "prefill": 2.0},
    ]
    path = str(write(tmp_path, {"flags": effects}))
    lpm = cell({"schedule-policy": "lpm", "enable-mixed-chunk": True, "sim-distortion": path})
    fcfs = cell({"schedule-policy": "fcfs", "enable-mixed-chunk": True, "sim-distortion": path})
    plain = cell({"schedule-policy": "fcfs", "enable-mixed-chunk": True})
    assert lpm.summary("tpot").mean == pytest.approx(1.5 * plain.summary("tpot").mean, rel=0.02)
    assert fcfs.summary("tpot").mean == pytest.approx(plain.summary("tpot").mean, rel=1e-9)
    not_given = cell({"sim-distortion": path})  # mixed chunk left at SGLang's default (off): its effect applies
    assert not_given.summary("ttft").mean == pytest.approx(2.0 * cell({}).summary("ttft").mean, rel=0.02)


def test_per_waiting_seconds_cost_only_under_a_queue(tmp_path: Path) -> None:
    path = str(write(tmp_path, {"per_waiting_s": 0.002}))
    light = {"max-running-requests": 64}
    assert cell({**light, "sim-distortion": path}, 1).summary("e2e").mean == pytest.approx(
        cell(light, 1).summary("e2e").mean, rel=1e-9)  # fmt: skip
    queued = {"max-running-requests": 4}
    assert cell({**queued, "sim-distortion": path}, 32).summary("e2e").mean > 1.2 * cell(queued, 32).summary(
        "e2e").mean  # fmt: skip


def test_memory_startup_gpu_and_noise(tmp_path: Path) -> None:
    path = str(write(tmp_path, {"gpu": "h200", "memory": 0.5, "startup": 3.0, "noise": 0.0}))
    base = ["--model-path", MODEL, "--sim-noise", "0.2"]
    plain_args, distorted_args = parse_argv(base), parse_argv([*base, "--sim-distortion", path])
    plain, distorted = engine_config(plain_args), engine_config(distorted_args)
    assert distorted.gpu.name != plain.gpu.name and distorted_args.sim_gpu == "h200"
    assert distorted_args.sim_noise == 0.0
    assert startup_seconds(distorted) == pytest.approx(3.0 * startup_seconds(engine_config(parse_argv(
        ["--model-path", MODEL, "--sim-gpu", "h200"]))))  # fmt: skip
    assert plan_memory(distorted).max_total_num_tokens < 0.6 * plan_memory(engine_config(parse_argv(
        ["--model-path", MODEL, "--sim-gpu", "h200"]))).max_total_num_tokens  # fmt: skip


def test_the_server_names_the_file_not_its_content(tmp_path: Path) -> None:
    path = str(write(tmp_path, {"decode": 1.3}))
    plan = BenchmarkPlan((parse_scenario("D(8,8)"),), (1,), max_requests=1, warmup_requests=0)
    info = run_benchmark_in_process(MODEL, {"sim-distortion": path}, plan).server_info
    assert info["sim_distortion"]["path"] == path and len(info["sim_distortion"]["sha256"]) == 64
    assert "1.3" not in json.dumps(info["sim_distortion"])


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ("{not json", ["not JSON"]),
        ([1, 2], ["a JSON object", "list"]),
        ({"decod": 2}, ["'decod'", "not a distortion field"]),
        ({"decode": -1}, ["decode", "-1"]),
        ({"decode": 0}, ["decode", "0"]),
        ({"decode": True}, ["decode", "True"]),
        ({"per_step_s": "fast"}, ["per_step_s", "'fast'"]),
        ({"gpu": "h900"}, ["gpu", "'h900'"]),
        ({"noise": -0.1}, ["noise", "-0.1"]),
        ({"flags": {"flag": "x"}}, ["flags", "list"]),
        ({"flags": [{"value": 1, "decode": 2}]}, ["flags[0].flag", "None"]),
        ({"flags": [{"flag": "tp-size", "speed": 2}]}, ["flags[0].'speed'"]),
        ({"flags": [{"flag": "tp-size", "memory": 1e9}]}, ["flags[0].memory", "1000000000.0"]),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_field_and_value(
    tmp_path: Path, content: object, names: list[str]
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ValueError) as caught:
        engine_config(parse_argv(["--model-path", MODEL, "--sim-distortion", str(path)]))
    assert str(path) in str(caught.value)
    for name in names:
        assert name in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--sim-distortion .*missing\.json: cannot read it"):
        engine_config(parse_argv(["--model-path", MODEL, "--sim-distortion", str(tmp_path / "missing.json")]))


@pytest.mark.parametrize("source", ["/dev/zero", "big"])
def test_a_huge_file_is_refused_without_reading_it_whole(tmp_path: Path, source: str) -> None:
    path = Path(source) if source.startswith("/") else write(tmp_path, "{" + " " * 2_000_000 + "}")
    with pytest.raises(ValueError, match="at most 1 MB"):
        engine_config(parse_argv(["--model-path", MODEL, "--sim-distortion", str(path)]))
