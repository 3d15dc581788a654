"""Runtimes launch one server per configuration: the built-in simulator, a local process, or Docker.

A session builds one host (``create_host``), prepares it once, launches a server per trial and closes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_autotuner.core.spec.runtime_kinds import RUNTIME_KINDS
from pytest_autotuner.runtimes.base import Endpoint, RuntimeHost, RuntimeUnavailable, Server, server_argv

if TYPE_CHECKING:
    from pytest_autotuner.core.spec.sglang_args import ArgumentTable
    from pytest_autotuner.core.spec.task_spec import TaskSpec

__all__ = [
    "RUNTIME_KINDS",
    "Endpoint",
    "RuntimeHost",
    "RuntimeUnavailable",
    "Server",
    "create_host",
    "flag_problems",
    "server_argv",
]


def create_host(kind: str, spec: TaskSpec, *, seed: int) -> RuntimeHost:
    """The runtime ``kind`` configured from the spec, not prepared yet (``prepare()`` does the I/O)."""
    if spec.model is None:
        raise RuntimeUnavailable(
            "`model.id_or_path` is not set in the spec; a server needs a model to launch "
            '(e.g. "model": {"id_or_path": "meta-llama/Llama-3.2-1B-Instruct"})'
        )
    model = spec.model.id_or_path
    readiness = spec.optimization.timeout_per_iteration
    if kind == "sim":
        from pytest_autotuner.runtimes.sim import SimHost

        images = tuple(i for i in (spec.docker.image, spec.runtime_image_tag) if i)
        return SimHost(model=model, settings=spec.simulator, seed=seed, readiness_timeout=readiness,
                       image_references=images)  # fmt: skip
    if kind == "process":
        from pytest_autotuner.runtimes.process import ProcessHost

        return ProcessHost(model=model, readiness_timeout=readiness)
    if kind == "docker":
        try:
            from pytest_autotuner.runtimes.docker import DockerHost
        except ImportError as err:
            raise RuntimeUnavailable(f"the docker runtime is not available: {err}") from None
        return DockerHost.from_spec(spec, readiness_timeout=readiness)
    raise RuntimeUnavailable(f"unknown runtime {kind!r}; use one of: {', '.join(RUNTIME_KINDS)}")


def flag_problems(spec: TaskSpec, kind: str, table: ArgumentTable) -> str:
    """The preflight's verdict on a spec: "" when every tuned parameter, initial configuration and extra argument
    fits ``table``, else one message listing each problem (no trial should run)."""
    from pytest_autotuner.core.spec.sglang_args import check_spec_flags

    parameters: dict[str, object] = dict(spec.parameters)
    for config in spec.initial_configs:
        for name, value in config.items():
            known = parameters.get(name)
            parameters[name] = [*known, value] if isinstance(known, list) else [value] if known is None else known
    extra = spec.simulator.extra_args if kind == "sim" else spec.docker.extra_args if kind == "docker" else []
    problems = list(dict.fromkeys(check_spec_flags(table, parameters, extra)))
    if not problems:
        return ""
    head = f"{spec.task_name}: {len(problems)} flag problem(s) against {table.described()} ({table.source})"
    return "\n".join([f"{head}; no trial was run", *(f"  - {p}" for p in problems)])
