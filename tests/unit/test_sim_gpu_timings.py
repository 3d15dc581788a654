"""The simulator's step times against forward passes timed on real GPUs (benchmarks/gpu_timings/, written by
benchmarks/gpu_step_timing.py on an H100 and an H200, 2026-11-26).

What is measured is not SGLang: prefill is Hugging Face's unfused eager forward and decode an engine-style step
without SGLang's fused kernels, so both are upper bounds and the simulator may be faster, but not by much, and
never slower. What must hold tightly is the shape: how a step's time grows with batch and context. That decides
which configuration wins, and a constant off by a few percent does not.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TIMINGS = sorted((BENCHMARKS / "gpu_timings").glob("*.json"))


def _timing_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_step_timing", BENCHMARKS / "gpu_step_timing.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_step_timing", module)
    spec.loader.exec_module(module)
    return module


timing = _timing_module()


def test_timings_for_the_h100_and_h200_profiles_are_committed() -> None:
    gpus = {json.loads(path.read_text())["gpu"] for path in TIMINGS}
    assert any("H100" in gpu for gpu in gpus) and any("H200" in gpu for gpu in gpus), gpus


@pytest.mark.parametrize("path", TIMINGS, ids=[p.stem for p in TIMINGS])
def test_decode_step_is_close_to_measured_and_scales_like_it(path: Path) -> None:
    data = json.loads(path.read_text())
    cost = timing.simulated_cost(data)
    ratios = {
        (row["batch"], row["context"]): timing.simulated_decode_ms(cost, row["batch"], row["context"]) / row["graph_ms"]
        for row in data["decode"]
    }
    assert len(ratios) >= 8
    # within 25% below the unfused step (fused kernels are faster), never above it
    assert all(0.75 <= r <= 1.02 for r in ratios.values()), ratios
    # batch 1 to 256 and context 1k to 8k: the same ratio everywhere, so the simulator ranks shapes as the GPU does
    assert max(ratios.values()) - min(ratios.values()) <= 0.08, ratios


@pytest.mark.parametrize("path", TIMINGS, ids=[p.stem for p in TIMINGS])
def test_prefill_is_close_to_measured_where_compute_bound(path: Path) -> None:
    data = json.loads(path.read_text())
    cost = timing.simulated_cost(data)
    # below ~1k tokens Hugging Face's eager forward is bound by Python launching kernels, not by the GPU
    rows = [row for row in data["prefill"] if row["tokens"] >= 1024]
    ratios = {row["tokens"]: timing.simulated_prefill_ms(cost, row["tokens"]) / row["ms"] for row in rows}
    assert len(ratios) >= 4
    assert all(0.8 <= r <= 1.02 for r in ratios.values()), ratios
