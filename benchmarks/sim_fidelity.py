"""Does what the simulator measures depend on its speed-up or on the host's load? It should not.

One configuration (Llama-3.1-8B-Instruct on a simulated H100, default flags, the default noise of 3% with a
fixed seed) is measured through the real benchmark client (``run_benchmark``) against a simulator subprocess
(``python -m pytest_autotuner.sim``) at speed-ups 1, 4 and 10, first on a quiet machine, then with two
CPU-burning processes (``python -c 'while True: pass'``, one per core of a 2-core machine) running beside it.
Cells: closed loop at concurrency 8 and 32, and Poisson arrivals at 6 requests/s, each with 64 measured
requests after 8 warm-ups.

Prints mean E2E, TTFT and TPOT and output throughput per cell, and each figure's deviation from the quiet run
at speed-up 1; the last lines give the largest deviation, quiet and loaded. ``wall s`` is how long the run's
three cells took; ``late`` counts arrivals the client promised but sent too late for the simulator to wait
(``late_promises`` of ``/sim/timeline``; -1 for a simulator without promises). The burners are always killed.

Run: ``python benchmarks/sim_fidelity.py`` (about two minutes on 2 cores). ``--speedups 1 10`` and
``--no-load`` / ``--only-load`` narrow it down. Against an older checkout, run it with that checkout's
``PYTHONPATH``: it uses only ``run_benchmark`` and the simulator's command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pytest_autotuner.bench.client import run_benchmark
from pytest_autotuner.core.measure.metrics import CellMetrics
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.runtimes.base import Endpoint

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
PLAN = BenchmarkPlan(
    (parse_scenario("N(1024,256)/(128,32)"),),
    (8, 32),
    request_rates=(6.0,),
    max_requests=64,
    warmup_requests=8,
    max_time=600.0,
    seed=7,
)
FIGURES = ("e2e", "ttft", "tpot", "output_throughput")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def simulator(speedup: float, log: Path, *flags: str) -> Iterator[str]:
    """A simulator subprocess at ``speedup`` with ``flags``; yields its base URL once ready (radix_cache.py uses
    it too)."""
    port = _free_port()
    argv = [sys.executable, "-m", "pytest_autotuner.sim", "--model-path", MODEL, "--port", str(port)]
    argv += ["--sim-speedup", str(speedup), "--sim-startup-scale", "0.01", "--sim-seed", "11", *flags]
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        base = f"http://127.0.0.1:{port}"
        try:
            end = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError), urllib.request.urlopen(base + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
                if proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"simulator did not start:\n{log.read_text()}")
                time.sleep(0.05)
            yield base
        finally:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def burners(n: int) -> Iterator[None]:
    """``n`` processes that spin on a core each; always killed."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)  # let them get going
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def figures(cell: CellMetrics) -> dict[str, float]:
    return {
        "e2e": cell.summary("e2e").mean,
        "ttft": cell.summary("ttft").mean,
        "tpot": cell.summary("tpot").mean,
        "output_throughput": cell.output_throughput,
    }


def measure(speedup: float, tmp: Path) -> tuple[list[tuple[str, dict[str, float]]], float, int]:
    """(cell label, figures) per cell, the wall seconds the benchmark took, and the promises the server dropped."""
    with simulator(speedup, tmp / f"sim-{speedup:g}.log") as base:
        with urllib.request.urlopen(base + "/server_info", timeout=5) as resp:
            info = json.loads(resp.read())
        endpoint = Endpoint(base, MODEL, time_scale=float(info["sim_speedup"]), server_info=info)
        started = time.perf_counter()
        result = run_benchmark(endpoint, PLAN)
        wall = time.perf_counter() - started
        with urllib.request.urlopen(base + "/sim/timeline", timeout=30) as resp:
            late = int(json.loads(resp.read()).get("late_promises", -1))  # -1: a simulator without promises
    rows = []
    for cell in result.cells:
        load = f"c={cell.concurrency}" if cell.request_rate is None else f"rate={cell.request_rate:g}/s"
        rows.append((load, figures(cell)))
    return rows, wall, late


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speedups", type=float, nargs="+", default=[1.0, 4.0, 10.0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--no-load", action="store_true", help="quiet runs only")
    group.add_argument("--only-load", action="store_true", help="runs with the CPU burners only")
    args = parser.parse_args()
    conditions = [c for c in ("quiet", "2 burners") if not (args.no_load and c != "quiet")]
    if args.only_load:
        conditions = ["2 burners"]
    reference: dict[str, dict[str, float]] = {}
    worst: dict[str, float] = {}
    header = f"{'load':<10} {'speed-up':>8} {'cell':<10} {'wall s':>7} {'late':>4}"
    header += "".join(f" {name:>12} {'dev':>6}" for name in ("E2E ms", "TTFT ms", "TPOT ms", "out tok/s"))
    print(f"{MODEL} on a simulated H100, {PLAN.scenarios[0].text}, {PLAN.max_requests} requests per cell")
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for condition in conditions:
            with burners(2) if condition != "quiet" else contextlib.nullcontext():
                for speedup in args.speedups:
                    rows, wall, late = measure(speedup, Path(tmp))
                    for label, figs in rows:
                        ref = reference.setdefault(label, figs)  # the first run: quiet at the first speed-up
                        line = f"{condition:<10} {speedup:>8g} {label:<10} {wall:>7.1f} {late:>4}"
                        for name in FIGURES:
                            dev = figs[name] / ref[name] - 1.0
                            worst[condition] = max(worst.get(condition, 0.0), abs(dev))
                            scale = 1.0 if name == "output_throughput" else 1000.0
                            line += f" {figs[name] * scale:>12.2f} {dev:>+6.1%}"
                        print(line, flush=True)
    for condition, dev in worst.items():
        print(f"largest deviation from quiet speed-up {args.speedups[0]:g}, {condition}: {dev:.2%} ({dev:.1e})")


if __name__ == "__main__":
    main()
