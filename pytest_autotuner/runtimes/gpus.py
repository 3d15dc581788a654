"""The runner's GPUs: device ids (spec, CUDA_VISIBLE_DEVICES or nvidia-smi) and their memory."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_autotuner.core.spec.task_spec import TaskSpec

__all__ = ["detect_gpus", "gpu_memory_mib"]


def detect_gpus(spec: TaskSpec, runtime: str, env: Mapping[str, str] | None = None) -> list[int]:
    """Device ids this runner may use: the spec's ``gpus``, the simulated host, CUDA_VISIBLE_DEVICES or nvidia-smi.

    An empty list means no GPU is known (CPU servers, or a docker spec with ``gpus: none``).
    """
    env = os.environ if env is None else env
    if spec.gpus:
        return list(spec.gpus)
    if runtime == "sim":
        return list(range(spec.simulator.num_gpus))
    if runtime == "docker" and spec.docker.gpus in ("none", 0):
        return []
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(part) for part in visible.split(",") if part.strip().isdigit()]
    rows = _query_gpus("index")
    return [int(row[0]) for row in rows or [] if row[0].isdigit()]


def _query_gpus(*fields: str) -> list[list[str]] | None:
    """``nvidia-smi --query-gpu`` rows of ``fields`` (no header, no units); None without a working nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return [[cell.strip() for cell in line.split(",")] for line in out.stdout.splitlines() if line.strip()]


def gpu_memory_mib(spec: TaskSpec, runtime: str, ids: list[int]) -> float | None:
    """Total memory of the smallest of the GPUs ``ids``, in MiB, as SGLang sees it (it sizes some defaults by it);
    the simulated GPU's for the simulator; None when unknown (no GPU, or no nvidia-smi)."""
    if runtime == "sim":
        from pytest_autotuner.core.search.sglang_defaults import GPU_MEMORY_MIB

        return GPU_MEMORY_MIB[spec.simulator.gpu]
    rows = _query_gpus("index", "memory.total") if ids else None
    try:
        sizes = {int(row[0]): float(row[1]) for row in rows or []}
    except (ValueError, IndexError):  # not the output asked for
        return None
    known = [sizes[i] for i in ids if i in sizes]
    return min(known) if known else None


#: nvidia-smi's GPU names -> the simulator's GPUs (``simulator.gpu``), most specific first; matched on the name
#: with spaces and dashes removed, case-insensitive (e.g. "NVIDIA H100 80GB HBM3" -> h100)
_GPU_NAMES: tuple[tuple[str, str], ...] = (
    ("gb300", "gb300"),
    ("gb200", "gb200"),
    ("b300", "b300"),
    ("b200", "b200"),
    ("h200", "h200"),
    ("h100", "h100"),
    ("h800", "h100"),  # the H100's export variant: same SMs and HBM, less NVLink
    ("a10080gb", "a100-80g"),
    ("a100sxm480gb", "a100-80g"),
    ("l40s", "l40s"),
    ("rtxpro6000", "rtx-pro-6000"),
)


def simulated_gpu(name: str) -> str | None:
    """The simulator's GPU for an nvidia-smi name, or None when it has none like it."""
    key = name.lower().replace(" ", "").replace("-", "").replace("_", "")
    return next((gpu for part, gpu in _GPU_NAMES if part in key), None)


def runner_gpu(ids: list[int]) -> tuple[str | None, str]:
    """(the simulator's GPU for the first of ``ids``, its nvidia-smi name): (None, why) when unknown."""
    rows = _query_gpus("index", "name") if ids else None
    names = {row[0]: row[1] for row in rows or [] if len(row) >= 2}
    name = names.get(str(ids[0])) if ids else None
    if name is None:
        return None, "no GPU name from nvidia-smi"
    gpu = simulated_gpu(name)
    return gpu, name
