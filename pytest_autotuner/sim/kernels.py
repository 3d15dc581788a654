"""Step times and KV capacity from NVIDIA's aiconfigurator-core: measured SGLang kernel tables.

A thin adapter: the scheduler, radix cache, clock and HTTP surface stay the simulator's; this module only
answers "how long does this step take" and "how many KV tokens fit" from the library's per-GPU tables (GEMM,
attention, MoE, communication) for the SGLang version nearest the imitated one that has tables. What it cannot
price falls back to the roofline model in ``perf_model`` only for the models and GPUs that model is calibrated
for (the three Llama models on h100, h200, a100-80g), and says so; anything else is a ValueError naming what is
missing.

The library is an optional dependency (``pip install 'pytest-autotuner[kernels]'``, part of ``[dev]``); it
needs no network at run time: model architectures come from its bundled configs or a local ``config.json``.

Why one module of about 560 lines: the whole adapter to aiconfigurator-core (versions, GPU and model names, step
times, KV capacity), so that the library's API is touched nowhere else.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_autotuner.core.spec.models import ModelProfile
    from pytest_autotuner.sim.perf_model import EngineConfig

__all__ = [
    "GPU_SYSTEMS",
    "LIBRARY",
    "ROOFLINE_GPUS",
    "KernelStepCost",
    "Pricing",
    "choose_pricing",
    "kernel_memory",
    "library_model",
    "library_version",
    "model_profile",
]

LIBRARY = "aiconfigurator-core"
_INSTALL_HINT = "pip install 'pytest-autotuner[kernels]'"

#: The simulator's GPU names and the library's system names (those with SGLang tables).
GPU_SYSTEMS: dict[str, str] = {
    "h100": "h100_sxm",
    "h200": "h200_sxm",
    "a100-80g": "a100_sxm",
    "b200": "b200_sxm",
    "b300": "b300_sxm",
    "gb200": "gb200",
    "gb300": "gb300",
    "l40s": "l40s",
    "rtx-pro-6000": "rtx_pro_6000_server",
}
#: The GPUs the roofline model is calibrated for: the fallback prices only these.
ROOFLINE_GPUS = ("h100", "h200", "a100-80g")
#: ``--quantization`` values priced with the library's FP8 GEMM (and MoE) tables.
FP8_QUANTIZATIONS = ("fp8", "w8a8_fp8")


@functools.cache
def library_version() -> str | None:
    """The installed aiconfigurator-core version, or None when it is not installed (or does not import)."""
    try:
        import importlib.metadata

        import aiconfigurator_core  # noqa: F401

        return importlib.metadata.version(LIBRARY)
    except Exception:
        return None


def _quiet() -> None:
    """The library logs table loading (fallback rows, backward fill) at INFO/WARNING on every compile."""
    logging.getLogger("aiconfigurator_core").setLevel(logging.ERROR)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("aiconfigurator"):
            logging.getLogger(name).setLevel(logging.ERROR)


def cache_dir() -> Path:
    """Where compiled engines and memory estimates are kept between simulator processes (a library version and
    the inputs name each entry): ``kernels/`` under ``$PYTEST_AUTOTUNER_CACHE`` (default
    ``~/.cache/pytest-autotuner``, as the Docker runtime's ``--help`` cache)."""
    root = os.environ.get("PYTEST_AUTOTUNER_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "pytest-autotuner"
    )
    return Path(root) / "kernels"


#: Bump when what this module stores changes, so no process reads an entry of another layout.
_CACHE_FORMAT = 3


def _cache_key(*parts: Any) -> str:
    text = json.dumps([_CACHE_FORMAT, library_version(), *parts], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cache_get(key: str, suffix: str) -> bytes | None:
    try:
        return (cache_dir() / f"{key}{suffix}").read_bytes()
    except OSError:
        return None


def _cache_put(key: str, suffix: str, data: bytes) -> None:
    """Best effort: an unwritable cache only costs the next process the compile again."""
    try:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, folder / f"{key}{suffix}")
    except OSError:
        pass


def _config_digest(model_path: str) -> str:
    """A local folder's config.json content (its edits change the entry); empty for a bundled id."""
    try:
        return hashlib.sha256((Path(model_path) / "config.json").read_bytes()).hexdigest()
    except OSError:
        return ""


def _normalise(name: str) -> str:
    key = re.sub(r"[^a-z0-9]+", "-", name.rsplit("/", 1)[-1].lower()).strip("-")
    return re.sub(r"^meta-|-instruct$", "", key)


@functools.cache
def _bundled_models() -> dict[str, str]:
    """The Hugging Face ids whose config.json the library ships, by id (lower case) and by normalised name."""
    import aiconfigurator_core

    folder = Path(aiconfigurator_core.__file__).parent / "model_configs"
    out: dict[str, str] = {}
    for path in sorted(folder.glob("*_config.json")):
        if path.name.endswith("_hf_quant_config.json"):
            continue
        hf_id = path.name.removesuffix("_config.json").replace("--", "/", 1)
        out[hf_id.lower()] = hf_id
        out.setdefault(_normalise(hf_id), hf_id)
    return out


#: Hugging Face configs of the roofline table's models the library does not ship (Llama-3.2-1B), as local folders
#: the library reads like any other (the architecture from the model card's config.json).
_OWN_CONFIGS = {
    _normalise(folder.name.replace("--", "/", 1)): folder
    for folder in sorted((Path(__file__).parent / "model_configs").glob("*"))
    if (folder / "config.json").is_file()
}


@functools.cache
def _architectures() -> frozenset[str]:
    from aiconfigurator_core.sdk.common import get_supported_architectures

    return frozenset(get_supported_architectures())


def library_model(model_path: str) -> tuple[str | None, str]:
    """What to hand the library for ``model_path``: a bundled Hugging Face id or a local folder, and why not.

    Returns ``(path, "")`` when the library can build the model without the network, else ``(None, reason)``.
    """
    if library_version() is None:
        return None, f"{LIBRARY} is not installed ({_INSTALL_HINT})"
    config = Path(model_path) / "config.json"
    if config.is_file():
        try:
            arch = (json.loads(config.read_text()).get("architectures") or ["?"])[0]
        except (OSError, ValueError, AttributeError) as exc:
            return None, f"{config}: not readable as JSON ({exc})"
        if arch not in _architectures():
            return None, (
                f"{config}: architecture {arch!r} is not one {LIBRARY} {library_version()} models "
                f"(it models {', '.join(sorted(_architectures()))})"
            )
        return str(Path(model_path).resolve()), ""
    found = _bundled_models().get(model_path.lower()) or _bundled_models().get(_normalise(model_path))
    own = _OWN_CONFIGS.get(_normalise(model_path))
    if found is None and own is not None:
        return str(own), ""
    if found is None:
        return None, (
            f"{model_path!r} is neither a local folder with a config.json nor one of the "
            f"{len(set(_bundled_models().values()))} Hugging Face ids {LIBRARY} {library_version()} ships a "
            "config for"
        )
    return found, ""


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def table_version(system: str, sglang_version: str) -> str | None:
    """The SGLang version with tables on ``system`` nearest ``sglang_version`` (a queryable slot), or None."""
    from aiconfigurator_core.sdk.perf_database import get_version_slots

    slots = get_version_slots(system, "sglang") or {}
    versions = sorted(set(slots.values()), key=_version_key)
    if not versions:
        return None
    want = _version_key(sglang_version)

    def distance(v: str) -> tuple[int, ...]:
        have = _version_key(v)
        return tuple(abs(a - b) for a, b in zip(have, want, strict=False))

    return min(versions, key=lambda v: (distance(v), _version_key(v)))


@dataclass(frozen=True)
class Pricing:
    """What prices a run's steps and memory: ``"kernels"`` (the library) or ``"roofline"``, and why."""

    model: str  # "kernels" | "roofline"
    library_model: str | None = None  # the id or folder the library builds
    system: str | None = None  # the library's GPU system name
    tables: str | None = None  # the SGLang version whose tables price the run
    gemm_quant: str | None = None
    kv_quant: str | None = None  # the KV cache's bytes
    kv_attention_tables: bool = True  # False: no attention table reads an fp8 KV cache; the 16-bit one prices it
    ep: int = 1  # --ep-size: experts over ep ranks, each expert's weights over tp / ep (MoE models)
    #: --attn-dp-size (or --enable-dp-attention with --dp-size): attention in that many data-parallel groups of
    #: tp / attention_dp GPUs inside the tp group, a scheduler each, while the MoE and dense layers span all tp
    attention_dp: int = 1
    #: --attention-backend priced on its own kernel lane (None: the lane of SGLang's default backend, which the
    #: library knows per GPU and version); ``backend_note``: why a backend given is priced on the default lane
    attention_backend: str | None = None
    backend_note: str = ""
    note: str = ""  # why the roofline prices this run

    @property
    def attention_kv_quant(self) -> str | None:
        return self.kv_quant if self.kv_attention_tables else None

    def describe(self) -> str:
        if self.model == "kernels":
            quant = "".join(f", {k} {v}" for k, v in (("weights", self.gemm_quant), ("KV", self.kv_quant)) if v)
            if self.ep > 1:
                quant += f", expert parallel {self.ep}"
            if self.attention_dp > 1:
                quant += f", attention data parallel {self.attention_dp}"
            if self.kv_quant and not self.kv_attention_tables:
                quant += " (attention priced on the 16-bit KV tables: none for an fp8 KV cache)"
            if self.attention_backend:
                quant += f", attention backend {self.attention_backend}"
            if self.backend_note:
                quant += f" ({self.backend_note}: attention priced as SGLang's default backend)"
            return f"{LIBRARY} {library_version()} (SGLang {self.tables} tables on {self.system}{quant})"
        return f"roofline ({self.note})" if self.note else "roofline"


def _quant_modes(quantization: str | None, kv_cache_dtype: str) -> tuple[str | None, str | None]:
    gemm = "fp8" if quantization in FP8_QUANTIZATIONS else None
    kv = "fp8" if kv_cache_dtype.startswith("fp8") else None
    return gemm, kv


def choose_pricing(
    model_path: str,
    gpu: str,
    sglang_version: str,
    *,
    tp: int = 1,
    quantization: str | None = None,
    kv_cache_dtype: str = "auto",
    roofline_knows_model: bool = False,
    force: str = "auto",
    ep: int = 1,
    attention_dp: int = 1,
    attention_backend: str | None = None,
) -> Pricing:
    """The library where it has tables for the model, GPU and settings; else the roofline for the models and
    GPUs it is calibrated for (``roofline_knows_model``), with the reason; else ValueError saying what is missing.

    The decision is kept in the cache (``cache_dir``), so a later simulator process skips the library's imports.
    ``force``: ``"kernels"`` refuses the roofline fallback, ``"roofline"`` skips the library (``--sim-pricing``).
    Attention data parallelism (``attention_dp`` > 1) is priced by the library only: the roofline has no model
    of it. ``attention_backend`` (``--attention-backend``) is priced on the library's lane of that backend where
    it has one for the model and GPU, else on the default backend's lane with ``backend_note`` saying so."""
    if attention_dp > 1 and force == "roofline":
        raise ValueError("--sim-pricing roofline: the roofline has no model of attention data parallelism")
    if force == "roofline":
        if roofline_knows_model and gpu in ROOFLINE_GPUS:
            return Pricing("roofline", note="--sim-pricing roofline")
        raise ValueError(
            f"--sim-pricing roofline: the roofline prices only Llama-3.2-1B, Llama-3.1-8B and Llama-3.1-70B on "
            f"{', '.join(ROOFLINE_GPUS)}, not {model_path!r} on {gpu!r}"
        )
    gemm, kv = _quant_modes(quantization, kv_cache_dtype)
    path, reason = library_model(model_path)
    system = GPU_SYSTEMS.get(gpu)
    if system is None:
        reason = f"{LIBRARY} has no tables for GPU {gpu!r}"
    elif path is not None:
        ep = ep if _is_moe(path) else 1  # a dense model has no experts to spread: --ep-size changes nothing
        key = _cache_key("pricing", path, _config_digest(path), system, sglang_version, tp, gemm, kv, ep, attention_dp,
                         *([attention_backend] if attention_backend else []))  # fmt: skip
        cached = _cache_get(key, ".json")
        if cached is not None:
            decision = json.loads(cached)
        else:
            decision = _decide(path, system, sglang_version, tp, gemm, kv, ep, attention_dp, attention_backend)
            _cache_put(key, ".json", json.dumps(decision).encode())
        if "reason" not in decision:
            return Pricing(**decision)
        reason = decision["reason"]
    if roofline_knows_model and gpu in ROOFLINE_GPUS and force != "kernels" and attention_dp == 1:
        return Pricing("roofline", note=reason)
    raise ValueError(
        f"the simulator cannot price `--model-path` {model_path!r} on GPU {gpu!r} (SGLang {sglang_version}, "
        f"tp {tp}, quantization {quantization or 'none'}, kv-cache-dtype {kv_cache_dtype}"
        + (f", attention data parallel {attention_dp}" if attention_dp > 1 else "")
        + f"): {reason}; the roofline fallback covers only Llama-3.2-1B, Llama-3.1-8B and Llama-3.1-70B on "
        f"{', '.join(ROOFLINE_GPUS)}" + (", without attention data parallelism" if attention_dp > 1 else "")
    )


def _decide(
    path: str,
    system: str,
    sglang_version: str,
    tp: int,
    gemm: str | None,
    kv: str | None,
    ep: int = 1,
    attention_dp: int = 1,
    attention_backend: str | None = None,
) -> dict[str, Any]:
    """``Pricing`` fields when the library prices one step of each kind for these settings, else ``reason``."""
    tables = table_version(system, sglang_version)
    if tables is None:
        return {"reason": f"{LIBRARY} {library_version()} has no SGLang tables for {system}"}
    pricing = Pricing("kernels", path, system, tables, gemm, kv, ep=ep, attention_dp=attention_dp)
    try:
        _probe(pricing, tp)
    except ValueError as exc:
        if kv is None:
            return {"reason": str(exc)}
        # An fp8 KV cache halves the pool's bytes (modelled from the library's KV bytes per token); where no
        # table times attention over it, the 16-bit KV attention prices it rather than the whole run moving to
        # another model (a study's trials must be priced alike).
        pricing = dataclasses.replace(pricing, kv_attention_tables=False)
        try:
            _probe(pricing, tp)
        except ValueError:
            return {"reason": str(exc)}
    if attention_backend is not None:
        pricing = _with_backend(pricing, tp, attention_backend)
    return dataclasses.asdict(pricing)


def _with_backend(pricing: Pricing, tp: int, backend: str) -> Pricing:
    """``pricing`` on ``backend``'s attention lane when the library times both phases on it for this model and
    GPU; else on the default lane, with the library's reason in ``backend_note`` (a backend it has no lane for,
    or no tables of that lane; the flag is then reported unmodelled)."""
    lane = dataclasses.replace(pricing, attention_backend=backend)
    try:
        _probe(lane, tp)
    except ValueError as exc:
        return dataclasses.replace(pricing, backend_note=str(exc).rstrip("."))
    return lane


class _Engine:
    """The library's compiled engine (``AicEngine``), called positionally as ``EngineHandle`` does."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def decode_step_latency(self, gen: int, isl: int, osl: int) -> float:
        return float(self._engine.decode_step_latency(gen, isl, osl, 1.0))

    def mixed_step_breakdown(self, ctx: int, gen: int, isl: int, osl: int) -> tuple[float, float, float, float]:
        total, shared, prefill, decode = self._engine.mixed_step_breakdown(ctx, gen, isl, osl, 0, 1.0, 1.0)
        return float(total), float(shared), float(prefill), float(decode)


def _warm_handle(pricing: Pricing, tp: int) -> _Engine:
    """The engine with its tables loaded (the library loads them at the first query)."""
    engine = _handle(pricing, tp)
    engine.decode_step_latency(1, 128, 1)
    engine.mixed_step_breakdown(256, 1, 256, 1)
    return engine


def _handle(pricing: Pricing, tp: int) -> _Engine:
    """The compiled engine for ``pricing``: from the cache (about 0.4 s) or compiled (seconds: the tables load).
    Why a backend fell back to the default lane (``backend_note``) is no part of the engine: it shares the
    default's."""
    return _compiled(dataclasses.replace(pricing, backend_note=""), tp)


@functools.lru_cache(maxsize=64)
def _compiled(pricing: Pricing, tp: int) -> _Engine:
    import aiconfigurator_core

    key = _cache_key("engine", pricing, _config_digest(pricing.library_model or ""), tp)
    spec = _cache_get(key, ".spec")
    if spec is None:
        _quiet()
        from aiconfigurator_core.sdk.engine import compile_engine

        spec = compile_engine(
            str(pricing.library_model),
            str(pricing.system),
            "sglang",
            backend_version=pricing.tables,
            tp_size=tp // pricing.attention_dp,  # the attention's tp: tp x attention_dp = moe_tp x moe_ep GPUs
            attention_dp_size=pricing.attention_dp,
            moe_tp_size=tp // pricing.ep,  # SGLang shards each expert over tp / ep GPUs, the experts over ep
            moe_ep_size=pricing.ep,
            gemm_quant_mode=pricing.gemm_quant,
            moe_quant_mode=pricing.gemm_quant,
            kvcache_quant_mode=pricing.attention_kv_quant,
            attention_backend=pricing.attention_backend,
        )
        _cache_put(key, ".spec", spec)
    return _Engine(aiconfigurator_core.AicEngine.from_spec(spec, None))


def _call(pricing: Pricing, tp: int, what: Callable[[Any], Any]) -> Any:
    """Run ``what(handle)``; the library's errors (no data, unsupported setting) become one ValueError."""
    try:
        return what(_handle(pricing, tp))
    except Exception as exc:  # the library raises its own error types (PerfDataNotAvailableError, ...)
        first = str(exc).splitlines()[0].split(" at /")[0] if str(exc) else type(exc).__name__
        name = Path(str(pricing.library_model)).name if os.path.isabs(str(pricing.library_model)) else None
        raise ValueError(f"{LIBRARY} cannot price {name or pricing.library_model} on {pricing.system} "
                         f"(SGLang {pricing.tables} tables, tp {tp}): {first}") from None  # fmt: skip


def _probe(pricing: Pricing, tp: int) -> None:
    """One step of each kind, so a missing table fails now (at startup) instead of mid-run."""
    _call(pricing, tp, lambda h: (h.decode_step_latency(1, 128, 1), h.mixed_step_breakdown(256, 1, 256, 1)))


class KernelStepCost:
    """Seconds for one scheduler step from the library's tables; same call as ``perf_model.StepCost``.

    A decode step: the library's decode step at the decoders' mean context. A step with prefill: the library's
    mixed step for its non-attention part and prefill attention (prompt length chosen so that its attention pairs
    match the chunks'), plus the decode attention at the decoders' mean context. Both plus the host side of the
    step (launches, per-request scheduling), which the tables do not measure.

    With attention data parallelism each rank is a scheduler of its own and this prices a step of its batch: the
    library times the attention on the rank's tp / attention_dp GPUs and the MoE and dense layers on all ranks'
    tokens, the ranks taken alike. SGLang steps the ranks in lockstep (an idle rank runs an empty batch); the
    simulator steps them independently, which round-robin traffic keeps close.
    """

    def __init__(self, cfg: EngineConfig) -> None:
        from pytest_autotuner.sim import perf_model

        assert cfg.pricing is not None and cfg.pricing.model == "kernels"
        # Loading the engine and its tables takes a second or more, here, before the server listens (as SGLang
        # loads its weights): the library holds the interpreter lock while it loads, so a thread would stall the
        # event loop of a server already answering.
        self._engine = _warm_handle(cfg.pricing, cfg.tp)
        self._slowdown = cfg.slowdown
        # The host side of a step, which kernel tables do not hold: the graph replay (or eager launches) and the
        # scheduler's per-request work, with the roofline's constants.
        self._graph_max_bs = -1 if cfg.disable_cuda_graph else cfg.graph_max_bs
        self._graph_launch = perf_model._GRAPH_LAUNCH_S
        self._eager_launch = perf_model._KERNEL_LAUNCH_S_PER_LAYER * cfg.model.num_layers
        self._cpu_per_request = perf_model._CPU_S_PER_REQUEST

    def _host(self, decode_batch: int, prefill_tokens: int) -> float:
        graph = prefill_tokens == 0 and decode_batch <= self._graph_max_bs
        return (self._graph_launch if graph else self._eager_launch) + self._cpu_per_request * (decode_batch + 1)

    def __call__(
        self,
        *,
        decode_batch: int,
        decode_context: int,
        prefill_tokens: int = 0,
        prefill_attention_pairs: float = 0.0,
        prefill_context: int = 0,
    ) -> float:
        del prefill_context  # the attention pairs carry it
        h = self._engine
        mean_context = max(1, round(decode_context / decode_batch)) if decode_batch else 1
        if prefill_tokens <= 0:
            if decode_batch <= 0:
                return 0.0
            gpu = h.decode_step_latency(decode_batch, max(1, mean_context - 1), 1) * 1e-3
            return (gpu + self._host(decode_batch, 0)) * self._slowdown
        isl = max(1, round(2.0 * prefill_attention_pairs / prefill_tokens))
        _, shared, prefill_attention, _ = h.mixed_step_breakdown(prefill_tokens, decode_batch, isl, 1)
        decode_attention = 0.0
        if decode_batch:
            decode_attention = h.mixed_step_breakdown(prefill_tokens, decode_batch, max(1, mean_context - 1), 1)[3]
        gpu = (shared + prefill_attention + decode_attention) * 1e-3
        return (gpu + self._host(decode_batch, prefill_tokens)) * self._slowdown


@dataclass(frozen=True)
class KernelMemory:
    capacity_bytes: float  # per GPU, the library's system spec
    weight_bytes: float  # per GPU: the checkpoint's dtype, --quantization, the tp (and MoE) sharding
    kv_bytes_per_token: float  # per GPU: --kv-cache-dtype, the attention's layout (GQA, MLA), the tp sharding

    def kv_tokens(self, mem_fraction_static: float) -> int:
        """SGLang's static pool: ``mem_fraction_static`` of the GPU holds the weights and the KV cache (the
        activations and CUDA graphs live outside it); 0 when the weights alone overflow it."""
        budget = self.capacity_bytes * mem_fraction_static - self.weight_bytes
        return int(budget / self.kv_bytes_per_token) if budget > 0 and self.kv_bytes_per_token > 0 else 0


def _memory(pricing: Pricing, tp: int) -> KernelMemory:
    """Weights and KV bytes per token: the attention kernels' lane changes neither."""
    return _cached_memory(dataclasses.replace(pricing, attention_backend=None, backend_note=""), tp)


@functools.lru_cache(maxsize=64)
def _cached_memory(pricing: Pricing, tp: int) -> KernelMemory:
    key = _cache_key("memory", pricing, _config_digest(pricing.library_model or ""), tp)
    cached = _cache_get(key, ".json")
    if cached is not None:
        return KernelMemory(**json.loads(cached))
    memory = _estimate_memory(pricing, tp)
    _cache_put(key, ".json", json.dumps(dataclasses.asdict(memory)).encode())
    return memory


def _estimate_memory(pricing: Pricing, tp: int) -> KernelMemory:
    """Weights and KV bytes per token from ``estimate_kv_cache`` (asked for the whole GPU, so that its own
    activation and overhead reserves never leave it without a budget; the pool is sized as SGLang does)."""
    _quiet()
    from aiconfigurator_core.sdk.memory import estimate_kv_cache

    try:
        estimate = estimate_kv_cache(
            str(pricing.library_model),
            str(pricing.system),
            "sglang",
            pricing.tables,
            max_num_tokens=8192,
            max_batch_size=1,
            memory_fraction_kind="of_total",
            memory_fraction_value=1.0,
            tp_size=tp // pricing.attention_dp,
            attention_dp_size=pricing.attention_dp,
            moe_tp_size=tp // pricing.ep,
            moe_ep_size=pricing.ep,
            gemm_quant_mode=pricing.gemm_quant,
            moe_quant_mode=pricing.gemm_quant,
            kvcache_quant_mode=pricing.kv_quant,
        )
    except ValueError as exc:
        if "no KV budget" not in str(exc):
            raise
        return KernelMemory(1.0, float("inf"), 1.0)  # the weights alone overflow the GPU
    breakdown = estimate.get("memory_breakdown") or {}
    return KernelMemory(
        float(estimate["total_gpu_capacity_bytes"]),
        float(breakdown.get("weights_bytes", 0.0)),
        float(estimate["kv_size_per_token_bytes"]),
    )


def kernel_memory(cfg: EngineConfig) -> KernelMemory:
    """The library's memory figures for ``cfg`` (per GPU of one replica)."""
    assert cfg.pricing is not None
    return _memory(cfg.pricing, cfg.tp)


def _config_file(path: str) -> Path:
    """The config.json the library reads for ``path`` (a local folder, or a bundled Hugging Face id)."""
    if (Path(path) / "config.json").is_file():
        return Path(path) / "config.json"
    import aiconfigurator_core

    return Path(aiconfigurator_core.__file__).parent / "model_configs" / f"{path.replace('/', '--')}_config.json"


def _is_moe(path: str) -> bool:
    try:
        raw = json.loads(_config_file(path).read_text())
    except (OSError, ValueError):
        return False
    cfg = raw.get("text_config") or raw
    return any(cfg.get(k) for k in ("num_experts", "num_local_experts", "n_routed_experts"))


def model_profile(model_path: str) -> ModelProfile:
    """The architecture the scheduler and memory checks need for a model the library knows (its bundled config
    or the local folder's), for models outside the roofline's table; ValueError saying why not."""
    from pytest_autotuner.core.spec.models import ModelProfile

    path, reason = library_model(model_path)
    if path is None:
        raise ValueError(reason)
    source = _config_file(path)
    raw = json.loads(source.read_text())
    cfg = raw.get("text_config") or raw
    try:
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        layers = int(cfg.get("num_hidden_layers") or len(cfg.get("hybrid_override_pattern", "")) or 0)
        return ModelProfile(
            name=path.rsplit("/", 1)[-1],
            num_layers=layers,
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            vocab_size=int(cfg.get("vocab_size") or raw.get("vocab_size")),
            intermediate_size=int(cfg.get("intermediate_size") or cfg.get("moe_intermediate_size") or 4 * hidden),
            context_length=int(cfg.get("max_position_embeddings") or 131072),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{source}: cannot read the model architecture ({exc!r})") from exc
