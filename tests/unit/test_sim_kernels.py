"""The simulator on aiconfigurator-core's kernel tables (sim/kernels.py): real library calls, directions and sizes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

pytest.importorskip("aiconfigurator_core", reason="the [kernels] extra (part of [dev]) is not installed")

from aiconfigurator_core.sdk.engine import EngineHandle

from pytest_autotuner.sglang_tables import shipped_table
from pytest_autotuner.sim.cli import engine_config, parse_argv, pricing_problem, server_info
from pytest_autotuner.sim.kernels import library_model, table_version
from pytest_autotuner.sim.perf_model import StartupFailure, plan_memory, step_time

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
QWEN_MOE = "Qwen/Qwen3-30B-A3B"
QWEN_DENSE = "Qwen/Qwen3-32B"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_AUTOTUNER_CACHE", str(tmp_path_factory.getbasetemp() / "kernel-cache"))


def _cfg(model: str, *flags: str):  # type: ignore[no-untyped-def]
    return engine_config(parse_argv(["--model-path", model, *flags]))


def _decode(cfg, batch: int, context: int) -> float:  # type: ignore[no-untyped-def]
    return step_time(cfg, decode_batch=batch, decode_context=batch * context)


def _prefill(cfg, tokens: int) -> float:  # type: ignore[no-untyped-def]
    return step_time(cfg, decode_batch=0, decode_context=0, prefill_tokens=tokens,
                     prefill_attention_pairs=tokens * tokens / 2)  # fmt: skip


def test_the_8b_on_h100_is_priced_by_the_tables_and_server_info_says_so() -> None:
    args = parse_argv(["--model-path", LLAMA_8B])
    cfg = engine_config(args)
    info = server_info(args, cfg, plan_memory(cfg))
    assert cfg.priced_by_kernels
    # the imitated 0.5.23 is priced on the nearest version the library serves on h100_sxm
    assert info["sim_pricing"].startswith("aiconfigurator-core 0.12.")
    assert info["sim_pricing"].endswith(" (SGLang 0.5.16 tables on h100_sxm)")
    roofline = engine_config(parse_argv(["--model-path", LLAMA_8B, "--sim-pricing", "roofline"]))
    assert not roofline.priced_by_kernels
    assert server_info(args, roofline, plan_memory(roofline))["sim_pricing"] == "roofline (--sim-pricing roofline)"


def test_step_times_are_the_librarys_plus_the_host_side() -> None:
    """The adapter adds only the launches and per-request scheduling the tables do not measure (< 0.5 ms)."""
    handle = EngineHandle.compile("meta-llama/Meta-Llama-3.1-8B", "h100_sxm", "sglang", backend_version="0.5.16")
    cfg = _cfg(LLAMA_8B)
    for batch, context in ((1, 128), (32, 2048), (128, 1000)):
        library = handle.decode_step_latency(batch, context - 1, 1) * 1e-3
        assert library < _decode(cfg, batch, context) < library + 0.5e-3 + 4e-6 * batch
    library = handle.mixed_step_latency(2048, 0, 2048, 1) * 1e-3
    assert library < _prefill(cfg, 2048) < library + 1.5e-3  # eager launches: 30 us x 32 layers
    assert _prefill(cfg, 2048) == pytest.approx(0.0471, rel=0.02)  # the 46.1 ms, plus launches


@pytest.mark.parametrize(
    ("model", "gpu", "tp"),
    [(LLAMA_8B, "h100", 1), (LLAMA_8B, "h200", 2), (QWEN_MOE, "h200", 1), (QWEN_MOE, "b200", 2),
     (QWEN_DENSE, "l40s", 2), ("Qwen/Qwen3-32B-FP8", "h100", 1), ("openai/gpt-oss-20b", "b200", 1),
     ("Llama-3.2-1B", "h100", 1)],
)  # fmt: skip
def test_steps_grow_with_batch_context_and_prompt(model: str, gpu: str, tp: int) -> None:
    cfg = _cfg(model, "--sim-gpu", gpu, "--tp-size", str(tp), "--sim-num-gpus", str(tp))
    assert cfg.priced_by_kernels
    decode = [_decode(cfg, b, 1024) for b in (1, 16, 64, 256)]
    assert decode == sorted(decode) and decode[0] > 0
    assert _decode(cfg, 32, 8192) > _decode(cfg, 32, 512)
    prefill = [_prefill(cfg, n) for n in (256, 1024, 4096)]
    assert prefill == sorted(prefill) and prefill[-1] > 4 * prefill[0] / 2
    assert plan_memory(cfg).max_total_num_tokens > 10_000


def test_directions_between_gpus_parallelism_quantization_and_moe() -> None:
    h100, h200, b200 = (_cfg(LLAMA_8B, "--sim-gpu", g) for g in ("h100", "h200", "b200"))
    assert _decode(b200, 64, 2048) < _decode(h200, 64, 2048) < _decode(h100, 64, 2048)
    tp2 = _cfg(LLAMA_8B, "--tp-size", "2", "--sim-num-gpus", "2")
    assert 0.5 < _decode(tp2, 32, 1024) / _decode(h100, 32, 1024) < 0.8
    fp8 = _cfg(LLAMA_8B, "--quantization", "fp8")
    assert _prefill(fp8, 4096) < 0.8 * _prefill(h100, 4096)
    assert plan_memory(fp8).max_total_num_tokens > 1.1 * plan_memory(h100).max_total_num_tokens
    # 3B active parameters of 30B against a dense 32B: alone, the MoE decodes >4x faster (4.1 against 18.6 ms on
    # H200); at batch 32 the requests route to most of its 128 experts and the gap closes (16.2 against 23.2 ms)
    moe, dense = _cfg(QWEN_MOE, "--sim-gpu", "h200"), _cfg(QWEN_DENSE, "--sim-gpu", "h200")
    assert _decode(moe, 1, 2048) < 0.25 * _decode(dense, 1, 2048)
    assert 0.5 * _decode(dense, 32, 2048) < _decode(moe, 32, 2048) < 0.8 * _decode(dense, 32, 2048)


def test_kv_pool_sizes_follow_sglang_static_pool() -> None:
    cfg = _cfg(LLAMA_8B, "--mem-fraction-static", "0.835")
    tokens = plan_memory(cfg).max_total_num_tokens
    # (80 GiB x 0.835 - 16.06 GB of weights) / 128 KiB a token; the roofline's 80 GB gives 387,115
    assert tokens == pytest.approx((85_899_345_920 * 0.835 - 16.06e9) / 131_072, rel=0.001)
    fp8_kv = plan_memory(_cfg(LLAMA_8B, "--mem-fraction-static", "0.835", "--kv-cache-dtype", "fp8_e5m2"))
    assert fp8_kv.max_total_num_tokens == pytest.approx(2 * tokens, rel=0.001)
    with pytest.raises(StartupFailure) as failure:
        plan_memory(_cfg(LLAMA_8B, "--mem-fraction-static", "0.15"))
    assert failure.value.kind == "kv_cache_oom"


def test_the_roofline_prices_a_roofline_model_the_tables_miss_and_says_why() -> None:
    cfg = _cfg("Llama-3.2-1B", "--sim-gpu", "a100-80g")  # no head-size-64 attention table on a100_sxm 0.5.10
    assert not cfg.priced_by_kernels and cfg.pricing is not None
    assert "cannot price meta-llama--Llama-3.2-1B on a100_sxm" in cfg.pricing.describe()  # no path: fingerprint
    assert "attention data missing" in cfg.pricing.describe()


def test_an_fp8_kv_cache_without_attention_tables_stays_on_the_tables_and_says_how() -> None:
    cfg = _cfg(LLAMA_8B, "--kv-cache-dtype", "fp8_e5m2")  # no fp8-KV context attention table on h100 0.5.16
    assert cfg.priced_by_kernels and cfg.pricing is not None
    assert "attention priced on the 16-bit KV tables" in cfg.pricing.describe()


def test_versions_resolve_to_the_nearest_with_tables() -> None:
    assert table_version("h100_sxm", "0.5.23") == "0.5.16"
    assert table_version("h100_sxm", "0.5.2") == "0.5.14"
    assert table_version("a100_sxm", "0.5.23") == "0.5.10"
    old = _cfg(LLAMA_8B, "--sim-sglang-version", "0.5.2")
    assert old.pricing is not None and old.pricing.tables == "0.5.14"


def test_a_local_folder_of_a_supported_architecture_is_priced(tmp_path: Path) -> None:
    import aiconfigurator_core

    bundled = Path(aiconfigurator_core.__file__).parent / "model_configs" / "Qwen--Qwen3-30B-A3B_config.json"
    (tmp_path / "my-moe").mkdir()
    (tmp_path / "my-moe" / "config.json").write_text(bundled.read_text())
    local = _cfg(str(tmp_path / "my-moe"), "--sim-gpu", "h200")
    assert local.priced_by_kernels
    assert _decode(local, 32, 2048) == pytest.approx(_decode(_cfg(QWEN_MOE, "--sim-gpu", "h200"), 32, 2048))


def test_what_cannot_be_priced_is_an_error_naming_what_is_missing(tmp_path: Path) -> None:
    problem = pricing_problem("acme/NoSuchModel-7B", "h100")
    assert problem is not None and "'acme/NoSuchModel-7B'" in problem and "Hugging Face ids" in problem
    odd = tmp_path / "odd"
    odd.mkdir()
    config = {"architectures": ["FalconForCausalLM"], "hidden_size": 4096, "num_attention_heads": 32,
              "num_hidden_layers": 32, "vocab_size": 65024}  # fmt: skip
    (odd / "config.json").write_text(json.dumps(config))
    problem = pricing_problem(str(odd), "h100")
    assert problem is not None and "FalconForCausalLM" in problem and "config.json" in problem
    assert pricing_problem(QWEN_MOE, "b200", "0.5.23") is None
    assert pricing_problem(LLAMA_8B, "h100") is None
    with pytest.raises(ValueError, match="--sim-pricing roofline: the roofline prices only"):
        _cfg(QWEN_MOE, "--sim-pricing", "roofline")


def test_the_bundled_llama_1b_config_matches_the_roofline_table() -> None:
    from pytest_autotuner.core.spec.models import MODELS

    path, reason = library_model("meta-llama/Llama-3.2-1B-Instruct")
    assert path is not None, reason
    raw = json.loads((Path(path) / "config.json").read_text())
    profile = MODELS["llama-3.2-1b"]
    assert (raw["num_hidden_layers"], raw["hidden_size"], raw["num_key_value_heads"], raw["intermediate_size"]) == (
        profile.num_layers, profile.hidden_size, profile.num_kv_heads, profile.intermediate_size)  # fmt: skip


def test_the_roofline_still_prices_when_forced_with_its_figures() -> None:
    cfg = _cfg(LLAMA_8B, "--sim-pricing", "roofline")
    assert _prefill(cfg, 2048) == pytest.approx(0.0571, rel=0.01)  # RESULTS.md's roofline 57.1 ms
    assert dataclasses.replace(cfg, pricing=None).priced_by_kernels is False


def test_expert_parallelism_costs_what_the_library_says() -> None:
    """--ep-size 2 at tp 2 on Qwen3-30B-A3B (H200): each GPU holds 64 whole experts instead of half of each of 128;
    the library's all-to-all makes that slower here (decode batch 256: 20.98 against 17.61 ms; 4k prefill 62.2
    against 45.9 ms), and the simulator's steps follow it."""
    flags = ("--sim-gpu", "h200", "--tp-size", "2", "--sim-num-gpus", "2")
    tp, ep = _cfg(QWEN_MOE, *flags), _cfg(QWEN_MOE, *flags, "--ep-size", "2")
    assert ep.pricing is not None and ep.pricing.ep == 2 and "expert parallel 2" in ep.pricing.describe()
    assert _decode(ep, 256, 2048) / _decode(tp, 256, 2048) == pytest.approx(20.98 / 17.61, rel=0.03)
    assert _prefill(ep, 4096) / _prefill(tp, 4096) == pytest.approx(62.2 / 45.9, rel=0.03)
    args = parse_argv(["--model-path", QWEN_MOE, *flags, "--ep-size", "2"])
    assert "ep-size" not in server_info(args, ep, plan_memory(ep))["sim_unmodelled_flags"]
    with pytest.raises(StartupFailure, match="must be divisible by ep_size"):
        plan_memory(_cfg(QWEN_MOE, "--sim-gpu", "h200", "--tp-size", "4", "--sim-num-gpus", "4", "--ep-size", "3"))
    # a dense model has no experts: the same pricing
    dense = _cfg(LLAMA_8B, "--tp-size", "2", "--sim-num-gpus", "2", "--ep-size", "2")
    assert dense.pricing == _cfg(LLAMA_8B, "--tp-size", "2", "--sim-num-gpus", "2").pricing
    # on the roofline it has no effect, and says so
    llama = parse_argv(["--model-path", LLAMA_8B, "--sim-pricing", "roofline", "--ep-size", "2", "--tp-size", "2",
                        "--sim-num-gpus", "2"])  # fmt: skip
    cfg = engine_config(llama)
    assert "ep-size" in server_info(llama, cfg, plan_memory(cfg))["sim_unmodelled_flags"]


