"""The runtimes a spec can run on, listed once: the spec's ``runtime`` field, ``--autotune-runtime`` and the
runtimes package all read this (a module of its own so that the plugin reads it without importing pydantic)."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["RUNTIME_KINDS", "RuntimeKind"]

RuntimeKind = Literal["docker", "process", "sim"]
RUNTIME_KINDS: tuple[RuntimeKind, ...] = get_args(RuntimeKind)
