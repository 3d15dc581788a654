"""Time Llama forward passes (3.1-8B or 3.2-1B shapes) on a real GPU against the simulator's step-time model.

Two halves, so the GPU machine needs only PyTorch and transformers (not this package):

    python benchmarks/gpu_step_timing.py measure --out t.json [--model llama-3.2-1b] [--fused] [--shapes 1x1024]
    python benchmarks/gpu_step_timing.py compare t.json    # anywhere: measured vs simulated

Timings taken so far are in benchmarks/gpu_timings/<gpu>-<model>.json; tests/unit/test_sim_gpu_timings.py holds
the simulator to them.

The weights are random (a step's time does not depend on their values). What is timed, bf16, one GPU:

* primitives: the HBM bandwidth a device-to-device copy reaches, and bf16 GEMM throughput at the model's MLP
  shape for a range of token counts (the simulator's FLOP-efficiency ramp);
* prefill: one forward of T prompt tokens (batch 1, SDPA attention), logits for the last token only, as a
  serving engine computes them;
* decode: one step of B sequences at context C, built from the model's fused projections and a GQA attention
  that reads each KV byte once (see _decode_steps), captured in a CUDA graph (SGLang replays graphs for decode
  batches up to --cuda-graph-max-bs), and eagerly for comparison.

Hugging Face kernels are not SGLang's (no fused norm/rotary/activation, no FlashInfer), so prefill here is an
upper bound on SGLang's GPU time, and at a few hundred tokens it is bound by Python launching kernels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Hugging Face config fields of the models timed, by the simulator's model key
SHAPES: dict[str, dict[str, int]] = {
    "llama-3.1-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256},
    "llama-3.2-1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256},
}  # fmt: skip
PREFILL_TOKENS = (128, 512, 1024, 2048, 4096, 8192)
# (batch, context): the KV cache of the largest is 256 x 1025 x 128 KiB = 34 GB, beside 16 GB of weights
DECODE_SHAPES = ((1, 1024), (8, 1024), (32, 1024), (64, 1024), (128, 1024), (256, 1024), (1, 8192),
                 (32, 4096), (64, 4096))  # fmt: skip
GEMM_TOKENS = (1, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


# -- measure (GPU machine) ------------------------------------------------------------------------------------


def _timed(torch: Any, step: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of ``step`` by CUDA events, after two warm-up calls."""
    for _ in range(2):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _primitives(torch: Any, shape: dict[str, int]) -> dict[str, Any]:
    nbytes = 4 * 1024**3
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    copy_ms = _timed(torch, lambda: dst.copy_(src), 10)
    h, i = shape["hidden_size"], shape["intermediate_size"]
    weight = torch.randn(2 * i, h, dtype=torch.bfloat16, device="cuda")  # the fused gate/up projection
    gemm = {}
    for tokens in GEMM_TOKENS:
        x = torch.randn(tokens, h, dtype=torch.bfloat16, device="cuda")

        def project(x: Any = x) -> object:
            return torch.nn.functional.linear(x, weight)

        ms = _timed(torch, project, 20)
        gemm[tokens] = {"ms": ms, "tflops": 2 * tokens * h * 2 * i / (ms / 1e3) / 1e12}
    return {"copy_bandwidth_gbs": 2 * nbytes / (copy_ms / 1e3) / 1e9, "gemm_gate_up": gemm}


def _graph_ms(torch: Any, step: Callable[[], object], repeats: int) -> float:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    ms = _timed(torch, graph.replay, repeats)
    del graph
    return ms


