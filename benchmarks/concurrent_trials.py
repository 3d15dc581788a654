"""One configuration measured alone and while other trials run: do concurrent trials distort each other?

Every trial goes through what the plugin uses: ``make_evaluate`` over the simulator runtime (a real simulator
process per trial, the real HTTP client). Modes, each repeated ``--repeats`` times:

- ``alone``: the target configuration by itself, its client in this process (the plugin with one worker);
- ``alone-child-process``: the same with its client in a child process (what the child costs by itself);
- ``concurrent``: the target while ``--others`` trials of other configurations run in threads next to it and
  start again as they finish, so they overlap the whole measurement; every client in a child process of its
  own (the plugin with ``--autotune-workers N``);
- ``concurrent-in-process`` (``--in-process``): the same, with every client in this process, as before
  concurrent trials had child clients (for comparison).

Printed: per mode the median of output throughput, TTFT p50, TPOT p50 and E2E p50 over the repeats, each
one's deviation from ``alone``, and the spread of each mode's repeats. Simulator noise is off, so what
differs is contention (and the phase of closed-loop arrivals against the decode steps, which moves TTFT).

    python benchmarks/concurrent_trials.py [--others 3] [--repeats 3] [--concurrency 8] [--in-process]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
import time
from typing import Any

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.trial import Deadline, Params
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.evaluate import make_evaluate, plan_from_spec
from pytest_autotuner.runtimes import create_runtime

TARGET: Params = {"chunked-prefill-size": 2048, "schedule-policy": "fcfs", "max-running-requests": 64}
OTHERS: list[Params] = [
    {"chunked-prefill-size": 512, "schedule-policy": "lpm", "max-running-requests": 32},
    {"chunked-prefill-size": 1024, "schedule-policy": "fcfs", "max-running-requests": 128},
    {"chunked-prefill-size": 4096, "schedule-policy": "lpm", "max-running-requests": 64},
    {"chunked-prefill-size": 8192, "schedule-policy": "fcfs", "max-running-requests": 16},
    {"chunked-prefill-size": 512, "schedule-policy": "fcfs", "max-running-requests": 128},
    {"chunked-prefill-size": 2048, "schedule-policy": "lpm", "max-running-requests": 32},
    {"chunked-prefill-size": 4096, "schedule-policy": "fcfs", "max-running-requests": 16},
]
METRICS = ("output_throughput", "ttft_p50", "tpot_p50", "e2e_p50")


def spec(model: str, concurrency: int, requests: int) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "task_name": "concurrent-trials",
            "model": {"id_or_path": model},
            "runtime": "sim",
            "parameters": {"chunked-prefill-size": [512, 8192]},
            "optimization": {"strategy": "grid", "timeout_per_iteration": 300},
            "benchmark": {
                "traffic_scenarios": ["D(256,128)"],
                "num_concurrency": [concurrency],
                "max_requests_per_iteration": requests,
                "max_time_per_iteration": 120,
                "warmup_requests": 2,
            },
            "simulator": {"speedup": 1, "startup_scale": 0.01, "noise": 0.0},
        }
    )


def figures(result: BenchResult) -> dict[str, float]:
    (cell,) = result.cells
    return {
        "output_throughput": cell.output_throughput,
        "ttft_p50": cell.summary("ttft").p50,
        "tpot_p50": cell.summary("tpot").p50,
        "e2e_p50": cell.summary("e2e").p50,
    }


def measure(args: argparse.Namespace, others: int, client_process: bool) -> dict[str, float]:
    """The target once, with ``others`` trials running around it the whole time."""
    target_spec = spec(args.model, args.concurrency, args.requests)
    other_spec = spec(args.model, args.concurrency, args.requests)
    launches = itertools.count()

    def evaluate_for(s: TaskSpec) -> Any:
        new_runtime = lambda n: create_runtime("sim", s, seed=next(launches))  # noqa: E731
        return make_evaluate(new_runtime, plan_from_spec(s, seed=0), client_process=client_process)

    done = threading.Event()
    others_started = threading.Barrier(others + 1) if others else None
    background_trials = [0]

    def background(params: Params) -> None:
        evaluate = evaluate_for(other_spec)
        first = True
        while not done.is_set():
            if first and others_started is not None:
                others_started.wait()
                first = False
            evaluate(params, Deadline(300))
            background_trials[0] += 1

    threads = [threading.Thread(target=background, args=(OTHERS[i % len(OTHERS)],)) for i in range(others)]
    for thread in threads:
        thread.start()
    try:
        if others_started is not None:
            others_started.wait()
            time.sleep(3.0)  # the others' servers are up and measuring before the target starts
        result = evaluate_for(target_spec)(TARGET, Deadline(300))
    finally:
        done.set()
        for thread in threads:
            thread.join()
    return figures(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--others", type=int, default=3, help="trials running next to the target")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="meta-llama/Llama-3.1-8B-Instruct")
    parser.add_argument("--concurrency", type=int, default=16, help="streams per trial")
    parser.add_argument("--requests", type=int, default=96, help="requests of each trial's cell")
    parser.add_argument("--in-process", action="store_true", help="also measure with every client in process")
    args = parser.parse_args()

    modes = [("alone", 0, False), ("alone-child-process", 0, True), ("concurrent", args.others, True)]
    if args.in_process:
        modes.append(("concurrent-in-process", args.others, False))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in modes}
    for repeat in range(args.repeats):
        for name, others, client_process in modes:  # interleaved, so slow drifts of the host hit every mode
            started = time.perf_counter()
            runs[name].append(measure(args, others, client_process))
            shown = ", ".join(f"{m} {v:.4g}" for m, v in runs[name][-1].items())
            print(f"  repeat {repeat + 1} {name}: {shown} [{time.perf_counter() - started:.1f}s]", file=sys.stderr)

    print(
        f"target {TARGET} on {args.model} (simulated H100, speed-up 1, noise 0), D(256,128) at concurrency "
        f"{args.concurrency}, {args.requests} requests; {args.others} other trials at the same load; "
        f"median of {args.repeats}"
    )
    header = f"{'mode':<24}" + "".join(f"{m:>22}" for m in METRICS)
    print(header)
    alone = {m: statistics.median(r[m] for r in runs["alone"]) for m in METRICS}
    for name, _, _ in modes:
        medians = {m: statistics.median(r[m] for r in runs[name]) for m in METRICS}
        row = f"{name:<24}"
        for m in METRICS:
            unit = 1.0 if m == "output_throughput" else 1000.0
            text = f"{medians[m] * unit:.2f}"
            if name != "alone":
                text += f" ({medians[m] / alone[m] - 1:+.1%})"
            row += f"{text:>22}"
        print(row)
    print("units: output tok/s; TTFT, TPOT, E2E in ms")
    print("spread over the repeats, (max - min) / median, the noise floor of the deviations above:")
    for name, _, _ in modes:
        spreads = []
        for m in METRICS:
            values = [r[m] for r in runs[name]]
            spreads.append(f"{(max(values) - min(values)) / statistics.median(values):.1%}")
        print(f"{name:<24}" + "".join(f"{text:>22}" for text in spreads))


if __name__ == "__main__":
    main()
