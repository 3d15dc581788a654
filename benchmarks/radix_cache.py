"""What the simulator's radix cache does to shared-prefix traffic, and when lpm beats fcfs.

Simulated Llama-3.1-8B-Instruct (bf16) on one H100.

1. Through the real benchmark client against a simulator subprocess (``python -m pytest_autotuner.sim``,
   speed-up 10; figures are in server time, so the speed-up does not change them): SGLang
   bench_serving's generated-shared-prefix shape ``P(8,32,2000,100,100)`` (8 groups x 32 prompts, 2,000-token
   system prompt, 100-token question, 100 output tokens; 256 measured requests, closed loop at concurrency 16
   and 64), default flags against ``--disable-radix-cache``; then unique prompts of the same length,
   ``D(2100,100)``, both ways.
2. In process (the same scheduler, no HTTP): lpm against fcfs on ``P(32,16,2000,100,100)`` at concurrency 64
   (512 requests), under cache pressure (``mem-fraction-static`` 0.26 and 0.30: a KV pool of 36k and 61k
   tokens, room for 17-29 of the 32 system prompts, less the running requests) and without it (default
   0.835, 387k tokens); and ``P(8,32,...)`` without pressure. Three seeds each with the default 3% noise;
   mean and the spread (max - min) over the seeds.

Run: ``python benchmarks/radix_cache.py`` (about a minute and a half on 2 cores); ``--skip-http`` runs part 2 only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sim_fidelity import simulator

from pytest_autotuner.bench.client import run_benchmark
from pytest_autotuner.core.measure.metrics import CellMetrics
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.runtimes.base import Endpoint
from pytest_autotuner.sim.inprocess import run_benchmark_in_process

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SPEEDUP = 10.0


def _line(name: str, cell: CellMetrics) -> str:
    ttft = cell.summary("ttft").mean * 1e3
    return (
        f"  {name:<24} {cell.label:<28} TTFT mean {ttft:8.1f} ms  output {cell.output_throughput:7.0f} tok/s  "
        f"cache hits {cell.cache_hit_rate:6.1%}"
    )


def http_part(tmp: Path) -> None:
    print("1. real client against the simulator process (server time)")
    for scenario in ("P(8,32,2000,100,100)", "D(2100,100)"):
        plan = BenchmarkPlan(
            (parse_scenario(scenario),), (16, 64), max_requests=256, warmup_requests=0, max_time=600.0, seed=3
        )
        cells: dict[str, list[CellMetrics]] = {}
        for name, flags in (("radix cache", []), ("disable-radix-cache", ["--disable-radix-cache"])):
            with simulator(SPEEDUP, tmp / f"sim-{len(cells)}.log", *flags) as base:
                cells[name] = run_benchmark(Endpoint(base, MODEL, time_scale=SPEEDUP), plan).cells
            for cell in cells[name]:
                print(_line(name, cell))
        for on, off in zip(cells["radix cache"], cells["disable-radix-cache"], strict=True):
            ratio = off.summary("ttft").mean / on.summary("ttft").mean
            gain = on.output_throughput / off.output_throughput - 1
            print(f"  -> {on.label}: TTFT {ratio:.2f}x lower with the cache, throughput {gain:+.1%}")


def _in_process(scenario: str, flags: dict[str, object], seed: int) -> CellMetrics:
    plan = BenchmarkPlan((parse_scenario(scenario),), (64,), max_requests=512, warmup_requests=0, max_time=600.0)
    return run_benchmark_in_process(MODEL, flags, plan, seed=seed, noise=0.03).cells[0]  # type: ignore[arg-type]


def policy_part() -> None:
    print("2. lpm against fcfs, in process, concurrency 64, seeds 0-2 (mean, spread max-min)")
    cases = [
        ("P(32,16,2000,100,100)", 0.26),
        ("P(32,16,2000,100,100)", 0.30),
        ("P(32,16,2000,100,100)", None),
        ("P(8,32,2000,100,100)", None),
    ]
    for scenario, mem in cases:
        results: dict[str, list[CellMetrics]] = {}
        for policy in ("fcfs", "lpm"):
            flags: dict[str, object] = {"schedule-policy": policy}
            if mem is not None:
                flags["mem-fraction-static"] = mem
            results[policy] = [_in_process(scenario, flags, seed) for seed in range(3)]
        label = f"{scenario} mem-fraction-static={mem if mem is not None else 'default'}"
        print(f"  {label}")
        for policy, cells in results.items():
            hits = [c.cache_hit_rate for c in cells]
            tput = [c.output_throughput for c in cells]
            ttft = [c.summary("ttft").mean * 1e3 for c in cells]
            print(
                f"    {policy:<5} cache hits {statistics.mean(hits):6.1%} (spread {max(hits) - min(hits):.1%})  "
                f"output {statistics.mean(tput):6.0f} tok/s (spread {max(tput) - min(tput):4.0f})  "
                f"TTFT mean {statistics.mean(ttft):7.1f} ms"
            )
        gain = statistics.mean(c.output_throughput for c in results["lpm"]) / statistics.mean(
            c.output_throughput for c in results["fcfs"]
        )
        print(f"    -> lpm throughput {gain - 1:+.1%} against fcfs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--skip-http", action="store_true", help="only the in-process policy comparison")
    args = parser.parse_args()
    started = time.monotonic()
    if not args.skip_http:
        with tempfile.TemporaryDirectory() as tmp:
            http_part(Path(tmp))
    policy_part()
    print(f"wall {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
