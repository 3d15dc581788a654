"""GPU and model profiles, the memory plan (KV capacity, startup failures) and the roofline step time.

Figures come from /work/shared/reference/sglang.md. The step-time model is a roofline: a step is bound either
by its matmul FLOPs or by the bytes it reads (weights + KV cache), plus tensor-parallel all-reduces and kernel
launch overhead. Calibration knobs are module constants with a comment saying which public figure they fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.spec.models import MODELS, ModelProfile
from pytest_autotuner.inputs import lookup_model

if TYPE_CHECKING:
    from pytest_autotuner.sim.distortion import Distortion
    from pytest_autotuner.sim.kernels import Pricing
    from pytest_autotuner.sim.speculative import Speculation

__all__ = [
    "GPUS",
    "MODELS",
    "SIM_MODEL_VERSION",
    "EngineConfig",
    "GpuProfile",
    "MemoryPlan",
    "ModelProfile",
    "StartupFailure",
    "StepCost",
    "lookup_model",
    "make_step_cost",
    "plan_memory",
    "step_time",
]

GIB = 1024**3

#: What a configuration measures on the simulator: bump it whenever this step-time model, the scheduler or the
#: simulator's clock change the figures, so baselines recorded before no longer compare (baseline fingerprint).
#: 2: measurements in server time (``clock.py``): speed-up and host load no longer move them.
#: 3: a radix cache in the KV pool (every policy; lpm orders by it), decode reads only the decoders' context.
#: 4: a decode step that overflows the pool retracts only until the step fits once unlocked cache entries are
#:    evicted (a retracted request's cached prefix stays in the tree as evictable; it used to retract them all).
#: 5: prefill first whenever a prefill batch can be formed, as SGLang's scheduler (prefill and decode used to
#:    alternate).
#: 6: a request arriving at the instant a step begins joins the next one; an idle replica starts a step with the
#:    first request that arrives only (closed-loop followers and bursts used to join all at once); in process,
#:    the traffic is drawn from the plan's seed, as the client draws it (it was drawn from the noise seed, so
#:    every repeat of a configuration saw other requests).
#: 7: step times and KV capacity from aiconfigurator-core's measured SGLang kernel tables wherever it has them
#:    (``kernels.py``); the roofline only where it cannot price (``sim_pricing`` says which priced a run).
SIM_MODEL_VERSION = 7


@dataclass(frozen=True)
class GpuProfile:
    name: str
    memory_bytes: float
    peak_flops: float  # dense bf16
    hbm_bandwidth: float  # bytes/s
    link_bandwidth: float  # NVLink bytes/s per GPU, for all-reduce


GPUS: dict[str, GpuProfile] = {
    "h100": GpuProfile("h100", 80e9, 989e12, 3.35e12, 450e9),
    "h200": GpuProfile("h200", 141e9, 989e12, 4.8e12, 450e9),
    "a100-80g": GpuProfile("a100-80g", 80e9, 312e12, 2.0e12, 300e9),
    # Priced by aiconfigurator-core only (kernels.py); figures from its system specs (systems/*.yaml).
    "b200": GpuProfile("b200", 193.3e9, 2250e12, 7.7e12, 900e9),
    "b300": GpuProfile("b300", 288.4e9, 2250e12, 7.75e12, 900e9),
    "gb200": GpuProfile("gb200", 198.7e9, 2500e12, 8.0e12, 900e9),
    "gb300": GpuProfile("gb300", 298.0e9, 2500e12, 8.0e12, 900e9),
    "l40s": GpuProfile("l40s", 48.3e9, 362e12, 0.864e12, 64e9),
    "rtx-pro-6000": GpuProfile("rtx-pro-6000", 102.6e9, 468e12, 1.792e12, 64e9),
}


@dataclass(frozen=True)
class EngineConfig:
    """The flags that shape performance, resolved to concrete values (defaults filled in)."""

    model: ModelProfile
    gpu: GpuProfile
    tp: int = 1
    dp: int = 1  # replicas of the model, tp GPUs each
    ep: int = 1
    attention_dp: int = 1  # attention data-parallel ranks inside the tp group, a scheduler each (kernels only)
    num_gpus: int = 1
    mem_fraction_static: float = 0.835
    chunked_prefill_size: int = 8192  # <= 0: disabled
    max_prefill_tokens: int = 16384
    max_running_requests: int | None = None
    schedule_policy: str = "fcfs"
    schedule_conservativeness: float = 1.0
    cuda_graph_max_bs: int | None = None
    disable_cuda_graph: bool = False
    enable_mixed_chunk: bool = False
    disable_radix_cache: bool = False
    kv_cache_dtype: str = "auto"
    stream_interval: int = 1
    context_length: int | None = None
    slowdown: float = 1.0
    quantization: str | None = None
    pricing: Pricing | None = None  # None: the roofline (``kernels.choose_pricing`` picks)
    speculation: Speculation | None = None  # --speculative-algorithm (``speculative.py``); None: plain decode
    distortion: Distortion | None = None  # --sim-distortion (``distortion.py``), resolved for these flags

    @property
    def priced_by_kernels(self) -> bool:
        return self.pricing is not None and self.pricing.model == "kernels"

    @property
    def schedulers(self) -> int:
        """Schedulers the server runs: one per replica and attention data-parallel rank."""
        return self.dp * self.attention_dp

    @property
    def graph_max_bs(self) -> int:
        if self.cuda_graph_max_bs is not None:
            return self.cuda_graph_max_bs
        return 256 if self.tp < 4 else 512

    @property
    def context_len(self) -> int:
        return self.context_length or self.model.context_length


class StartupFailure(Exception):
    """The server cannot start; ``kind`` is ``kv_cache_oom``, ``oom`` or ``invalid_parallelism``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class MemoryPlan:
    max_total_num_tokens: int  # KV pool, per scheduler (dp replica or attention data-parallel rank)
    max_running_requests: int
    available_gpu_mem_gb: float  # what is left after the static pool, per GPU