def _decode_steps(
    torch: Any, shape: dict[str, int], repeats: int, shapes: tuple[tuple[int, int], ...], fused: bool
) -> Iterator[dict[str, Any]]:
    """Time one decode step per shape, built the way a serving engine runs it (not Hugging Face's forward, whose
    static-cache attention expands the KV heads and masks the whole cache: 10x slower than the weights and KV
    reads it needs, measured): fused QKV and gate/up projections, GQA attention over a contiguous KV cache as two
    batched matmuls (each K and V byte read once), RMSNorm, SiLU, logits for every sequence. Writing the new
    token's K and V (B x 2 KiB per layer) is left out. ``fused``: each layer goes through ``torch.compile``, which
    fuses the norms, activation and residual adds into a few kernels, as SGLang's own kernels do."""
    f = torch.nn.functional
    h, heads, kv_heads = shape["hidden_size"], shape["num_attention_heads"], shape["num_key_value_heads"]
    inter, dim = shape["intermediate_size"], shape["hidden_size"] // shape["num_attention_heads"]

    def weight(rows: int, cols: int) -> Any:
        return torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16) * 0.02

    layers = [(weight(h + 2 * kv_heads * dim, h), weight(h, h), weight(2 * inter, h), weight(h, inter))
              for _ in range(shape["num_hidden_layers"])]  # fmt: skip
    lm_head = weight(shape["vocab_size"], h)
    gain = torch.ones(h, device="cuda", dtype=torch.bfloat16)

    def layer(hidden: Any, qkv_w: Any, o_w: Any, gate_up_w: Any, down_w: Any, k: Any, v: Any) -> Any:
        batch = hidden.shape[0]
        qkv = f.linear(f.rms_norm(hidden, (h,), gain), qkv_w)
        q = qkv[:, :h].reshape(batch, kv_heads, heads // kv_heads, dim)
        scores = torch.matmul(q, k.transpose(-1, -2)) * dim**-0.5
        probs = torch.softmax(scores.float(), dim=-1).to(torch.bfloat16)
        hidden = hidden + f.linear(torch.matmul(probs, v).reshape(batch, h), o_w)
        gate, up = f.linear(f.rms_norm(hidden, (h,), gain), gate_up_w).chunk(2, dim=-1)
        return hidden + f.linear(f.silu(gate) * up, down_w)

    run_layer = torch.compile(layer, dynamic=False) if fused else layer
    for batch, context in shapes:
        row: dict[str, Any] = {"batch": batch, "context": context, "fused": fused}
        try:
            cache = [(torch.randn(batch, kv_heads, context, dim, device="cuda", dtype=torch.bfloat16),
                      torch.randn(batch, kv_heads, context, dim, device="cuda", dtype=torch.bfloat16))
                     for _ in layers]  # fmt: skip
            x = torch.randn(batch, h, device="cuda", dtype=torch.bfloat16)
        except Exception as exc:  # out of memory on a smaller GPU: keep the other rows
            row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            yield row
            continue

        def step(x: Any = x, cache: Any = cache) -> object:
            hidden = x
            for weights, (k, v) in zip(layers, cache, strict=True):
                hidden = run_layer(hidden, *weights, k, v)
            return f.linear(f.rms_norm(hidden, (h,), gain), lm_head)

        for key, timer in (("eager", _timed), ("graph", _graph_ms)):
            try:
                row[f"{key}_ms"] = timer(torch, step, repeats)
            except Exception as exc:
                row[f"{key}_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        yield row
        del cache, step
        torch.cuda.empty_cache()


def measure(
    out: Path, model_key: str, repeats: int, shapes: tuple[tuple[int, int], ...] = DECODE_SHAPES, fused: bool = False
) -> None:
    import torch
    import transformers

    started = time.perf_counter()
    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "model": f"{model_key} shape, random bf16 weights",
        "model_key": model_key,
    }
    shape = SHAPES[model_key]
    print(f"{result['gpu']}, torch {result['torch']}, transformers {result['transformers']}", flush=True)
    result["primitives"] = _primitives(torch, shape)
    out.write_text(json.dumps(result, indent=1))
    print(f"primitives: {json.dumps(result['primitives'])}", flush=True)

    config = transformers.LlamaConfig(
        **shape,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        torch_dtype="bfloat16",
        attn_implementation="sdpa",
        tie_word_embeddings=model_key == "llama-3.2-1b",
    )
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(config).eval()
    print(f"model built in {time.perf_counter() - started:.0f} s", flush=True)
    vocab = shape["vocab_size"]

    result["prefill"] = []
    with torch.inference_mode():
        for tokens in PREFILL_TOKENS:
            ids = torch.randint(0, vocab, (1, tokens), device="cuda")

            def prefill(ids: Any = ids, model: Any = model) -> object:
                hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state
                return model.lm_head(hidden[:, -1:])

            row: dict[str, Any] = {"tokens": tokens}
            try:
                row["ms"] = _timed(torch, prefill, repeats)
            except Exception as exc:  # out of memory, an API this transformers lacks: keep the other rows
                row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            result["prefill"].append(row)
            out.write_text(json.dumps(result, indent=1))
            print(f"prefill {row}", flush=True)

    del model
    torch.cuda.empty_cache()
    result["decode"] = []
    for row in _decode_steps(torch, shape, repeats, shapes, fused):
        result["decode"].append(row)
        out.write_text(json.dumps(result, indent=1))
        print(f"decode {row}", flush=True)
    result["wall_s"] = time.perf_counter() - started
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out} ({result['wall_s']:.0f} s)")


# -- compare (here) -------------------------------------------------------------------------------------------


def _profile(gpu_name: str) -> Any:
    from pytest_autotuner.sim.perf_model import GPUS

    for key in ("h200", "h100", "a100"):
        if key in gpu_name.lower():
            return GPUS["a100-80g" if key == "a100" else key]
    raise SystemExit(f"no simulator profile for GPU {gpu_name!r}; known: {', '.join(GPUS)}")


def simulated_cost(data: dict[str, Any], pricing: str = "roofline") -> Any:
    """The simulator's step cost for the timed model on the timed GPU, default flags; ``pricing="kernels"``:
    aiconfigurator-core's tables (``--sim-pricing kernels``), as the simulator prices by default."""
    from pytest_autotuner.sim.perf_model import MODELS, EngineConfig, StepCost, make_step_cost

    model = MODELS[data.get("model_key", "llama-3.1-8b")]  # the first timings were all of the 8B
    if pricing == "kernels":
        from pytest_autotuner.sim.cli import engine_config, parse_argv

        argv = ["--model-path", model.name, "--sim-gpu", _profile(data["gpu"]).name, "--sim-pricing", "kernels"]
        return make_step_cost(engine_config(parse_argv(argv)))
    return StepCost(EngineConfig(model=model, gpu=_profile(data["gpu"])))