def test_attention_data_parallelism_costs_what_the_library_says() -> None:
    """--attn-dp-size 2 at tp 2 on Qwen3-30B-A3B (H100): two schedulers, each with attention on one GPU and the
    MoE over both. The library prices a rank's decode step of 32 at 14.5 ms against 13.8 ms for tp 2's step of 64
    (this GQA model's KV shards over tp, so DP attention buys no capacity and costs some speed); the simulator's
    steps are the library's, and end to end its TPOT moves the same way by about as much."""
    from pytest_autotuner.core.measure.plan import BenchmarkPlan
    from pytest_autotuner.core.spec.scenarios import parse_scenario
    from pytest_autotuner.sim.inprocess import run_benchmark_in_process

    flags = ("--tp-size", "2", "--sim-num-gpus", "2")
    tp, adp = _cfg(QWEN_MOE, *flags), _cfg(QWEN_MOE, *flags, "--attn-dp-size", "2")
    assert adp.pricing is not None and adp.pricing.attention_dp == 2
    assert "attention data parallel 2" in adp.pricing.describe()
    assert (tp.schedulers, adp.schedulers) == (1, 2)
    lib = {
        name: EngineHandle.compile(QWEN_MOE, "h100_sxm", "sglang", backend_version="0.5.16", **kwargs)
        for name, kwargs in (("tp", {"tp_size": 2, "moe_tp_size": 2, "moe_ep_size": 1}),
                             ("adp", {"tp_size": 1, "attention_dp_size": 2, "moe_tp_size": 2, "moe_ep_size": 1}))
    }  # fmt: skip
    library_ratio = lib["adp"].decode_step_latency(32, 1099, 1) / lib["tp"].decode_step_latency(64, 1099, 1)
    assert library_ratio > 1.0
    assert _decode(adp, 32, 1100) / _decode(tp, 64, 1100) == pytest.approx(library_ratio, rel=0.03)
    plan = BenchmarkPlan((parse_scenario("D(1000,200)"),), (64,), max_requests=192, warmup_requests=64)
    cells = {
        name: run_benchmark_in_process(QWEN_MOE, params, plan, gpu="h100", num_gpus=2).cells[0]
        for name, params in (("tp", {"tp-size": 2}), ("adp", {"tp-size": 2, "attn-dp-size": 2}))
    }
    tpot_ratio = cells["adp"].summary("tpot").mean / cells["tp"].summary("tpot").mean
    assert 1.0 < tpot_ratio == pytest.approx(library_ratio, rel=0.05)
    assert cells["adp"].output_throughput < cells["tp"].output_throughput


