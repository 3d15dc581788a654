"""The simulator's command line: SGLang's launch flags plus ``--sim-*`` flags, for CLI and in-process."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from pytest_autotuner.sim.perf_model import GPUS, SIM_MODEL_VERSION, EngineConfig, MemoryPlan, lookup_model

if TYPE_CHECKING:
    from pytest_autotuner.core.trial import ParamValue

__all__ = [
    "DEFAULT_SPEEDUP",
    "SIM_VERSION",
    "ParamError",
    "build_parser",
    "engine_config",
    "params_to_argv",
    "parse_argv",
    "server_info",
]

SIM_VERSION = "0.5.2-sim"

#: Simulated seconds per wall second by default; 1 keeps wall-clock jitter small against real latencies.
DEFAULT_SPEEDUP = 1.0

SCHEDULE_POLICIES = ("fcfs", "lpm", "dfs-weight", "lof", "random", "priority")
KV_CACHE_DTYPES = ("auto", "fp8_e5m2", "fp8_e4m3", "bf16")


class ParamError(ValueError):
    """A flag or value the simulator (like SGLang's argparse) does not accept."""


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ParamError(message)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def _chunk_size(text: str) -> int:
    value = int(text)
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"must be positive, or -1 to disable chunked prefill, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser(*, raising: bool = False) -> argparse.ArgumentParser:
    """The argparse definition; ``raising=True`` raises ParamError instead of exiting with status 2."""
    cls = _RaisingParser if raising else argparse.ArgumentParser
    p = cls(prog="python -m pytest_autotuner.sim", description="A simulated SGLang server.", allow_abbrev=False)
    p.add_argument("--model-path", "--model", dest="model_path", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--context-length", type=_positive_int, default=None)
    p.add_argument("--random-seed", type=int, default=None)
    p.add_argument("--tp-size", "--tp", dest="tp_size", type=_positive_int, default=1)
    p.add_argument("--dp-size", "--dp", dest="dp_size", type=_positive_int, default=1)
    p.add_argument("--mem-fraction-static", type=_fraction, default=None)
    p.add_argument("--chunked-prefill-size", type=_chunk_size, default=None)
    p.add_argument("--max-prefill-tokens", type=_positive_int, default=16384)
    p.add_argument("--max-running-requests", type=_positive_int, default=None)
    p.add_argument("--schedule-policy", choices=SCHEDULE_POLICIES, default="fcfs")
    p.add_argument("--schedule-conservativeness", type=_positive_float, default=1.0)
    p.add_argument("--cuda-graph-max-bs", type=_positive_int, default=None)
    p.add_argument("--disable-cuda-graph", action="store_true")
    p.add_argument("--enable-mixed-chunk", action="store_true")
    p.add_argument("--disable-radix-cache", action="store_true")
    p.add_argument("--enable-cache-report", action="store_true", help="accepted; the simulator always reports")
    p.add_argument("--kv-cache-dtype", choices=KV_CACHE_DTYPES, default="auto")
    p.add_argument("--stream-interval", type=_positive_int, default=1)
    sim = p.add_argument_group("simulator")
    sim.add_argument("--sim-gpu", choices=sorted(GPUS), default="h100")
    sim.add_argument("--sim-num-gpus", type=_positive_int, default=1, help="GPUs visible to the server")
    sim.add_argument("--sim-speedup", type=_positive_float, default=DEFAULT_SPEEDUP, help="simulated s per wall s")
    sim.add_argument("--sim-seed", type=int, default=None, help="default: --random-seed, else 0")
    sim.add_argument("--sim-noise", type=_non_negative_float, default=0.03, help="relative run-to-run noise")
    sim.add_argument("--sim-slowdown", type=_positive_float, default=1.0, help="step-time factor (regressions)")
    sim.add_argument("--sim-crash-after", type=_positive_int, default=None, help="exit when request N+1 arrives")
    sim.add_argument("--sim-hang-after", type=_positive_int, default=None, help="stop responding after N requests")
    sim.add_argument("--sim-http-500-burst", type=int, default=0, help="first N requests get HTTP 500")
    sim.add_argument("--sim-malformed-sse-every", type=_positive_int, default=None, help="every Nth stream")
    sim.add_argument("--sim-startup-delay", type=_non_negative_float, default=0.0, help="extra wall seconds")
    sim.add_argument("--sim-startup-scale", type=_non_negative_float, default=1.0, help="startup duration factor")
    sim.add_argument(
        "--sim-launched-at",
        type=float,
        default=None,
        help="the launcher's time.monotonic() at launch: the simulated startup counts from then, so the "
        "simulator's own Python start-up is part of it instead of added to it (default: from this process's start)",
    )
    return p


def default_mem_fraction(args: argparse.Namespace, chunked_prefill_size: int) -> float:
    """The mem-fraction-static SGLang picks for these flags on the simulated GPU (see sglang_defaults)."""
    from pytest_autotuner.core.sglang_defaults import GPU_MEMORY_MIB, sglang_defaults

    defaults = sglang_defaults(GPU_MEMORY_MIB[args.sim_gpu], tp_size=args.tp_size,
                               chunked_prefill_size=chunked_prefill_size, cuda_graph_max_bs=args.cuda_graph_max_bs,
                               max_prefill_tokens=args.max_prefill_tokens)  # fmt: skip
    return float(defaults["mem-fraction-static"])


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """Resolve parsed flags into an EngineConfig (model lookup may raise ValueError)."""
    model = lookup_model(args.model_path)
    gpu = GPUS[args.sim_gpu]
    chunk = 8192 if args.chunked_prefill_size is None else args.chunked_prefill_size
    return EngineConfig(
        model=model,
        gpu=gpu,
        tp=args.tp_size,
        dp=args.dp_size,
        num_gpus=args.sim_num_gpus,
        mem_fraction_static=args.mem_fraction_static or default_mem_fraction(args, chunk),
        chunked_prefill_size=chunk,
        max_prefill_tokens=args.max_prefill_tokens,
        max_running_requests=args.max_running_requests,
        schedule_policy=args.schedule_policy,
        schedule_conservativeness=args.schedule_conservativeness,
        cuda_graph_max_bs=args.cuda_graph_max_bs,
        disable_cuda_graph=args.disable_cuda_graph,
        enable_mixed_chunk=args.enable_mixed_chunk,
        disable_radix_cache=args.disable_radix_cache,
        kv_cache_dtype=args.kv_cache_dtype,
        stream_interval=args.stream_interval,
        context_length=args.context_length,
        slowdown=args.sim_slowdown,
    )


def params_to_argv(params: Mapping[str, ParamValue]) -> list[str]:
    """SGLang argv for tuned params: ``{"tp-size": 2, "disable-cuda-graph": True}`` -> flags."""
    argv: list[str] = []
    for key, value in params.items():
        flag = "--" + key.lstrip("-").replace("_", "-")
        if isinstance(value, bool):
            if value:
                argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


def server_info(args: argparse.Namespace, cfg: EngineConfig, memory: MemoryPlan) -> dict[str, Any]:
    """What ``/server_info`` answers: resolved server args plus the memory plan and the simulator's settings.

    Every ``sim_*`` entry changes what the simulator measures or how fast it runs; the measuring ones
    (``sim_gpu``, ``sim_num_gpus``, ``sim_model``, ``sim_noise``, ``sim_model_version``) belong in a baseline's
    fingerprint. ``sim_speedup`` no longer changes the figures (server time) but is reported too.
    """
    info: dict[str, Any] = {k: v for k, v in vars(args).items() if not k.startswith("sim_")}
    info.update(
        model_path=args.model_path,
        served_model_name=args.served_model_name or args.model_path,
        mem_fraction_static=cfg.mem_fraction_static,
        chunked_prefill_size=cfg.chunked_prefill_size,
        max_running_requests=memory.max_running_requests,
        cuda_graph_max_bs=cfg.graph_max_bs,
        context_length=cfg.context_len,
        max_total_num_tokens=memory.max_total_num_tokens,
        version=SIM_VERSION,
        sim_speedup=args.sim_speedup,
        sim_gpu=cfg.gpu.name,
        sim_num_gpus=cfg.num_gpus,
        sim_model=cfg.model.name,
        sim_noise=args.sim_noise,
        sim_model_version=SIM_MODEL_VERSION,
    )
    return info


def parse_argv(argv: Sequence[str], *, raising: bool = False) -> argparse.Namespace:
    return build_parser(raising=raising).parse_args(list(argv))