def simulated_prefill_ms(cost: Any, tokens: int) -> float:
    pairs = tokens * (tokens + 1) / 2  # causal attention
    return float(cost(decode_batch=0, decode_context=0, prefill_tokens=tokens, prefill_attention_pairs=pairs,
                      prefill_context=tokens)) * 1e3  # fmt: skip


def simulated_decode_ms(cost: Any, batch: int, context: int) -> float:
    return float(cost(decode_batch=batch, decode_context=batch * context)) * 1e3


def compare(timings: Path, pricing: str = "roofline") -> None:
    data = json.loads(timings.read_text())
    gpu = _profile(data["gpu"])
    cost = simulated_cost(data, pricing)
    print(f"{data['model']} on {data['gpu']} (simulator profile {gpu.name}, priced by the {pricing})")
    print(f"torch {data['torch']}, transformers {data['transformers']}")
    prim = data["primitives"]
    copy = prim["copy_bandwidth_gbs"]
    print(f"copy bandwidth {copy:.0f} GB/s, {copy * 1e9 / gpu.hbm_bandwidth:.2f} of the profile's "
          f"{gpu.hbm_bandwidth / 1e9:.0f} GB/s")  # fmt: skip
    shape = SHAPES[data.get("model_key", "llama-3.1-8b")]
    print(f"\nbf16 GEMM, gate/up projection ({shape['hidden_size']} -> 2 x {shape['intermediate_size']}): "
          "measured vs the model's efficiency ramp")  # fmt: skip
    print(f"{'tokens':>7} {'TFLOP/s':>8} {'of peak':>8} {'model':>6}")
    from pytest_autotuner.sim import perf_model

    for tokens, row in data["primitives"]["gemm_gate_up"].items():
        n = int(tokens)
        ramp = perf_model._PEAK_EFF * n / (n + perf_model._EFF_HALF_TOKENS)
        print(f"{n:>7} {row['tflops']:>8.0f} {row['tflops'] * 1e12 / gpu.peak_flops:>8.2f} {ramp:>6.2f}")

    print("\nprefill, batch 1 (measured: HF eager, SDPA)")
    print(f"{'tokens':>7} {'measured ms':>12} {'simulated ms':>13} {'sim/meas':>9}")
    for row in data["prefill"]:
        t = row["tokens"]
        sim = simulated_prefill_ms(cost, t)
        print(f"{t:>7} {_cell(row.get('ms'), 12)} {sim:>13.2f} {_ratio(sim, row.get('ms'))}")
        if "error" in row:
            print(f"        failed: {row['error']}")

    fused = " with layers fused by torch.compile" if any(row.get("fused") for row in data["decode"]) else ""
    print(f"\ndecode step (measured: an engine-style step{fused} in a CUDA graph, and eager)")
    print(f"{'batch':>6} {'context':>8} {'graph ms':>9} {'eager ms':>9} {'simulated ms':>13} {'sim/graph':>9}")
    for row in data["decode"]:
        b, c = row["batch"], row["context"]
        sim = simulated_decode_ms(cost, b, c)
        graph, eager = row.get("graph_ms"), row.get("eager_ms")
        print(f"{b:>6} {c:>8} {_cell(graph, 9)} {_cell(eager, 9)} {sim:>13.2f} {_ratio(sim, graph)}")
        for key in ("error", "eager_error", "graph_error"):
            if key in row:
                print(f"        {key.replace('_', ' ')}: {row[key]}")


def _cell(value: float | None, width: int) -> str:
    return f"{value:>{width}.2f}" if value is not None else f"{'failed':>{width}}"


def _ratio(simulated: float, measured: float | None) -> str:
    return f"{simulated / measured:>9.2f}" if measured else f"{'-':>9}"


def _shapes(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return tuple((int(b), int(c)) for b, c in (part.split("x") for part in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want BATCHxCONTEXT[,...], e.g. 1x1024,64x1024") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("measure", help="time forward passes on this machine's GPU (needs torch, transformers)")
    run.add_argument("--out", type=Path, required=True, help="where to write the timings (JSON)")
    run.add_argument("--model", choices=sorted(SHAPES), default="llama-3.1-8b", help="whose shapes to time")
    run.add_argument("--repeats", type=int, default=10, help="timed calls per shape (median reported)")
    run.add_argument("--fused", action="store_true", help="decode layers through torch.compile (fused kernels)")
    run.add_argument("--shapes", type=_shapes, default=DECODE_SHAPES, help="decode shapes, e.g. 1x1024,64x1024")
    show = sub.add_parser("compare", help="print measured against simulated step times")
    show.add_argument("timings", type=Path, help="a file written by `measure`")
    show.add_argument("--pricing", choices=("roofline", "kernels"), default="roofline",
                      help="the roofline, or aiconfigurator-core's tables (the simulator's default)")  # fmt: skip
    args = parser.parse_args()
    if args.command == "measure":
        measure(args.out, args.model, args.repeats, args.shapes, args.fused)
    else:
        compare(args.timings, args.pricing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
