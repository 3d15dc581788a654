"""How closely does the simulator on aiconfigurator-core's kernel tables follow the library's own estimates?

For each model x GPU (default flags, the tp in MODELS, the imitated SGLang 0.5.23 priced on the nearest tables):

* **steps**: the simulator's step time (``perf_model.step_time``: the library's step plus the host side the tables
  do not hold) against the library's ``decode_step_latency`` (batch 1/16/64 at 1,100 tokens of context) and
  ``mixed_step_latency`` (one 1,000-token prefill), in ms, and the difference in %;
* **end to end** on D(1000,200) at concurrency 1, 16 and 64 (closed loop, 3 x concurrency measured requests after
  concurrency warm-ups, no noise): the simulator's mean TTFT, mean TPOT and output throughput (in process,
  ``run_benchmark_in_process``) against the library's static estimate (``EngineHandle.run_static``: the batch
  prefills together, then decodes in lockstep) and its aggregated-serving estimate (``backend.run_agg`` with an
  8,192-token step budget, SGLang's default chunk: a mean-field continuous batch).

Run: ``python benchmarks/sim_fidelity_kernels.py`` (all cells: several minutes on 2 busy cores); narrow it with
``--models Qwen/Qwen3-32B --gpus h100``. ``--json out.json`` keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.sim.cli import engine_config, parse_argv
from pytest_autotuner.sim.inprocess import run_benchmark_in_process
from pytest_autotuner.sim.perf_model import step_time

#: model -> tp per GPU kind (the 70B needs 4 H100s; the rest fit one GPU)
MODELS: dict[str, dict[str, int]] = {
    "meta-llama/Llama-3.1-8B-Instruct": {},
    "meta-llama/Llama-3.1-70B-Instruct": {"h100": 4, "h200": 2, "b200": 2},
    "Qwen/Qwen3-32B": {},
    "Qwen/Qwen3-32B-FP8": {},  # FP8 checkpoint: the library reads its quantization_config
    "Qwen/Qwen3-30B-A3B": {},  # MoE, 128 experts, 8 active
    "openai/gpt-oss-20b": {},  # MoE, MXFP4 experts
}
GPUS = ("h100", "h200", "b200")
CONCURRENCIES = (1, 16, 64)
ISL, OSL = 1000, 200


def _library(cfg: Any) -> Any:
    from pytest_autotuner.sim.kernels import _handle

    return _handle(cfg.pricing, cfg.tp)


def _agg(cfg: Any, concurrency: int) -> tuple[float, float, float]:
    """The library's aggregated-serving estimate: (TTFT ms, TPOT ms, output tokens/s)."""
    from aiconfigurator_core.sdk.backends.factory import get_backend
    from aiconfigurator_core.sdk.config import RuntimeConfig
    from aiconfigurator_core.sdk.engine import build_model_config
    from aiconfigurator_core.sdk.models import get_model
    from aiconfigurator_core.sdk.perf_database import get_database

    p = cfg.pricing
    mc = build_model_config(tp_size=cfg.tp, pp_size=1, attention_dp_size=1, moe_tp_size=cfg.tp, moe_ep_size=1,
                            gemm_quant_mode=p.gemm_quant, kvcache_quant_mode=p.attention_kv_quant,
                            fmha_quant_mode=None, moe_quant_mode=p.gemm_quant, comm_quant_mode=None,
                            forward_model=None, attention_backend=None)  # fmt: skip
    model = get_model(p.library_model, mc, "sglang")
    summary = get_backend("sglang").run_agg(
        model, get_database(p.system, "sglang", p.tables), RuntimeConfig(batch_size=concurrency, isl=ISL, osl=OSL),
        ctx_tokens=8192,
    )  # fmt: skip
    row = summary.get_summary_df().iloc[0]
    return float(row["ttft"]), float(row["tpot"]), float(row["tokens/s"])


def _pct(ours: float, theirs: float) -> str:
    return f"{100 * (ours / theirs - 1):+.0f}%" if theirs else "n/a"


def run(models: list[str], gpus: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for model in models:
        for gpu in gpus:
            tp = MODELS.get(model, {}).get(gpu, 1)
            flags = ["--model-path", model, "--sim-gpu", gpu, "--tp-size", str(tp), "--sim-num-gpus", str(tp)]
            try:
                cfg = engine_config(parse_argv(flags))
            except ValueError as exc:
                print(f"{model} on {gpu}: not priced: {exc}")
                continue
            if not cfg.priced_by_kernels:
                print(f"{model} on {gpu}: {cfg.pricing.describe() if cfg.pricing else 'roofline'}")
                continue
            h = _library(cfg)
            steps = []
            for batch in (1, 16, 64):
                ours = 1e3 * step_time(cfg, decode_batch=batch, decode_context=batch * 1100)
                steps.append((f"decode bs{batch}", ours, h.decode_step_latency(batch, 1099, 1)))
            ours = 1e3 * step_time(cfg, decode_batch=0, decode_context=0, prefill_tokens=ISL,
                                   prefill_attention_pairs=ISL * ISL / 2)  # fmt: skip
            steps.append(("prefill 1000", ours, h.mixed_step_breakdown(ISL, 0, ISL, 1)[0]))
            print(f"\n{model} on {gpu} (tp {tp}): {cfg.pricing.describe() if cfg.pricing else ''}")
            print("  steps (ms): " + "; ".join(f"{n} {o:.2f} vs {t:.2f} ({_pct(o, t)})" for n, o, t in steps))
            params: dict[str, Any] = {"tp-size": tp}
            for c in CONCURRENCIES:
                plan = BenchmarkPlan((parse_scenario(f"D({ISL},{OSL})"),), (c,), max_requests=3 * c,
                                     warmup_requests=c, max_time=1e9, seed=1)  # fmt: skip
                began = time.monotonic()
                cell = run_benchmark_in_process(model, params, plan, gpu=gpu, num_gpus=tp).cells[0]
                sim = (1e3 * cell.summary("ttft").mean, 1e3 * cell.summary("tpot").mean, cell.output_throughput)
                ctx_ms, gen_ms, total_ms = h._engine.run_static(c, 1, ISL, OSL, 0, 1.0, 1.0, "static", 32)
                static = (ctx_ms, gen_ms / (OSL - 1), c * OSL / (total_ms / 1e3))
                agg = _agg(cfg, c)
                row = {"model": model, "gpu": gpu, "tp": tp, "concurrency": c, "sim": sim, "static": static,
                       "agg": agg, "steps": steps, "wall_s": time.monotonic() - began}  # fmt: skip
                rows.append(row)
                print(
                    f"  c={c:<3} TTFT {sim[0]:7.1f} ms (static {static[0]:7.1f} {_pct(sim[0], static[0])}, agg "
                    f"{agg[0]:7.1f} {_pct(sim[0], agg[0])})  TPOT {sim[1]:6.2f} ms (static {static[1]:6.2f} "
                    f"{_pct(sim[1], static[1])}, agg {agg[1]:6.2f} {_pct(sim[1], agg[1])})  tok/s {sim[2]:7.0f} "
                    f"(static {static[2]:7.0f} {_pct(sim[2], static[2])}, agg {agg[2]:7.0f} {_pct(sim[2], agg[2])})"
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--gpus", nargs="*", default=list(GPUS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the library logs its table loading
    rows = run(args.models, args.gpus)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)


if __name__ == "__main__":
    main()
