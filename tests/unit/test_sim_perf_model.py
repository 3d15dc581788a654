"""The simulator's model profiles, memory plan and startup failures."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.measure.trial import FailureClass, TrialFailure
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.sim import GPUS, EngineConfig, StartupFailure, lookup_model, plan_memory
from pytest_autotuner.sim.inprocess import run_benchmark_in_process

if TYPE_CHECKING:
    from pathlib import Path

SMALL_PLAN = BenchmarkPlan((parse_scenario("D(128,16)"),), (2,), max_requests=4, warmup_requests=0)


@pytest.mark.parametrize(
    ("model_id", "name"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B"),
        ("llama-3-2-1b-instruct", "Llama-3.2-1B"),
        ("LLAMA_3.1_70B", "Llama-3.1-70B"),
        ("unsloth/llama-3.2-1b", "Llama-3.2-1B"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", "Llama-3.1-8B"),
    ],
)
def test_model_ids_match_ignoring_case_separators_and_instruct(model_id: str, name: str) -> None:
    assert lookup_model(model_id).name == name


def test_unknown_model_error_lists_the_known_models() -> None:
    with pytest.raises(ValueError, match=r"Llama-3\.2-1B, Llama-3\.1-8B, Llama-3\.1-70B"):
        lookup_model("mistralai/Mistral-7B-v0.1")


def test_local_directory_config_json_gives_the_architecture(tmp_path: Path) -> None:
    config = {
        "num_hidden_layers": 24,
        "hidden_size": 2048,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "vocab_size": 32000,
        "intermediate_size": 5632,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    profile = lookup_model(str(tmp_path))
    assert (profile.num_layers, profile.num_kv_heads, profile.head_dim) == (24, 4, 128)
    assert profile.kv_bytes_per_token() == 2 * 24 * 4 * 128 * 2


def test_profiles_match_public_weight_and_kv_sizes() -> None:
    one_b, eight_b = lookup_model("Llama-3.2-1B"), lookup_model("Llama-3.1-8B")
    assert one_b.weight_bytes / 1e9 == pytest.approx(2.47, abs=0.05)
    assert eight_b.weight_bytes / 1e9 == pytest.approx(16.06, abs=0.05)
    assert (one_b.kv_bytes_per_token(), eight_b.kv_bytes_per_token()) == (32 * 1024, 128 * 1024)


def test_kv_capacity_follows_the_sglang_formula() -> None:
    cfg = EngineConfig(model=lookup_model("Llama-3.1-8B"), gpu=GPUS["h100"], mem_fraction_static=0.8)
    expected = (80e9 * 0.8 - cfg.model.weight_bytes) / (128 * 1024)
    assert plan_memory(cfg).max_total_num_tokens == pytest.approx(expected, rel=1e-6)


def test_fp8_kv_cache_doubles_the_token_capacity() -> None:
    model, gpu = lookup_model("Llama-3.1-8B"), GPUS["h100"]
    auto = plan_memory(EngineConfig(model=model, gpu=gpu)).max_total_num_tokens
    fp8 = plan_memory(EngineConfig(model=model, gpu=gpu, kv_cache_dtype="fp8_e4m3")).max_total_num_tokens
    assert fp8 == pytest.approx(2 * auto, abs=1)


def test_mem_fraction_097_on_80gb_fails_with_the_cuda_graph_oom_message() -> None:
    with pytest.raises(TrialFailure) as info:
        run_benchmark_in_process("Llama-3.1-8B", {"mem-fraction-static": 0.97}, SMALL_PLAN)
    assert info.value.failure_class is FailureClass.OOM
    assert info.value.message.startswith("Exception: Capture cuda graph failed: CUDA out of memory")


def test_mem_fraction_09_still_starts_the_8b_model() -> None:
    result = run_benchmark_in_process("Llama-3.1-8B", {"mem-fraction-static": 0.9}, SMALL_PLAN)
    assert result.cells[0].completed == 4


def test_70b_on_one_h100_does_not_have_enough_memory() -> None:
    with pytest.raises(TrialFailure) as info:
        run_benchmark_in_process("Llama-3.1-70B", {}, SMALL_PLAN)
    assert info.value.failure_class is FailureClass.KV_CACHE_OOM
    assert info.value.message == ("RuntimeError: Not enough memory. Please try to increase --mem-fraction-static.")


def test_70b_starts_with_tp4_on_four_gpus() -> None:
    result = run_benchmark_in_process("Llama-3.1-70B", {"tp-size": 4}, SMALL_PLAN, num_gpus=4)
    assert result.server_info["max_total_num_tokens"] > 100_000
    assert result.cells[0].completed == 4


def test_tp_that_does_not_divide_the_heads_is_invalid_parallelism() -> None:
    with pytest.raises(TrialFailure) as info:
        run_benchmark_in_process("Llama-3.1-8B", {"tp-size": 3}, SMALL_PLAN, num_gpus=4)
    assert info.value.failure_class is FailureClass.INVALID_PARALLELISM
    assert "Number of attention heads (32) must be divisible by tensor parallel size" in info.value.message


def test_tp_times_dp_above_the_visible_gpus_is_invalid_parallelism() -> None:
    with pytest.raises(TrialFailure) as info:
        run_benchmark_in_process("Llama-3.1-8B", {"tp-size": 2, "dp-size": 2}, SMALL_PLAN, num_gpus=2)
    assert info.value.failure_class is FailureClass.INVALID_PARALLELISM


def test_startup_failure_kinds_are_exceptions_with_sglang_messages() -> None:
    cfg = EngineConfig(model=lookup_model("Llama-3.1-8B"), gpu=GPUS["h100"], mem_fraction_static=0.15)
    with pytest.raises(StartupFailure, match="Not enough memory"):
        plan_memory(cfg)


def test_server_info_reports_the_memory_plan_and_version() -> None:
    info = run_benchmark_in_process("Llama-3.1-8B", {"max-running-requests": 48}, SMALL_PLAN).server_info
    assert info["version"] == "0.5.23-sim" and info["sim_sglang_version"] == "0.5.23"  # the newest by default
    assert info["max_running_requests"] == 48
    assert info["tp_size"] == 1 and info["mem_fraction_static"] == pytest.approx(0.835)
    assert info["max_total_num_tokens"] > 300_000


def test_a_model_config_over_the_bound_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    from pytest_autotuner.inputs import MAX_MODEL_CONFIG_BYTES, lookup_model

    (tmp_path / "config.json").write_bytes(b" " * (MAX_MODEL_CONFIG_BYTES + 10))
    with pytest.raises(ValueError, match=r"config\.json: over 1 MiB"):
        lookup_model(str(tmp_path))
