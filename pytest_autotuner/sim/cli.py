"""The simulator's command line: SGLang's launch flags plus ``--sim-*`` flags, for CLI and in-process.

Why one module of about 530 lines: one table of the SGLang flags the simulator reads and its own ``--sim-*`` flags,
grouped by subject.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from pytest_autotuner.core.spec.sglang_args import (
    DEFAULT_VERSION,
    SHIPPED_VERSIONS,
    ArgumentTable,
    Option,
    table_from_actions,
)
from pytest_autotuner.core.spec.tokens import WORD_RULE, TokenCounter
from pytest_autotuner.inputs import load_tokenizer, tokenizer_file
from pytest_autotuner.sglang_tables import shipped_table
from pytest_autotuner.sim.distortion import load_distortion
from pytest_autotuner.sim.kernels import FP8_QUANTIZATIONS, Pricing, choose_pricing, model_profile
from pytest_autotuner.sim.perf_model import (
    GPUS,
    SIM_MODEL_VERSION,
    EngineConfig,
    MemoryPlan,
    ModelProfile,
    lookup_model,
)
from pytest_autotuner.sim.speculative import Speculation, parse_acceptance

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.trial import ParamValue

__all__ = [
    "DEFAULT_SPEEDUP",
    "SIM_VERSION",
    "ParamError",
    "build_parser",
    "engine_config",
    "params_to_argv",
    "parse_argv",
    "pricing_problem",
    "resolve_model",
    "server_info",
    "sim_table",
    "token_counter",
    "unmodelled",
    "unmodelled_flags",
]

SIM_VERSION = f"{DEFAULT_VERSION}-sim"  # the default; a server reports the version it imitates

#: Simulated seconds per wall second by default; 1 keeps wall-clock jitter small against real latencies.
DEFAULT_SPEEDUP = 1.0
#: Wall seconds the simulator's clock waits for a promised arrival after its time came (``server.py``): long
#: enough for a client on a host busy with two trials and two CPU burners (seen 2-3 s behind at speed-up 100),
#: short enough that a client that died without withdrawing its promises does not hold the clock for long.
DEFAULT_PROMISE_PATIENCE = 10.0

#: The policies and KV dtypes the performance model tells apart; a version's other choices run as fcfs / 16-bit.
SCHEDULE_POLICIES = ("fcfs", "lpm", "dfs-weight", "lof", "random", "priority")
KV_CACHE_DTYPES = ("auto", "fp8_e5m2", "fp8_e4m3", "bf16", "bfloat16")


class ParamError(ValueError):
    """A flag or value the simulator (like SGLang's argparse) does not accept."""


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ParamError(message)


def _acceptance(text: str) -> tuple[float, ...]:
    try:
        return parse_acceptance(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int_arg(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
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


#: The simulator's own definition of each SGLang flag it models, by any of the flag's names in a version's table.
_MODELLED: dict[str, dict[str, Any]] = {
    "model-path": {"dest": "model_path", "required": True},
    "host": {"default": "127.0.0.1"},
    "port": {"type": int, "default": 30000},
    "served-model-name": {"default": None},
    "context-length": {"type": _positive_int, "default": None},
    "random-seed": {"type": int, "default": None},
    "tp-size": {"dest": "tp_size", "type": _positive_int, "default": 1},
    "dp-size": {"dest": "dp_size", "type": _positive_int, "default": 1},
    "ep-size": {"dest": "ep_size", "type": _positive_int, "default": 1},  # MoE, priced by the kernel tables
    # attention data parallelism (kernel tables only): 0.5.23's --attn-dp-size, or --dp-size with the (0.5.2, and
    # deprecated 0.5.23) --enable-dp-attention; either way inside the tp GPUs (``attention_parallelism``)
    "attn-dp-size": {"dest": "attn_dp_size", "type": _positive_int, "default": 1},
    "enable-dp-attention": {"action": "store_true"},
    "mem-fraction-static": {"type": _fraction, "default": None},
    "chunked-prefill-size": {"type": _chunk_size, "default": None},
    "max-prefill-tokens": {"type": _positive_int, "default": 16384},
    "max-running-requests": {"type": _positive_int, "default": None},
    "schedule-policy": {"default": "fcfs"},
    "schedule-conservativeness": {"type": _positive_float, "default": 1.0},
    "cuda-graph-max-bs": {"dest": "cuda_graph_max_bs", "type": _positive_int, "default": None},
    "cuda-graph-max-bs-decode": {"dest": "cuda_graph_max_bs", "type": _positive_int, "default": None},  # 0.5.23
    "disable-cuda-graph": {"action": "store_true"},
    "enable-mixed-chunk": {"action": "store_true"},
    "disable-radix-cache": {"action": "store_true"},  # the radix cache (sim/radix_cache.py) is on otherwise
    "enable-metrics": {"action": "store_true"},  # mounts /metrics with SGLang's queue-time histogram (server.py)
    "enable-cache-report": {"action": "store_true"},  # accepted: the simulator always reports cached tokens
    "kv-cache-dtype": {"default": "auto"},
    "quantization": {"default": None},  # fp8 priced by the kernel tables (kernels.py); the roofline ignores it
    # the attention kernels' lane in the kernel tables where they have one (kernels.py); else reported unmodelled
    "attention-backend": {"default": None},
    "stream-interval": {"type": _positive_int, "default": 1},
    # speculative decoding (speculative.py): the draft length, top-k and verified tree nodes
    "speculative-algorithm": {"default": None},
    "speculative-num-steps": {"type": _positive_int, "default": None},
    "speculative-eagle-topk": {"type": _positive_int, "default": None},
    "speculative-num-draft-tokens": {"type": _positive_int, "default": None},
}
#: Values of modelled flags the performance model knows; others are accepted and reported as not modelled.
MODELLED_VALUES = {"schedule-policy": SCHEDULE_POLICIES, "kv-cache-dtype": KV_CACHE_DTYPES,
                   "quantization": FP8_QUANTIZATIONS}  # fmt: skip
_UNMODELLED_PREFIX = "unmodelled:"
_NUMERIC_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float}


def _dest(name: str) -> str:
    return name.replace("-", "_")


def _add_modelled(p: argparse.ArgumentParser, option: Option, how: dict[str, Any]) -> None:
    kwargs = {"dest": _dest(option.name), **how}
    if option.choices is not None:
        kwargs["choices"] = option.choices
    p.add_argument(*option.flags, **kwargs)


def _add_unmodelled(p: argparse.ArgumentParser, option: Option) -> None:
    kwargs: dict[str, Any] = {"dest": _UNMODELLED_PREFIX + option.name, "default": argparse.SUPPRESS,
                              "help": "accepted, not modelled by the simulator"}  # fmt: skip
    if option.kind == "flag":
        kwargs["action"] = argparse.BooleanOptionalAction if option.negatable else "store_true"
        flags = [f for f in option.flags if not f.startswith("--no-")] if option.negatable else list(option.flags)
        p.add_argument(*flags, **kwargs)
        return
    if option.kind == "optional":
        kwargs["nargs"] = "?"
    elif option.kind == "list":
        kwargs["nargs"] = "*"
    if option.choices is not None:
        kwargs["choices"] = option.choices
    else:
        kwargs["metavar"] = _dest(option.name).upper()
    if option.type in _NUMERIC_TYPES:
        kwargs["type"] = _NUMERIC_TYPES[option.type]
    p.add_argument(*option.flags, **kwargs)


def _version_of(argv: Sequence[str]) -> str:
    """``--sim-sglang-version`` from argv (it decides which flags the parser accepts), else the newest shipped."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--sim-sglang-version", choices=SHIPPED_VERSIONS, default=DEFAULT_VERSION)
    known, _ = pre.parse_known_args(list(argv))
    return str(known.sim_sglang_version)


def build_parser(*, raising: bool = False, version: str = DEFAULT_VERSION) -> argparse.ArgumentParser:
    """The argparse definition imitating SGLang ``version``: exactly its options (those it does not model are
    accepted and reported), plus ``--sim-*``; ``raising=True`` raises ParamError instead of exiting with status 2."""
    cls = _RaisingParser if raising else argparse.ArgumentParser
    p = cls(prog="python -m pytest_autotuner.sim", description=f"A simulated SGLang {version} server.",
            allow_abbrev=False)  # fmt: skip
    defaults: dict[str, Any] = {}
    for name, how in _MODELLED.items():
        if "dest" not in how and how.get("action") != "store_true":
            defaults[_dest(name)] = how.get("default")
        elif how.get("action") == "store_true":
            defaults[_dest(name)] = False
        else:
            defaults[how["dest"]] = how.get("default")
    for option in shipped_table(version).options:
        modelled = next((_MODELLED[n] for n in option.names if n in _MODELLED), None)
        if modelled is not None:
            _add_modelled(p, option, modelled)
        else:
            _add_unmodelled(p, option)
    p.set_defaults(**{k: v for k, v in defaults.items() if k not in {a.dest for a in p._actions}})
    sim = p.add_argument_group("simulator")
    sim.add_argument("--sim-sglang-version", choices=SHIPPED_VERSIONS, default=version,
                     help="the SGLang release whose flags the simulator accepts")  # fmt: skip
    sim.add_argument("--sim-gpu", choices=sorted(GPUS), default="h100")
    sim.add_argument("--sim-pricing", choices=("auto", "kernels", "roofline"), default="auto",
                     help="what prices steps and memory: aiconfigurator-core's kernel tables where they cover the "
                     "model, GPU and settings, else the roofline for the models it is calibrated for (auto); "
                     "only the tables (kernels); only the roofline (roofline)")  # fmt: skip
    sim.add_argument("--sim-num-gpus", type=_positive_int, default=1, help="GPUs visible to the server")
    sim.add_argument("--sim-speedup", type=_positive_float, default=DEFAULT_SPEEDUP, help="simulated s per wall s")
    sim.add_argument("--sim-promise-patience", type=_positive_float, default=DEFAULT_PROMISE_PATIENCE,
                     help="wall seconds the clock waits for an arrival a client promised, after its time "
                     "came, before it goes on without it (a client further behind fails as host_too_slow)")  # fmt: skip
    sim.add_argument(
        "--sim-tokenizer",
        default=None,
        help="a tokenizer.json (or a folder holding one) to count prompt tokens with, as SGLang counts them "
        "(default: the model folder's tokenizer.json when --model-path is a local folder holding one, else the "
        "word rule: one token per whitespace-separated word)",
    )
    sim.add_argument("--sim-seed", type=int, default=None, help="default: --random-seed, else 0")
    sim.add_argument("--sim-noise", type=_non_negative_float, default=0.03, help="relative run-to-run noise")
    sim.add_argument(
        "--sim-spec-acceptance",
        type=_acceptance,
        default=None,
        help="speculative decoding: per-position acceptance rates, e.g. 0.8,0.7,0.6 (default: "
        "by algorithm, speculative.py)",
    )
    sim.add_argument(
        "--sim-distortion",
        default=None,
        metavar="FILE",
        help="a JSON reality stand-in: GPU, step-time factors, per-flag effects (distortion.py)",
    )
    sim.add_argument("--sim-slowdown", type=_positive_float, default=1.0, help="step-time factor (regressions)")
    sim.add_argument("--sim-crash-after", type=_positive_int, default=None, help="exit when request N+1 arrives")
    sim.add_argument("--sim-hang-after", type=_positive_int, default=None, help="stop responding after N requests")
    sim.add_argument("--sim-hang-at", type=_non_negative_float, default=None,
                     help="stop responding at this simulated second after ready")  # fmt: skip
    sim.add_argument("--sim-hang-replica", type=int, default=None,
                     help="only this data-parallel replica (0-based) hangs (--sim-hang-after/-at)")  # fmt: skip
    sim.add_argument("--sim-stop-stream-after", type=_non_negative_int_arg, default=None,
                     help="a stream stops after N tokens and never ends (the connection stays open)")  # fmt: skip
    sim.add_argument("--sim-stop-stream-every", type=_positive_int, default=1,
                     help="with --sim-stop-stream-after: only every Nth stream stops")  # fmt: skip
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


def sim_table(version: str = DEFAULT_VERSION) -> ArgumentTable:
    """What the simulator imitating ``version`` accepts: that version's table plus the ``--sim-*`` flags."""
    own = [a for a in build_parser(version=version)._actions if any(f.startswith("--sim-") for f in a.option_strings)]
    return shipped_table(version).extended(table_from_actions(own, version).options)


def unmodelled_flags(args: argparse.Namespace) -> list[str]:
    """The SGLang flags (and values) given that the simulator accepts but does not model, sorted."""
    out = sorted(k.removeprefix(_UNMODELLED_PREFIX) for k in vars(args) if k.startswith(_UNMODELLED_PREFIX))
    for name, known in MODELLED_VALUES.items():
        value = getattr(args, _dest(name), None)
        if value is not None and value not in known:
            out.append(f"{name}={value}")
    return out


def unmodelled(args: argparse.Namespace, cfg: EngineConfig) -> list[str]:
    """``unmodelled_flags``, plus ``--quantization`` and ``--ep-size`` where the roofline (which ignores them)
    prices the run, and ``--attention-backend=<value>`` where no kernel lane of that backend prices it."""
    out = unmodelled_flags(args)
    for flag, set_ in (("quantization", args.quantization is not None), ("ep-size", args.ep_size > 1)):
        if set_ and not cfg.priced_by_kernels and flag not in out:
            out = sorted([*out, flag])
    backend = args.attention_backend
    priced = cfg.pricing.attention_backend if cfg.pricing is not None and cfg.priced_by_kernels else None
    if backend is not None and backend != priced:
        out = sorted([*out, f"attention-backend={backend}"])
    return out


def _sglang_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if not k.startswith(("sim_", _UNMODELLED_PREFIX))}


def default_mem_fraction(args: argparse.Namespace, chunked_prefill_size: int) -> float:
    """The mem-fraction-static SGLang picks for these flags on the simulated GPU (see sglang_defaults)."""
    from pytest_autotuner.core.search.sglang_defaults import GPU_MEMORY_MIB, sglang_defaults

    defaults = sglang_defaults(GPU_MEMORY_MIB[args.sim_gpu], tp_size=args.tp_size,
                               chunked_prefill_size=chunked_prefill_size, cuda_graph_max_bs=args.cuda_graph_max_bs,
                               max_prefill_tokens=args.max_prefill_tokens)  # fmt: skip
    return float(defaults["mem-fraction-static"])


#: Architectures the roofline's Llama-style parameter and KV arithmetic describes (a local folder of another
#: architecture, MoE above all, is priced by the kernel tables or refused).
_ROOFLINE_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")


def _roofline_knows(model_path: str) -> bool:
    from pathlib import Path

    config = Path(model_path) / "config.json"
    if not config.is_file():
        return True  # lookup_model found it in the roofline's table
    try:
        raw = json.loads(config.read_text())
        archs = raw.get("architectures") or ["LlamaForCausalLM"]
    except (OSError, ValueError, AttributeError):
        return False
    moe = any(k in raw for k in ("num_experts", "num_local_experts", "n_routed_experts"))
    return archs[0] in _ROOFLINE_ARCHITECTURES and not moe


def attention_parallelism(args: argparse.Namespace) -> tuple[int, int]:
    """(model replicas, attention data-parallel ranks per replica): ``--enable-dp-attention`` turns ``--dp-size``
    into attention ranks inside the tp GPUs (SGLang 0.5.2's spelling, deprecated in 0.5.23 for
    ``--attn-dp-size``)."""
    if args.enable_dp_attention:
        return 1, args.dp_size
    return args.dp_size, args.attn_dp_size


def resolve_model(args: argparse.Namespace) -> tuple[ModelProfile, Pricing]:
    """The model's profile and what prices it (``kernels.choose_pricing``); ValueError naming what is missing."""
    try:
        model, in_table = lookup_model(args.model_path), True
    except ValueError as exc:
        try:
            model, in_table = model_profile(args.model_path), False
        except ValueError as why:
            raise ValueError(f"{exc}; nor can the kernel tables price it: {why}") from None
    dp, attention_dp = attention_parallelism(args)
    invalid = (args.tp_size % args.ep_size if args.ep_size > 1 else 0) or args.tp_size % attention_dp
    attention_tp = max(1, args.tp_size // attention_dp)
    if invalid or model.num_heads % attention_tp or args.tp_size * dp > args.sim_num_gpus:
        # SGLang refuses this parallelism at startup (plan_memory says so): nothing to price
        return model, Pricing("roofline", note="not priced: the parallelism is invalid")
    pricing = choose_pricing(
        args.model_path,
        args.sim_gpu,
        args.sim_sglang_version,
        tp=args.tp_size,
        quantization=args.quantization,
        kv_cache_dtype=args.kv_cache_dtype,
        roofline_knows_model=in_table and _roofline_knows(args.model_path),
        force=args.sim_pricing,
        ep=args.ep_size,
        attention_dp=attention_dp,
        attention_backend=args.attention_backend,
    )
    return model, pricing


def pricing_problem(model_path: str, gpu: str, sglang_version: str | None = None) -> str | None:
    """Why the simulator cannot price ``model_path`` on ``gpu`` at SGLang's defaults (None when it can): the
    collection-time check of a spec that runs on the simulator."""
    argv = ["--model-path", model_path, "--sim-gpu", gpu]
    if sglang_version is not None:
        argv += ["--sim-sglang-version", sglang_version]
    try:
        resolve_model(parse_argv(argv, raising=True))
    except ValueError as exc:
        return str(exc)
    return None


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """Resolve parsed flags into an EngineConfig (model lookup, pricing and a distortion file may raise
    ValueError). A ``--sim-distortion`` file's GPU and noise replace ``--sim-gpu`` and ``--sim-noise`` in
    ``args`` (the server prices and jitters as the stand-in reality does)."""
    distortion = None
    if args.sim_distortion:
        distortion = load_distortion(args.sim_distortion, set(GPUS))
        if distortion.gpu is not None:
            args.sim_gpu = distortion.gpu
        if distortion.noise is not None:
            args.sim_noise = distortion.noise
        distortion = distortion.for_flags(_flag_values(args))
    model, pricing = resolve_model(args)
    dp, attention_dp = attention_parallelism(args)
    gpu = GPUS[args.sim_gpu]
    chunk = 8192 if args.chunked_prefill_size is None else args.chunked_prefill_size
    # SGLang's server_args with DP attention: the chunk and --max-running-requests (``plan_memory``) are the
    # server's, each rank gets its share; the schedule conservativeness is scaled by 0.3
    rank_chunk = chunk // attention_dp if chunk > 0 else chunk
    conservativeness = args.schedule_conservativeness * (0.3 if attention_dp > 1 else 1.0)
    return EngineConfig(
        model=model,
        gpu=gpu,
        tp=args.tp_size,
        dp=dp,
        ep=args.ep_size,
        attention_dp=attention_dp,
        num_gpus=args.sim_num_gpus,
        mem_fraction_static=args.mem_fraction_static or default_mem_fraction(args, chunk),
        chunked_prefill_size=rank_chunk,
        max_prefill_tokens=args.max_prefill_tokens,
        max_running_requests=args.max_running_requests,
        schedule_policy=args.schedule_policy if args.schedule_policy in SCHEDULE_POLICIES else "fcfs",
        schedule_conservativeness=conservativeness,
        cuda_graph_max_bs=args.cuda_graph_max_bs,
        disable_cuda_graph=args.disable_cuda_graph,
        enable_mixed_chunk=args.enable_mixed_chunk,
        disable_radix_cache=args.disable_radix_cache,
        kv_cache_dtype=args.kv_cache_dtype if args.kv_cache_dtype in KV_CACHE_DTYPES else "auto",
        stream_interval=args.stream_interval,
        context_length=args.context_length,
        slowdown=args.sim_slowdown,
        quantization=args.quantization,
        pricing=pricing,
        speculation=_speculation(args, model),
        distortion=distortion,
    )


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """Each SGLang flag's value on this server: the modelled ones as resolved (their defaults where not given),
    the others as given."""
    values: dict[str, Any] = {
        name: getattr(args, how.get("dest", _dest(name)), None) for name, how in _MODELLED.items()
    }
    for key, value in vars(args).items():
        if key.startswith(_UNMODELLED_PREFIX):
            values[key.removeprefix(_UNMODELLED_PREFIX)] = value
    for name in ("disable-cuda-graph", "enable-mixed-chunk", "disable-radix-cache", "enable-metrics"):
        values[name] = bool(values.get(name))
    return values


def _speculation(args: argparse.Namespace, model: ModelProfile) -> Speculation | None:
    if not args.speculative_algorithm:
        return None
    return Speculation.resolve(
        args.speculative_algorithm,
        args.speculative_num_steps,
        args.speculative_eagle_topk,
        args.speculative_num_draft_tokens,
        architecture="DeepseekV3" if "deepseek" in args.model_path.lower() else "LlamaForCausalLM",
        num_layers=model.num_layers,
        acceptance=args.sim_spec_acceptance,
    )


def token_counter(args: argparse.Namespace) -> TokenCounter:
    """What counts prompt tokens: ``--sim-tokenizer``, else the model folder's tokenizer.json, else the word rule.

    Raises ValueError (``TokenizerError``) when ``--sim-tokenizer`` names no usable tokenizer."""
    if args.sim_tokenizer:
        return load_tokenizer(args.sim_tokenizer)
    if tokenizer_file(args.model_path) is not None:
        return load_tokenizer(args.model_path)
    return WORD_RULE


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


def server_info(
    args: argparse.Namespace, cfg: EngineConfig, memory: MemoryPlan, counter: TokenCounter = WORD_RULE
) -> dict[str, Any]:
    """What ``/server_info`` answers: resolved server args plus the memory plan and the simulator's settings.

    Every ``sim_*`` entry changes what the simulator measures or how fast it runs; the measuring ones
    (``sim_gpu``, ``sim_num_gpus``, ``sim_model``, ``sim_noise``, ``sim_model_version``) belong in a baseline's
    fingerprint. ``sim_speedup`` no longer changes the figures (server time) but is reported too.
    ``sim_token_counting`` says how prompts are counted (``"tokenizer"`` or ``"word rule"``) and
    ``sim_tokenizer`` which tokenizer.json (absolute path, or None), so a client on the same machine can build
    prompts by the same count; ``sim_tokenizer_sha256`` the first 16 hex digits of its SHA-256.
    """
    info: dict[str, Any] = _sglang_args(args)
    info.update(
        model_path=args.model_path,
        served_model_name=args.served_model_name or args.model_path,
        mem_fraction_static=cfg.mem_fraction_static,
        chunked_prefill_size=cfg.chunked_prefill_size,
        max_running_requests=memory.max_running_requests,
        cuda_graph_max_bs=cfg.graph_max_bs,
        context_length=cfg.context_len,
        max_total_num_tokens=memory.max_total_num_tokens,
        version=f"{args.sim_sglang_version}-sim",
        sim_sglang_version=args.sim_sglang_version,
        sim_unmodelled_flags=unmodelled(args, cfg),
        sim_speedup=args.sim_speedup,
        sim_gpu=cfg.gpu.name,
        sim_num_gpus=cfg.num_gpus,
        sim_model=cfg.model.name,
        sim_noise=args.sim_noise,
        sim_model_version=SIM_MODEL_VERSION,
        sim_pricing=cfg.pricing.describe() if cfg.pricing is not None else "roofline",
        sim_token_counting="word rule" if counter is WORD_RULE else "tokenizer",
        sim_tokenizer=getattr(counter, "path", None),
        sim_tokenizer_sha256=getattr(counter, "digest", None),
    )
    if cfg.distortion is not None:
        info["sim_distortion"] = {"path": cfg.distortion.source, "sha256": cfg.distortion.digest}
    spec = cfg.speculation
    if spec is not None:
        info["sim_speculation"] = {
            "algorithm": spec.algorithm,
            "num_steps": spec.num_steps,
            "topk": spec.topk,
            "num_draft_tokens": spec.draft_tokens,
            "acceptance": list(spec.acceptance),
            "acceptance_source": (
                "--sim-spec-acceptance" if args.sim_spec_acceptance else f"default for {spec.algorithm}"
            ),
            "expected_tokens_per_step": round(spec.expected_tokens(), 4),
        }
    return info


def parse_argv(argv: Sequence[str], *, raising: bool = False) -> argparse.Namespace:
    """Parse with the parser of the version ``--sim-sglang-version`` names (default: the newest shipped)."""
    return build_parser(raising=raising, version=_version_of(argv)).parse_args(list(argv))
