"""The runner's GPUs: device ids (spec, CUDA_VISIBLE_DEVICES or nvidia-smi) and their memory."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_autotuner.core.spec import TaskSpec

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
        from pytest_autotuner.core.sglang_defaults import GPU_MEMORY_MIB

        return GPU_MEMORY_MIB[spec.simulator.gpu]
    rows = _query_gpus("index", "memory.total") if ids else None
    try:
        sizes = {int(row[0]): float(row[1]) for row in rows or []}
    except (ValueError, IndexError):  # not the output asked for
        return None
    known = [sizes[i] for i in ids if i in sizes]
    return min(known) if known else None
