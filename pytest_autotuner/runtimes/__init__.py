"""Runtimes launch one server per configuration: the built-in simulator, a local process, or Docker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_autotuner.runtimes.base import Endpoint, Runtime, server_argv

if TYPE_CHECKING:
    from pytest_autotuner.core.spec import TaskSpec

__all__ = ["RUNTIME_KINDS", "Endpoint", "Runtime", "RuntimeUnavailable", "create_runtime", "server_argv"]

RUNTIME_KINDS = ("docker", "process", "sim")


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot be used on this machine (no Docker engine, no SGLang, ...)."""


def create_runtime(kind: str, spec: TaskSpec, *, seed: int) -> Runtime:
    """The runtime ``kind`` configured from the spec."""
    if spec.model is None:
        raise RuntimeUnavailable(
            "`model.id_or_path` is not set in the spec; a server needs a model to launch "
            '(e.g. "model": {"id_or_path": "meta-llama/Llama-3.2-1B-Instruct"})'
        )
    model = spec.model.id_or_path
    readiness = spec.optimization.timeout_per_iteration
    if kind == "sim":
        from pytest_autotuner.runtimes.sim import SimRuntime

        return SimRuntime(model=model, settings=spec.simulator, seed=seed, readiness_timeout=readiness)
    if kind == "process":
        from pytest_autotuner.runtimes.process import ProcessRuntime

        return ProcessRuntime(model=model, readiness_timeout=readiness)
    if kind == "docker":
        try:
            from pytest_autotuner.runtimes.docker import DockerRuntime
        except ImportError as err:
            raise RuntimeUnavailable(f"the docker runtime is not available: {err}") from None
        return DockerRuntime.from_spec(spec, readiness_timeout=readiness)
    raise RuntimeUnavailable(f"unknown runtime {kind!r}; use one of: {', '.join(RUNTIME_KINDS)}")
