"""What screening a large space costs: every configuration of a 5,120-point engine-flag space for Llama-3.1-8B on
an H100 scored by the screen's model (the in-process simulator, ``screen.py``), through ``screen_space`` as a
session runs it (its progress callback prints every 500), timed in CPU and wall seconds.

Issue 32's goal: a 5,000-point space screened in under 5 minutes of CPU on a 2-core runner, with progress.

    python benchmarks/screen_cost.py [--size 5120]
"""

from __future__ import annotations

import argparse
import time

from pytest_autotuner.core.search.screening import screen_space
from pytest_autotuner.core.search.space import SearchSpace
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.evaluate import plan_from_spec
from pytest_autotuner.screen import make_screen

PARAMETERS = {
    "mem-fraction-static": [0.7, 0.75, 0.8, 0.85, 0.9],
    "chunked-prefill-size": [512, 1024, 2048, 4096, 8192],
    "max-running-requests": [16, 32, 64, 128],
    "schedule-policy": ["fcfs", "lpm"],
    "enable-mixed-chunk": [True, False],
    "cuda-graph-max-bs-decode": [8, 16, 32, 64, 128, 256, 512, 1024],
    "schedule-conservativeness": [0.3, 0.6, 1.0, 1.3],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=5120, help="configurations to score (the space has 12,800)")
    args = parser.parse_args()
    spec = TaskSpec.model_validate({
        "task_name": "screen-cost",
        "model": {"id_or_path": "meta-llama/Llama-3.1-8B-Instruct"},
        "runtime": "sim",
        "parameters": PARAMETERS,
        "optimization": {"objective": "maximize_throughput", "screening": True, "screen_size": args.size},
        "benchmark": {"traffic_scenarios": ["N(512,128)/(128,32)"], "num_concurrency": [32],
                      "max_requests_per_iteration": 64},
        "slo": {"tpot": {"threshold": 0.05, "hard_fail": True, "fail_ratio": 0.5}},
    })  # fmt: skip
    plan = plan_from_spec(spec, 0)
    screen, why = make_screen(spec, plan, gpu="h100", num_gpus=1, seed=0)
    assert screen is not None, why
    space = SearchSpace.from_spec(spec)
    print(f"space: {space.grid_size:,} configurations; scoring {args.size:,}")
    cpu, wall = time.process_time(), time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done % 500 == 0 or done == total:
            print(f"  screened {done:,} of {total:,}: {time.process_time() - cpu:.0f} s CPU", flush=True)

    def score(params: dict[str, object]) -> float | None:
        predicted = screen.predict(params)  # type: ignore[arg-type]
        return None if predicted is None else predicted[0]

    result = screen_space(space, score, size=args.size, seeds=4, on_progress=progress)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"scored {result.scored:,} ({result.unscored} not scorable) in {cpu:.1f} s CPU, {wall:.1f} s wall: "
          f"{cpu / max(1, result.scored + result.unscored) * 1e3:.1f} ms CPU a configuration")  # fmt: skip
    for value, params in zip(result.predicted, result.seeds, strict=True):
        print(f"  seed (rank key {value:.4g}, lower is better): {params}")


if __name__ == "__main__":
    main()