def test_attention_data_parallelism_is_laid_out_as_sglang_does() -> None:
    """Inside the tp GPUs (no more of them), a scheduler per rank; --max-running-requests and the prefill chunk
    are the server's, each rank gets its share (SGLang's server_args); 0.5.2's spelling, --enable-dp-attention
    with --dp-size, is the same server; the roofline has no model of it; tp must divide by it."""
    from pytest_autotuner.core.search.gpu_pool import gpus_needed

    flags = ("--tp-size", "2", "--sim-num-gpus", "2", "--max-running-requests", "64", "--chunked-prefill-size", "8192")
    new = _cfg(QWEN_MOE, *flags, "--attn-dp-size", "2")
    old = _cfg(QWEN_MOE, *flags, "--enable-dp-attention", "--dp-size", "2", "--sim-sglang-version", "0.5.2")
    for cfg in (new, old):
        assert (cfg.schedulers, cfg.dp, cfg.attention_dp, cfg.chunked_prefill_size) == (2, 1, 2, 4096)
        assert plan_memory(cfg).max_running_requests == 32
    assert gpus_needed({"tp-size": 2, "dp-size": 2, "enable-dp-attention": True}) == 2
    assert gpus_needed({"tp-size": 2, "attn-dp-size": 2}) == 2 and gpus_needed({"tp-size": 2, "dp-size": 2}) == 4
    args = parse_argv(["--model-path", QWEN_MOE, *flags, "--attn-dp-size", "2"])
    assert "attn-dp-size" not in server_info(args, new, plan_memory(new))["sim_unmodelled_flags"]
    with pytest.raises(ValueError, match="no model of attention data parallelism"):
        _cfg(LLAMA_8B, "--sim-pricing", "roofline", "--tp-size", "2", "--sim-num-gpus", "2", "--attn-dp-size", "2")
    with pytest.raises(StartupFailure, match="must be divisible by the attention dp size"):
        plan_memory(_cfg(QWEN_MOE, "--tp-size", "2", "--sim-num-gpus", "2", "--attn-dp-size", "4"))


