"""The built-in simulator as a runtime: ``python -m pytest_autotuner.sim`` as a child process."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pytest_autotuner.core.spec.sglang_args import ArgumentTable, imitated_version
from pytest_autotuner.runtimes.process import ProcessHost

if TYPE_CHECKING:
    from pytest_autotuner.core.spec.runtime_settings import SimulatorSettings

__all__ = ["SimHost", "sim_seed"]


def sim_seed(session_seed: int, launch: int) -> int:
    """The simulator's noise seed for a session's n-th launch (1-based): its own draw, as a real rerun would.

    Deterministic in (seed, n), so a session that launches in the same order measures the same numbers.
    """
    return (session_seed * 1000 + launch) * 100_003 + 1


class SimHost(ProcessHost):
    """Same process handling as the process runtime, with the simulator as the server."""

    kind = "sim"
    server_module = "pytest_autotuner.sim"

    def __init__(
        self,
        *,
        model: str,
        settings: SimulatorSettings,
        seed: int,
        readiness_timeout: float = 900.0,
        image_references: tuple[str, ...] = (),
    ) -> None:
        """``image_references``: the images the spec names; a shipped version in their tag is the one imitated
        when ``simulator.sglang_version`` is not set (the seed's v0.5.2-cu126 -> 0.5.2)."""
        super().__init__(model=model, readiness_timeout=readiness_timeout, python=sys.executable)
        self.settings = settings
        self.seed = seed
        self.sglang_version = imitated_version(settings.sglang_version, image_references)

    def argument_table(self) -> ArgumentTable:
        """The preflight answers from the shipped table of the imitated version (plus ``--sim-*``): no process."""
        from pytest_autotuner.sim.cli import sim_table

        if self._table is None:
            self._table = sim_table(self.sglang_version)
        return self._table

    def fingerprint_facts(self) -> dict[str, str]:
        return {**super().fingerprint_facts(), "sglang_version": f"{self.sglang_version}-sim"}

    def own_flags(self, devices: tuple[int, ...], launch: int) -> list[str]:
        s = self.settings
        visible = len(devices) if devices else s.num_gpus  # like CUDA_VISIBLE_DEVICES: only its own GPUs
        sim_flags = [
            "--sim-sglang-version",
            self.sglang_version,
            "--sim-gpu",
            s.gpu,
            "--sim-num-gpus",
            str(visible),
            "--sim-speedup",
            str(s.speedup),
            "--sim-startup-scale",
            str(s.startup_scale),
            "--sim-seed",
            str(sim_seed(self.seed, launch)),
            "--sim-launched-at",  # the startup the simulator models counts from now, not from its imports
            f"{time.monotonic():.6f}",
        ]
        if s.noise is not None:
            sim_flags += ["--sim-noise", str(s.noise)]
        if s.tokenizer_path is not None:
            sim_flags += ["--sim-tokenizer", s.tokenizer_path]
        if s.speculative_acceptance:
            sim_flags += ["--sim-spec-acceptance", ",".join(f"{rate:g}" for rate in s.speculative_acceptance)]
        return [*sim_flags, *s.extra_args]

    def time_scale(self, server_info: Mapping[str, object]) -> float:
        value = server_info.get("sim_speedup", self.settings.speedup)
        return float(value) if isinstance(value, (int, float, str)) else self.settings.speedup