_NOT_ENOUGH_MEMORY = "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static."


def _kernel_tokens(cfg: EngineConfig) -> int:
    """The KV pool for ``cfg`` from the library's weights and KV bytes per token (SGLang's static pool)."""
    from pytest_autotuner.sim.kernels import kernel_memory

    tokens = kernel_memory(cfg).kv_tokens(cfg.mem_fraction_static)
    if tokens <= 0:
        raise StartupFailure("kv_cache_oom", _NOT_ENOUGH_MEMORY)
    return tokens


# Memory outside the static pool: CUDA context + NCCL buffers + allocator slack (fits SGLang leaving
# ~0.835 as a safe default on 80 GB while 0.9+ becomes risky for the larger models / graph batch sizes).
_BASE_RESERVE = 3.0e9


def _runtime_reserve(cfg: EngineConfig) -> float:
    """Bytes per GPU that activations and CUDA graphs need outside mem-fraction-static."""
    m = cfg.model
    chunk = cfg.chunked_prefill_size if cfg.chunked_prefill_size > 0 else cfg.max_prefill_tokens
    # Prefill activations: MLP intermediate (gate+up) in bf16, plus logits of the last tokens.
    activations = chunk * (2 * m.intermediate_size + 4 * m.hidden_size) * 2 / cfg.tp
    graphs = 0.0
    if not cfg.disable_cuda_graph:
        # One graph per captured batch size; memory pool grows with the largest batch and the depth.
        graphs = 0.4e9 + cfg.graph_max_bs * m.num_layers * m.hidden_size * 16 / cfg.tp
    return _BASE_RESERVE + activations + graphs


