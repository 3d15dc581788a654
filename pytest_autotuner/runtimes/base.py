"""The Runtime protocol: launch a server for a configuration, hand out its endpoint, always tear down."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Endpoint"]


@dataclass(frozen=True)
class Endpoint:
    """A ready server: where to send requests and how to read its clock."""

    base_url: str  # e.g. http://127.0.0.1:41234
    model_name: str  # served model name for the "model" field of requests
    time_scale: float = 1.0  # server seconds per wall second (the simulator's speed-up; 1 for real servers)
    server_info: dict[str, Any] = field(default_factory=dict)
