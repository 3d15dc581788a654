"""Issue 29: the capacity ladder against a bisection with SGLang's own ``bench_serving`` on the same simulator.

For each configuration (two models, four configurations): our ladder (``evaluate.run_ladder``, as a trial runs it:
every step from a drained, flushed server, sized for its P99, intervals, repeats) on one simulator server; then a
bisection of the request rate with ``bench_serving`` (``--request-rate``: Poisson arrivals, ``--dataset-name random``
with ``--random-range-ratio 1``: the same prompt and output lengths, counted by the same tokenizer; the prompts are
built as in ``benchmarks/bench_serving_agreement.py``), one fresh simulator per probe, each probe as many requests
as our step at that rate, judged on bench_serving's own P99 TTFT / P99 TPOT against the same thresholds. The
bisection starts from [answer / 1.4, answer x 1.4] (widened until its low end holds and its high end breaks) and
stops when the bracket is within 2%; its answer is the highest rate that held.

Both clients see the simulator at ``--sim-noise 0``, ``--disable-radix-cache`` (bench_serving's prompts repeat
text, ours do not), ``--sim-speedup 1`` (real time: bench_serving times with its wall clock, and the simulator keeps
its clock at this speed on a small machine; at 8 it falls behind and latencies depend on the host's load).

Needs SGLang's ``bench_serving.py`` and ``transformers`` (no torch), none of them project dependencies:

    pip download sglang==0.5.2 --no-deps -d /tmp/sgl
    (cd /tmp/sgl && unzip -o sglang-0.5.2-*.whl 'sglang/bench_serving.py')
    python -m venv --system-site-packages /tmp/bsvenv && /tmp/bsvenv/bin/pip install transformers tqdm requests
    python benchmarks/capacity_agreement.py --bench-serving /tmp/sgl/sglang/bench_serving.py \\
        --python /tmp/bsvenv/bin/python [--only 0 2]

About 3 minutes a configuration on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_autotuner.bench.client import run_benchmark
from pytest_autotuner.bench.server_control import reset_server
from pytest_autotuner.core.measure.trial import Deadline
from pytest_autotuner.core.spec.capacity_limits import CapacityLimits
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.evaluate import plan_from_spec, run_ladder
from pytest_autotuner.runtimes.base import Endpoint

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tuning_specs" / "tokenizers" / "sim-bpe"
DATASET = ROOT / "tuning_specs" / "datasets" / "synthetic-chat.jsonl"
SPEEDUP = 1.0
B8, B1 = "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.2-1B-Instruct"


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    params: dict[str, Any]
    input_len: int
    output_len: int
    slo: dict[str, Any]
    gpu: str = "h100"
    extra: dict[str, Any] = field(default_factory=dict)

    def flags(self) -> list[str]:
        out = []
        for key, value in self.params.items():
            out += [f"--{key}"] if value is True else [f"--{key}", str(value)]
        return out


def p99(ttft: float, tpot: float | None = None) -> dict[str, Any]:
    slo: dict[str, Any] = {"ttft": {"p99": {"threshold": ttft}}}
    if tpot is not None:
        slo["tpot"] = {"p99": {"threshold": tpot}}
    return slo


CASES = (
    Case("1B mrr 8, D(512,128), P99 TTFT 100 ms", B1, {"max-running-requests": 8}, 512, 128, p99(0.1)),
    Case("1B, D(1024,128), P99 TTFT 200 ms + TPOT 20 ms", B1, {}, 1024, 128, p99(0.2, 0.02)),
    Case("8B mrr 16, D(512,128), P99 TTFT 200 ms", B8, {"max-running-requests": 16}, 512, 128, p99(0.2)),
    Case("8B, D(1024,256), P99 TTFT 500 ms + TPOT 30 ms", B8, {}, 1024, 256, p99(0.5, 0.03)),
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return dict(json.loads(resp.read()))


@contextlib.contextmanager
def simulator(case: Case, log: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A fresh simulator of ``case``; yields its base URL and server info once ready."""
    port = _free_port()
    argv = [sys.executable, "-m", "pytest_autotuner.sim", "--model-path", case.model, "--port", str(port),
            "--sim-gpu", case.gpu, "--sim-speedup", str(SPEEDUP), "--sim-startup-scale", "0", "--sim-noise", "0",
            "--sim-tokenizer", str(TOKENIZER), "--disable-radix-cache", *case.flags()]  # fmt: skip
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                with contextlib.suppress(OSError):
                    if urllib.request.urlopen(base + "/health", timeout=1).status == 200:
                        break
                if proc.poll() is not None:
                    raise RuntimeError(f"simulator exited: {log.read_text()}")
                time.sleep(0.05)
            yield base, _get(base + "/get_server_info")
        finally:
            proc.terminate()
            proc.wait(10)


def case_spec(case: Case) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "task_name": "agreement",
            "model": {"id_or_path": case.model},
            "runtime": "sim",
            "parameters": {"schedule-policy": ["fcfs"]},
            "optimization": {"objective": "maximize_goodput"},
            "benchmark": {
                "traffic_scenarios": [f"D({case.input_len},{case.output_len})"],
                "api": "completions",
                "max_time_per_iteration": 120,
                "warmup_requests": 1,
                "capacity": {"min": 0.5, "max": 64, "max_steps": 8, "step_seconds": 10},
            },
            "slo": case.slo,
        }
    )