def plan_memory(cfg: EngineConfig) -> MemoryPlan:
    """KV capacity and default max-running-requests; raises StartupFailure like SGLang would."""
    m = cfg.model
    if cfg.tp % cfg.attention_dp:
        raise StartupFailure(
            "invalid_parallelism",
            f"AssertionError: tp_size ({cfg.tp}) must be divisible by the attention dp size ({cfg.attention_dp})",
        )
    attention_tp = cfg.tp // cfg.attention_dp
    if m.num_heads % attention_tp:
        raise StartupFailure(
            "invalid_parallelism",
            f"Number of attention heads ({m.num_heads}) must be divisible by tensor parallel size ({attention_tp}).",
        )
    if cfg.ep > 1 and cfg.tp % cfg.ep:
        raise StartupFailure(
            "invalid_parallelism",
            f"AssertionError: tp_size ({cfg.tp}) must be divisible by ep_size ({cfg.ep})",
        )
    if cfg.tp * cfg.dp > cfg.num_gpus:
        raise StartupFailure(
            "invalid_parallelism",
            f"RuntimeError: CUDA error: invalid device ordinal (tp_size={cfg.tp} x dp_size={cfg.dp} needs "
            f"{cfg.tp * cfg.dp} GPUs, {cfg.num_gpus} visible)",
        )
    total = cfg.gpu.memory_bytes
    if cfg.priced_by_kernels:
        tokens = _kernel_tokens(cfg)
    else:
        kv_per_gpu = m.kv_bytes_per_token(cfg.kv_cache_dtype) / min(cfg.tp, m.num_kv_heads)
        budget = total * cfg.mem_fraction_static - m.weight_bytes / cfg.tp
        if budget <= 0:
            raise StartupFailure("kv_cache_oom", _NOT_ENOUGH_MEMORY)
        tokens = int(budget / kv_per_gpu)
    free = total * (1.0 - cfg.mem_fraction_static)
    need = _runtime_reserve(cfg)
    if need > free:
        raise StartupFailure(
            "oom",
            "Exception: Capture cuda graph failed: CUDA out of memory. Tried to allocate "
            f"{(need - free) / GIB + 0.25:.2f} GiB. GPU 0 has a total capacity of {total / GIB:.2f} GiB of "
            f"which {free / GIB:.2f} GiB is free. Possible solutions: 1. set --mem-fraction-static to a "
            "smaller value (e.g., 0.8 or 0.7) 2. set --cuda-graph-max-bs to a smaller value (e.g., 16) "
            "3. disable torch compile by not using --enable-torch-compile 4. disable CUDA graph by "
            "--disable-cuda-graph. (Not recommended. Huge performance loss)",
        )
    if cfg.distortion is not None:
        tokens = max(1, int(tokens * cfg.distortion.memory))
    default_mrr = int(min(max(tokens / cfg.context_len * 512, 2048), 4096, tokens / 2))
    # with attention data parallelism --max-running-requests is the server's: each rank runs its share
    mrr = max(1, cfg.max_running_requests // cfg.attention_dp) if cfg.max_running_requests else default_mrr
    return MemoryPlan(tokens, max(1, min(mrr, max(1, tokens // 2))), (free - need) / 1e9)


# Calibration knobs: GEMM efficiency ramps with tokens per step (fits ~55 ms TTFT for a 2k prompt on 8B/H100
# and ~4000 tok/s offline on the SGLang CI workload); bandwidth efficiency 0.8 as in sglang.md.
_PEAK_EFF = 0.65
_EFF_HALF_TOKENS = 128.0
_BW_EFF = 0.8
# Unchunked prefill batches beyond this many tokens lose GEMM/attention efficiency (activation working set
# spills out of L2 and the ragged attention kernel handles very unequal lengths poorly): this is what makes
# --chunked-prefill-size -1 slower, as in SGLang's CI thresholds (3800 vs 2600 tok/s).
_UNCHUNKED_EFF_TOKENS = 4096.0
_GRAPH_LAUNCH_S = 0.2e-3
_KERNEL_LAUNCH_S_PER_LAYER = 30e-6
_CPU_S_PER_REQUEST = 4e-6
_ALLREDUCE_LATENCY_S = 8e-6


class StepCost:
    """Seconds for one scheduler step on one replica (before noise); constants precomputed per config."""

    def __init__(self, cfg: EngineConfig) -> None:
        m, gpu, tp = cfg.model, cfg.gpu, cfg.tp
        self._flops_per_token = 2.0 * m.num_params / tp
        self._flops_per_pair = 4.0 * m.num_layers * m.hidden_size / tp
        self._peak = gpu.peak_flops * _PEAK_EFF
        self._unchunked = cfg.chunked_prefill_size <= 0
        self._bw = gpu.hbm_bandwidth * _BW_EFF
        self._weights_read = m.weight_bytes / tp
        self._kv_per_token = m.kv_bytes_per_token(cfg.kv_cache_dtype) / min(tp, m.num_kv_heads)
        self._comm_fixed = self._comm_per_token = 0.0
        if tp > 1:
            allreduces = 2 * m.num_layers
            self._comm_fixed = allreduces * _ALLREDUCE_LATENCY_S * (1 + math.log2(tp))
            self._comm_per_token = allreduces * 2 * (tp - 1) / tp * m.hidden_size * 2 / gpu.link_bandwidth
        self._graph_max_bs = -1 if cfg.disable_cuda_graph else cfg.graph_max_bs
        self._eager_launch = _KERNEL_LAUNCH_S_PER_LAYER * m.num_layers
        self._slowdown = cfg.slowdown

    def __call__(
        self,
        *,
        decode_batch: int,
        decode_context: int,
        prefill_tokens: int = 0,
        prefill_attention_pairs: float = 0.0,
        prefill_context: int = 0,
    ) -> float:
        """``decode_context``: summed context of the decoding requests (KV read per step);
        ``prefill_attention_pairs``: (query, key) pairs of the prefill chunks; ``prefill_context``: KV tokens
        the prefill reads or writes (cached prefix + chunk)."""
        tokens = decode_batch + prefill_tokens
        if tokens <= 0:
            return 0.0
        flops = self._flops_per_token * tokens + self._flops_per_pair * prefill_attention_pairs
        eff = tokens / (tokens + _EFF_HALF_TOKENS)
        if self._unchunked and prefill_tokens > _UNCHUNKED_EFF_TOKENS:
            eff /= 1.0 + (prefill_tokens - _UNCHUNKED_EFF_TOKENS) / _UNCHUNKED_EFF_TOKENS
        bytes_read = self._weights_read + self._kv_per_token * (decode_context + prefill_context)
        t_gpu = max(flops / (self._peak * eff), bytes_read / self._bw)
        t_comm = self._comm_fixed + self._comm_per_token * tokens if self._comm_fixed else 0.0
        graph = prefill_tokens == 0 and decode_batch <= self._graph_max_bs
        t_launch = _GRAPH_LAUNCH_S if graph else self._eager_launch
        t_cpu = _CPU_S_PER_REQUEST * (decode_batch + 1)
        return (t_gpu + t_comm + t_launch + t_cpu) * self._slowdown


def make_step_cost(cfg: EngineConfig) -> Any:
    """The step-time model that prices ``cfg``: the library's kernel tables, or the roofline (``StepCost``)."""
    if cfg.priced_by_kernels:
        from pytest_autotuner.sim.kernels import KernelStepCost

        return KernelStepCost(cfg)
    return StepCost(cfg)


def step_time(cfg: EngineConfig, **work: Any) -> float:
    """One step's seconds for ``cfg`` (see StepCost for the keyword arguments); convenient, not fast."""
    return float(make_step_cost(cfg)(**work))
