"""What a Docker session's one-off preparation costs, which every trial paid before hosts were per session.

Times ``DockerHost.prepare()`` on a fresh host (new client + ping, leftover sweep, image check, digest) against
the local engine, ``--repeats`` times, and prints the median and the range. Before the host was per session,
each trial built a runtime that did this work (plus the plugin's own check runtime); with ``pull: always`` each
trial also pulled from the registry, which this offline measurement cannot include.

Needs a Docker engine and the image (default: the test image built by .ci/start-docker).

    python benchmarks/docker_host.py [--image pytest-autotuner-sim:test] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

from pytest_autotuner.core.spec.runtime_settings import DockerSettings
from pytest_autotuner.runtimes.docker import DockerHost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="pytest-autotuner-sim:test")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    settings = DockerSettings(image=args.image, pull="never")
    times_ms = []
    for _ in range(args.repeats):
        host = DockerHost(model="meta-llama/Llama-3.2-1B-Instruct", settings=settings, image=args.image)
        started = time.perf_counter()
        host.prepare()
        times_ms.append((time.perf_counter() - started) * 1000)
        host.close()
    print(f"DockerHost.prepare() on {args.image}, {args.repeats} fresh hosts:")
    print(f"  median {statistics.median(times_ms):.1f} ms, min {min(times_ms):.1f} ms, max {max(times_ms):.1f} ms")
    print(f"  per session now: 1 prepare; before: 1 + one per trial (a 30-trial session: {30 + 1} prepares)")


if __name__ == "__main__":
    main()