def ours(case: Case, log: Path) -> tuple[float, int, CapacityLimits]:
    spec = case_spec(case)
    plan = plan_from_spec(spec, 0)
    assert plan.capacity is not None
    with simulator(case, log) as (base, info):
        endpoint = Endpoint(base, case.model, time_scale=SPEEDUP, server_info=info)
        ladder = run_ladder(
            run_benchmark, endpoint, plan, Deadline(None), lambda: reset_server(endpoint, None, 3600.0)
        ).capacities[0]
    for step in ladder.steps:
        print(f"      ladder step {step.load:8.3f} req/s x{step.repeats}: {step.verdict[:160]}", flush=True)
    return ladder.capacity, len(ladder.steps), plan.capacity


def sharegpt(tmp: Path, requests: int) -> Path:
    """Our synthetic dataset as the ShareGPT JSON array bench_serving's random dataset reads (each message with a
    leading space, so that its repeated ids re-encode to exactly the length: see bench_serving_agreement.py),
    its conversations repeated to at least ``requests`` of them: bench_serving's random dataset takes one prompt
    per conversation and silently sends fewer than ``--num-prompts`` when the file has fewer (our 64 made every
    probe a 64-request burst, too short to show an overload: the first runs of this benchmark were wrong)."""
    path = tmp / f"sharegpt-{requests}.json"
    if not path.exists():
        rows = [json.loads(line) for line in DATASET.read_text().splitlines() if line]
        for row in rows:
            for turn in row["conversations"]:
                turn["value"] = " " + turn["value"]
        path.write_text(json.dumps(rows * math.ceil(requests / len(rows))))
    return path


def bench_serving_holds(
    case: Case, rate: float, requests: int, tmp: Path, script: str, python: str
) -> tuple[bool, float, float]:
    """One bench_serving run at ``rate`` (Poisson) on a fresh simulator: (held, P99 TTFT s, P99 TPOT s)."""
    out = tmp / "bench-serving.jsonl"
    out.unlink(missing_ok=True)
    with simulator(case, tmp / "theirs.log") as (base, _):
        dataset = sharegpt(tmp, requests)
        argv = [python, script, "--backend", "sglang-oai", "--base-url", base, "--model", case.model,
                "--tokenizer", str(TOKENIZER), "--dataset-name", "random", "--dataset-path", str(dataset),
                "--random-input-len", str(case.input_len), "--random-output-len", str(case.output_len),
                "--random-range-ratio", "1", "--num-prompts", str(requests), "--request-rate", str(rate * SPEEDUP),
                "--warmup-requests", "1", "--seed", "1", "--disable-tqdm", "--output-file", str(out)]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"bench_serving failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    result = json.loads(out.read_text().splitlines()[-1])
    if result.get("completed") != requests:
        raise RuntimeError(f"bench_serving completed {result.get('completed')} of {requests} requests at {rate} req/s")
    ttft = result["p99_ttft_ms"] / 1000 * SPEEDUP
    tpot = result["p99_tpot_ms"] / 1000 * SPEEDUP
    limits = case.slo
    held = ttft <= limits["ttft"]["p99"]["threshold"] and (
        "tpot" not in limits or tpot <= limits["tpot"]["p99"]["threshold"]
    )
    return held, ttft, tpot


def theirs(case: Case, start: float, limits: CapacityLimits, tmp: Path, script: str, python: str) -> tuple[float, int]:
    """bench_serving's bisection around ``start``: (the highest rate that held, probes run)."""
    probes = 0

    def holds(rate: float) -> bool:
        nonlocal probes
        probes += 1
        held, ttft, tpot = bench_serving_holds(case, rate, limits.step_requests(rate, 0), tmp, script, python)
        print(f"      bench_serving {rate:8.3f} req/s: p99 TTFT {ttft * 1e3:8.1f} ms, p99 TPOT {tpot * 1e3:6.2f} ms "
              f"-> {'holds' if held else 'breaks'}", flush=True)  # fmt: skip
        return held

    lo, hi = start / 1.4, start * 1.4
    while not holds(lo):
        hi, lo = lo, lo / 1.4
    while holds(hi):
        lo, hi = hi, hi * 1.4
    while hi / lo > 1.02:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if holds(mid) else (lo, mid)
    return lo, probes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench-serving", required=True, help="path of SGLang's bench_serving.py")
    parser.add_argument("--python", default=sys.executable, help="an interpreter with transformers, tqdm, requests")
    parser.add_argument("--only", type=int, nargs="+", default=list(range(len(CASES))), help="case indexes")
    args = parser.parse_args()
    print(f"simulator --sim-noise 0 --sim-speedup {SPEEDUP:g} --disable-radix-cache, tokenizer sim-bpe, completions\n")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for index in args.only:
            case = CASES[index]
            print(f"{case.name}", flush=True)
            started = time.perf_counter()
            answer, steps, limits = ours(case, tmp / "ours.log")
            print(
                f"      ladder: {answer:.3f} req/s in {steps} steps ({time.perf_counter() - started:.0f} s)", flush=True
            )
            theirs_answer, probes = theirs(case, answer, limits, tmp, args.bench_serving, args.python)
            rows.append((case.name, answer, steps, theirs_answer, probes))
    print(f"\n{'configuration':48s} {'ladder req/s':>12s} {'steps':>5s} {'bench_serving':>13s} {'probes':>6s} "
          f"{'difference':>10s}")  # fmt: skip
    for name, answer, steps, them, probes in rows:
        print(f"{name:48s} {answer:12.3f} {steps:5d} {them:13.3f} {probes:6d} {(answer - them) / them:+10.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