#: every --attention-backend of SGLang 0.5.23 (the simulator's default version)
BACKENDS = next(o.choices for o in shipped_table("0.5.23").options if "attention-backend" in o.names)


@pytest.mark.parametrize("gpu", ["h100", "b200"])
def test_every_attention_backend_is_priced_on_its_lane_or_said_to_be_the_default(gpu: str) -> None:
    """The family: each backend SGLang accepts, on each GPU. Where the library times both phases on the backend's
    own lane, the flag is modelled (its step times may differ from the default's); everywhere else the step times
    are the default backend's exactly and the flag is listed as not modelled, with the reason in the pricing."""
    default = _cfg(LLAMA_8B, "--sim-gpu", gpu)
    base = (_decode(default, 32, 2048), _prefill(default, 4096))
    on_lane = set()
    for backend in BACKENDS or ():
        args = parse_argv(["--model-path", LLAMA_8B, "--sim-gpu", gpu, "--attention-backend", backend])
        cfg = engine_config(args)
        info = server_info(args, cfg, plan_memory(cfg))
        listed = f"attention-backend={backend}" in info["sim_unmodelled_flags"]
        assert cfg.pricing is not None
        if cfg.pricing.attention_backend == backend:
            on_lane.add(backend)
            assert not listed and f"attention backend {backend}" in info["sim_pricing"]
        else:
            assert listed and "attention priced as SGLang's default backend" in info["sim_pricing"]
            assert (_decode(cfg, 32, 2048), _prefill(cfg, 4096)) == base
    assert on_lane  # each GPU has at least one lane besides the default


def test_flashinfer_on_b200_costs_what_the_library_says() -> None:
    """aiconfigurator-core 0.12's B200 tables: flashinfer's decode attention is slower than the default lane's."""
    default = _cfg(LLAMA_8B, "--sim-gpu", "b200")
    flashinfer = _cfg(LLAMA_8B, "--sim-gpu", "b200", "--attention-backend", "flashinfer")
    assert _decode(flashinfer, 32, 2048) > _decode(default, 32, 2048) * 1.02
    assert _prefill(flashinfer, 4096) >= _prefill(default, 4096)


def test_the_roofline_lists_the_attention_backend_as_not_modelled() -> None:
    args = parse_argv(["--model-path", LLAMA_8B, "--sim-pricing", "roofline", "--attention-backend", "fa3"])
    cfg = engine_config(args)
    assert "attention-backend=fa3" in server_info(args, cfg, plan_memory(cfg))["sim_unmodelled_flags"]
