"""The simulator's flags: SGLang's names and aliases, argparse errors, in-process validation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.sim import DEFAULT_SPEEDUP, ParamError, build_parser
from pytest_autotuner.sim.cli import engine_config, params_to_argv, parse_argv
from pytest_autotuner.sim.inprocess import run_benchmark_in_process

SMALL_PLAN = BenchmarkPlan((parse_scenario("D(64,8)"),), (1,), max_requests=2, warmup_requests=0)


def test_aliases_and_defaults() -> None:
    args = parse_argv(["--model-path", "Llama-3.2-1B", "--tensor-parallel-size", "2", "--dp-size", "2"])
    assert (args.tp_size, args.dp_size) == (2, 2)
    assert args.schedule_policy == "fcfs" and args.stream_interval == 1
    assert args.sim_speedup == DEFAULT_SPEEDUP == 1.0
    assert args.sim_noise == pytest.approx(0.03)


@pytest.mark.parametrize(
    ("argv", "fraction"),
    [
        ([], 0.835),  # SGLang's H100 default
        (["--sim-gpu", "h200"], 0.907),
        (["--chunked-prefill-size", "-1"], 0.685),  # room kept for 16,384 unchunked prefill tokens
        (["--chunked-prefill-size", "4096"], 0.874),
        (["--mem-fraction-static", "0.7"], 0.7),  # given: used as is
    ],
)
def test_the_default_memory_fraction_is_sglangs_for_the_gpu_and_flags(argv: list[str], fraction: float) -> None:
    assert engine_config(parse_argv(["--model-path", "Llama-3.1-8B", *argv])).mem_fraction_static == fraction


def test_bare_flags_and_values_from_params() -> None:
    argv = params_to_argv({"tp-size": 2, "disable-cuda-graph": True, "enable-mixed-chunk": False})
    assert argv == ["--tp-size", "2", "--disable-cuda-graph"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--schedule-policy", "sjf"],
        ["--kv-cache-dtype", "int4"],
        ["--mem-fraction-static", "1.2"],
        ["--tp-size", "0"],
        ["--chunked-prefill-size", "0"],
        ["--no-such-flag", "1"],
        ["--sim-gpu", "rtx4090"],
    ],
)
def test_bad_flags_raise_param_error(argv: list[str]) -> None:
    with pytest.raises(ParamError):
        build_parser(raising=True).parse_args(["--model-path", "Llama-3.2-1B", *argv])


def test_in_process_validates_params_like_the_cli() -> None:
    with pytest.raises(ParamError, match="schedule-policy"):
        run_benchmark_in_process("Llama-3.2-1B", {"schedule-policy": "sjf"}, SMALL_PLAN)
    with pytest.raises(ParamError, match="unrecognized"):
        run_benchmark_in_process("Llama-3.2-1B", {"tp_sizes": 2}, SMALL_PLAN)


def test_cli_exits_2_on_a_bad_value() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_autotuner.sim", "--model-path", "x", "--schedule-policy", "sjf"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "invalid choice: 'sjf'" in proc.stderr
