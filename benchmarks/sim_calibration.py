"""Check the simulator against public SGLang figures (Llama-3.1-8B, one H100); exit 1 when a target is missed.

Run: ``python benchmarks/sim_calibration.py``. Targets come from SGLang's CI thresholds (see
/work/shared/reference/sglang.md); the workload is input uniform up to 4096, output uniform up to 2048.
"""

from __future__ import annotations

import sys
import time

from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.sim import run_benchmark_in_process

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
CI_WORKLOAD = parse_scenario("U(4096,2048)")


def offline_throughput(params: dict[str, bool | int | float | str]) -> float:
    """Output tok/s with 500 prompts sent at once (SGLang's offline benchmark)."""
    plan = BenchmarkPlan((CI_WORKLOAD,), (500,), max_requests=500, max_time=1e9, warmup_requests=0)
    return run_benchmark_in_process(MODEL, params, plan).cells[0].output_throughput


def online_at_one_rps() -> tuple[float, float]:
    """Median TTFT and ITL in ms at 1 request/s (Poisson)."""
    plan = BenchmarkPlan((CI_WORKLOAD,), (), request_rates=(1.0,), max_requests=300, max_time=1e9, warmup_requests=0)
    cell = run_benchmark_in_process(MODEL, {}, plan).cells[0]
    return cell.summary("ttft").p50 * 1e3, cell.summary("itl").p50 * 1e3


def main() -> int:
    started = time.perf_counter()
    default = offline_throughput({})
    no_chunk = offline_throughput({"chunked-prefill-size": -1})
    mrr10 = offline_throughput({"max-running-requests": 10})
    ttft, itl = online_at_one_rps()
    rows = [
        ("offline, default flags", "4000 +/-30%", default, 2800 <= default <= 5200, "tok/s"),
        (
            "offline, chunked prefill disabled",
            f"< default ({default:.0f})",
            no_chunk,
            no_chunk < default,
            "tok/s",
        ),
        ("offline, max-running-requests 10", "1000-1500", mrr10, 1000 <= mrr10 <= 1500, "tok/s"),
        ("online 1 req/s, median TTFT", "< 100", ttft, ttft < 100, "ms"),
        ("online 1 req/s, median ITL", "< 12", itl, itl < 12, "ms"),
    ]
    print(f"Simulated {MODEL} on one H100, workload {CI_WORKLOAD.text}")
    print(f"{'check':<36} {'target':>22} {'simulated':>12}  result")
    for name, target, value, ok, unit in rows:
        print(f"{name:<36} {target:>22} {value:>8.1f} {unit:<5} {'pass' if ok else 'FAIL'}")
    print("\nReference points, D(1000,500) closed loop (published fp8 table: ITL 4.6/5.2/7.6/12.7 ms):")
    print(f"{'concurrency':>12} {'TTFT p50 ms':>12} {'ITL mean ms':>12} {'output tok/s':>13}")
    for concurrency in (1, 25, 100, 200):
        plan = BenchmarkPlan(
            (parse_scenario("D(1000,500)"),),
            (concurrency,),
            max_requests=max(50, 3 * concurrency),
            max_time=1e9,
        )
        cell = run_benchmark_in_process(MODEL, {}, plan).cells[0]
        ttft_ms, itl_ms = cell.summary("ttft").p50 * 1e3, cell.summary("itl").mean * 1e3
        print(f"{concurrency:>12} {ttft_ms:>12.1f} {itl_ms:>12.2f} {cell.output_throughput:>13.0f}")
    print(f"\n({time.perf_counter() - started:.1f} s wall)")
    return 0 if all(row[3] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
