"""What to run against one server: the cells of a benchmark and their limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_autotuner.core.scenarios import Scenario

__all__ = ["BenchmarkPlan"]


@dataclass(frozen=True)
class BenchmarkPlan:
    """Scenarios x loads with their stop conditions; times are in server seconds (simulated for the sim)."""

    scenarios: tuple[Scenario, ...]
    concurrencies: tuple[int, ...]
    max_requests: int = 100
    max_time: float = 30.0
    request_rates: tuple[float, ...] = ()  # open loop cells (Poisson arrivals), in addition to closed loop
    warmup_requests: int = 2
    additional_params: Mapping[str, Any] = field(default_factory=dict)
    api: Literal["chat", "completions"] = "chat"
    seed: int = 0
    request_timeout: float = 120.0
    max_error_rate: float = 0.1  # a cell with more failed requests fails the trial
    min_completed: int | None = None  # a cell with fewer finished requests stalls the trial; None: half of those sent
    tokenizer: str | None = None  # local tokenizer directory for exact prompt lengths

    def cells(self) -> list[tuple[Scenario, int, float | None]]:
        """(scenario, concurrency, request_rate) of every cell, closed loop first."""
        out: list[tuple[Scenario, int, float | None]] = [
            (s, c, None) for s in self.scenarios for c in self.concurrencies
        ]
        out += [(s, 0, r) for s in self.scenarios for r in self.request_rates]
        return out
