"""A simulated SGLang server: same flags, HTTP API and failure messages, latencies from a performance model.

Run it as ``python -m pytest_autotuner.sim --model-path meta-llama/Llama-3.1-8B-Instruct --port 30000`` (SGLang
flags plus ``--sim-*`` flags, see ``cli.py``), or evaluate configurations without HTTP through
:func:`run_benchmark_in_process`. Both use the same scheduler (``scheduler.py``) and step-time model
(``perf_model.py``), so a configuration behaves the same either way.

Modelling choices worth knowing when reading results:

- Step times and KV capacity: from aiconfigurator-core's measured SGLang kernel tables wherever they cover the
  model, GPU and settings (``kernels.py``), else from the roofline in ``perf_model.py`` for the three Llama models
  on h100/h200/a100-80g; ``/get_server_info`` says which (``sim_pricing``).

- Time: the scheduler works in simulated seconds, which run at ``speedup`` times the wall clock but never past
  a step not yet emitted or an arrival a client promised (``clock.py``). Responses carry the simulated
  arrival (``X-Sim-Arrival``) and every streamed write its simulated time (``: sim-time`` SSE comment), and the
  project's client measures with those stamps and promises its next arrivals (``X-Sim-Then``/``X-Sim-After``):
  its figures are the timeline's exactly, the same at every speed-up and under any host load
  (``benchmarks/RESULTS.md``). ``GET /sim/timeline`` returns each request's arrival, first token and finish in
  simulated seconds, how late steps left (``emission_lag``, wall seconds) and how many promised requests came
  too late to wait for (``late_promises``). A client that times the server with its own clock (times the
  speed-up) gets close figures at speed-up 1 only.
- Tokens: by a local tokenizer.json when one is given (``--sim-tokenizer``) or the model folder holds one, as
  SGLang counts; else one per whitespace-separated word (plus one per 10 characters of a long word). Chat
  messages are joined without a chat template. ``/get_server_info`` says which (``sim_token_counting``).
- Prefix cache: a radix tree of token sequences in the KV pool, with LRU eviction (``radix_cache.py``; rules in
  ``scheduler.py``): a request's longest cached prefix skips prefill compute, ``--disable-radix-cache`` turns
  it off, ``lpm`` orders the queue by it (fcfs beyond 128 waiting requests), and usage reports
  ``prompt_tokens_details.cached_tokens`` (always; SGLang only with ``--enable-cache-report``).
- Prefill first, as SGLang's scheduler: a step prefills whenever a prefill batch can be formed, so without
  ``--enable-mixed-chunk`` decoding requests wait for every chunk of a long prompt (with it, prefill steps also
  advance them); on the roofline, unchunked prefill batches lose GEMM efficiency beyond 4k tokens.
- Noise: a per-run step-time factor ``exp(N(0, noise))`` shared by all replicas, times per-step jitter
  ``1 + N(0, noise)``; all seeded, so the same seed, flags and traffic give the same timeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_autotuner.sim.cli import DEFAULT_SPEEDUP, SIM_VERSION, ParamError, build_parser
from pytest_autotuner.sim.perf_model import (
    GPUS,
    MODELS,
    SIM_MODEL_VERSION,
    EngineConfig,
    ModelProfile,
    StartupFailure,
    lookup_model,
    plan_memory,
    step_time,
)
from pytest_autotuner.sim.scheduler import Scheduler, SimRequest

if TYPE_CHECKING:
    from pytest_autotuner.sim.inprocess import run_benchmark_in_process

__all__ = [
    "DEFAULT_SPEEDUP",
    "GPUS",
    "MODELS",
    "SIM_MODEL_VERSION",
    "SIM_VERSION",
    "EngineConfig",
    "ModelProfile",
    "ParamError",
    "Scheduler",
    "SimRequest",
    "StartupFailure",
    "build_parser",
    "lookup_model",
    "plan_memory",
    "run_benchmark_in_process",
    "step_time",
]


def __getattr__(name: str) -> Any:
    # imported on first use: the server process (``python -m pytest_autotuner.sim``) does not need the
    # benchmark metrics and numpy that the in-process API brings, and every trial launches one
    if name == "run_benchmark_in_process":
        from pytest_autotuner.sim.inprocess import run_benchmark_in_process

        return run_benchmark_in_process
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
