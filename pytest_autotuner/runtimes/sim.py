"""The built-in simulator as a runtime: ``python -m pytest_autotuner.sim`` as a child process."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pytest_autotuner.runtimes.process import ProcessRuntime

if TYPE_CHECKING:
    from pytest_autotuner.core.spec import SimulatorSettings

__all__ = ["SimRuntime"]


class SimRuntime(ProcessRuntime):
    """Same process handling as the process runtime, with the simulator as the server."""

    kind = "sim"

    def __init__(self, *, model: str, settings: SimulatorSettings, seed: int, readiness_timeout: float = 900.0) -> None:
        super().__init__(model=model, readiness_timeout=readiness_timeout, python=sys.executable)
        self.settings = settings
        self.seed = seed
        self._launches = 0

    server_module = "pytest_autotuner.sim"

    def own_flags(self, devices: tuple[int, ...]) -> list[str]:
        s = self.settings
        self._launches += 1  # each launch gets its own noise draw, as a real rerun would
        visible = len(devices) if devices else s.num_gpus  # like CUDA_VISIBLE_DEVICES: only its own GPUs
        sim_flags = [
            "--sim-gpu",
            s.gpu,
            "--sim-num-gpus",
            str(visible),
            "--sim-speedup",
            str(s.speedup),
            "--sim-startup-scale",
            str(s.startup_scale),
            "--sim-seed",
            str(self.seed * 100_003 + self._launches),
            "--sim-launched-at",  # the startup the simulator models counts from now, not from its imports
            f"{time.monotonic():.6f}",
        ]
        if s.noise is not None:
            sim_flags += ["--sim-noise", str(s.noise)]
        return [*sim_flags, *s.extra_args]

    def time_scale(self, server_info: Mapping[str, object]) -> float:
        value = server_info.get("sim_speedup", self.settings.speedup)
        return float(value) if isinstance(value, (int, float, str)) else self.settings.speedup
