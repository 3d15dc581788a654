"""Our client against SGLang's own ``bench_serving`` on the simulator, with prompts both count alike.

The simulator (simulated Llama-3.1-8B-Instruct on one H100, ``--sim-noise 0``) counts prompt tokens with the
project's shipped tokenizer (``tuning_specs/tokenizers/sim-bpe``, ``--sim-tokenizer``); our client builds
``D(512,128)`` prompts of exactly 512 tokens by that tokenizer, and bench_serving ``--dataset-name random``
(``--random-range-ratio 1``) builds 512-token prompts with the same tokenizer loaded by ``transformers``
(from ShareGPT-shaped text: our synthetic dataset written as a JSON array, each message with a leading space
so that repeating its ids up to the length re-encodes to the same count; nothing is downloaded). Both
send ``/v1/completions`` streams with ``ignore_eos`` and ``max_tokens`` 128, closed loop at the same
concurrency, after one warm-up request; each run gets a fresh simulator with ``--disable-radix-cache`` (bench
_serving's prompts repeat ShareGPT text, ours do not; without a cache both are unique traffic).

Clocks: our client reads the simulator's server-time stamps; bench_serving times with its wall clock. The
simulator runs at ``--sim-speedup 0.02`` (50 wall seconds per simulated second), and bench_serving's times are
multiplied by 0.02 (its throughputs divided), so its figures are in server time too, with its client latency
(HTTP, event loop: a few wall milliseconds a request) shrunk fifty times. At ``--speedup 0.25`` (about five
minutes) that latency still adds about 5% to bench_serving's TTFT at c=1.

Needs SGLang's ``bench_serving.py`` and ``transformers`` (no torch), none of them project dependencies:

    pip download sglang==0.5.2 --no-deps -d /tmp/sgl
    (cd /tmp/sgl && unzip -o sglang-0.5.2-*.whl 'sglang/bench_serving.py')
    python -m venv --system-site-packages /tmp/bsvenv && /tmp/bsvenv/bin/pip install transformers tqdm requests
    python benchmarks/bench_serving_agreement.py --bench-serving /tmp/sgl/sglang/bench_serving.py \\
        --python /tmp/bsvenv/bin/python

About 30 minutes on 2 cores (the simulated GPU runs 50 times slower than the modelled one).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pytest_autotuner.bench.client import run_benchmark
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.spec.scenarios import parse_scenario
from pytest_autotuner.runtimes.base import Endpoint

ROOT = Path(__file__).resolve().parents[1]
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
TOKENIZER = ROOT / "tuning_specs" / "tokenizers" / "sim-bpe"
DATASET = ROOT / "tuning_specs" / "datasets" / "synthetic-chat.jsonl"
SPEEDUP = 0.02  # default of --speedup
IN, OUT = 512, 128
RUNS = {1: 16, 16: 128}  # concurrency -> requests


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return dict(json.loads(resp.read()))


@contextlib.contextmanager
def simulator(log: Path) -> Iterator[tuple[str, dict[str, object]]]:
    """A fresh simulator subprocess; yields its base URL and server info once ready."""
    port = _free_port()
    argv = [sys.executable, "-m", "pytest_autotuner.sim", "--model-path", MODEL, "--port", str(port),
            "--sim-speedup", str(SPEEDUP), "--sim-startup-scale", "0", "--sim-noise", "0",
            "--sim-tokenizer", str(TOKENIZER), "--disable-radix-cache"]  # fmt: skip
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


def prompt_lengths(base: str) -> list[int]:
    """Prompt tokens of every request the simulator served, as it counted them."""
    rows = _get(base + "/sim/timeline")["requests"]
    assert isinstance(rows, list)
    return [int(r["input_tokens"]) for r in rows]


def ours(concurrency: int, requests: int, log: Path) -> tuple[dict[str, float], list[int]]:
    with simulator(log) as (base, info):
        endpoint = Endpoint(base, MODEL, time_scale=SPEEDUP, server_info=info)
        plan = BenchmarkPlan(scenarios=(parse_scenario(f"D({IN},{OUT})"),), concurrencies=(concurrency,),
                             max_requests=requests, warmup_requests=1, max_time=3600.0, api="completions")  # fmt: skip
        cell = run_benchmark(endpoint, plan).cells[0]
        assert cell.completed == requests, cell.errors
        figures = {"ttft_ms": cell.summary("ttft").mean * 1e3, "tpot_ms": cell.summary("tpot").mean * 1e3,
                   "output_throughput": cell.output_throughput}  # fmt: skip
        return figures, prompt_lengths(base)


def theirs(
    concurrency: int, requests: int, log: Path, tmp: Path, script: str, python: str
) -> tuple[dict[str, float], list[int]]:
    sharegpt = tmp / f"sharegpt-{requests}.json"
    if not sharegpt.exists():  # bench_serving's random dataset reads a ShareGPT JSON array
        # It repeats a message's token ids up to the length and decodes them: a message that starts with a space
        # keeps its words apart where the repeats meet, so the text re-encodes to exactly that many tokens.
        rows = [json.loads(line) for line in DATASET.read_text().splitlines() if line]
        for row in rows:
            for turn in row["conversations"]:
                turn["value"] = " " + turn["value"]
        # one prompt per conversation: fewer conversations than --num-prompts and it silently sends fewer (the
        # 2026-12-01 run's c=16 row sent 64 of 128), so the 64 are repeated to at least ``requests``
        sharegpt.write_text(json.dumps(rows * -(-requests // len(rows))))
    out = tmp / f"bench-serving-{concurrency}.jsonl"
    out.unlink(missing_ok=True)
    with simulator(log) as (base, _):
        argv = [python, script, "--backend", "sglang-oai", "--base-url", base, "--model", MODEL,
                "--tokenizer", str(TOKENIZER), "--dataset-name", "random", "--dataset-path", str(sharegpt),
                "--random-input-len", str(IN), "--random-output-len", str(OUT), "--random-range-ratio", "1",
                "--num-prompts", str(requests), "--max-concurrency", str(concurrency), "--request-rate", "inf",
                "--warmup-requests", "1", "--seed", "1", "--disable-tqdm", "--output-file", str(out)]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # it looks up the model id on the hub otherwise (no network)
        done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"bench_serving failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        result = json.loads(out.read_text().splitlines()[-1])
        if result.get("completed") != requests:
            raise RuntimeError(f"bench_serving completed {result.get('completed')} of {requests} requests")
        lengths = prompt_lengths(base)
    figures = {"ttft_ms": result["mean_ttft_ms"] * SPEEDUP, "tpot_ms": result["mean_tpot_ms"] * SPEEDUP,
               "output_throughput": result["output_throughput"] / SPEEDUP}  # fmt: skip
    return figures, lengths


def main() -> int:
    global SPEEDUP  # the simulator's speed-up and the scale of bench_serving's wall-clock figures
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench-serving", required=True, help="path of SGLang's bench_serving.py")
    parser.add_argument("--python", default=sys.executable, help="an interpreter with transformers, tqdm, requests")
    parser.add_argument("--speedup", type=float, default=SPEEDUP, help="simulated seconds per wall second")
    parser.add_argument("--concurrency", type=int, nargs="+", default=sorted(RUNS), choices=sorted(RUNS))
    args = parser.parse_args()
    SPEEDUP = args.speedup
    print(f"simulated {MODEL} / H100, tokenizer {TOKENIZER.relative_to(ROOT)}, D({IN},{OUT}) on /v1/completions,")
    print(f"fresh simulator per run, --disable-radix-cache, --sim-noise 0, --sim-speedup {SPEEDUP}\n")
    header = (
        f"{'c':>3} {'requests':>8} {'client':<14} {'prompt tokens':>17} {'TTFT ms':>9} {'TPOT ms':>8} {'out tok/s':>10}"
    )
    print(header)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for concurrency in args.concurrency:
            requests = RUNS[concurrency]
            a, a_len = ours(concurrency, requests, tmp / "ours.log")
            b, b_len = theirs(concurrency, requests, tmp / "theirs.log", tmp, args.bench_serving, args.python)
            for name, fig, lengths in (("ours", a, a_len), ("bench_serving", b, b_len)):
                span = f"{min(lengths)}-{max(lengths)}" if min(lengths) != max(lengths) else f"{lengths[0]}"
                print(f"{concurrency:>3} {requests:>8} {name:<14} {span:>17} {fig['ttft_ms']:>9.2f} "
                      f"{fig['tpot_ms']:>8.3f} {fig['output_throughput']:>10.1f}")  # fmt: skip
            diff = {k: (b[k] - a[k]) / a[k] for k in a}
            print(f"{'':>3} {'':>8} {'difference':<14} {'':>17} {diff['ttft_ms']:>+9.2%} {diff['tpot_ms']:>+8.2%} "
                  f"{diff['output_throughput']:>+10.2%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
