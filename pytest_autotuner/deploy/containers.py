"""``docker run`` and Compose for a configuration: the container the Docker runtime measured, as a service."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pytest_autotuner.deploy.launch import (
    CONTAINER_HF_CACHE,
    CONTAINER_MODEL_DIR,
    container_port,
    deploy_image,
    gpu_count,
    launch_argv,
    resource_name,
    shell_line,
    spec_sglang_version,
)

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.trial import ParamValue
    from pytest_autotuner.core.spec.task_spec import TaskSpec

__all__ = ["compose_yaml", "docker_run_script", "health_command", "volume_binds"]

HOST_HF_CACHE = "${HOME}/.cache/huggingface"
TOKEN_ENV = "HF_TOKEN"  #: passed through from the environment that starts the server, never written


def health_command(port: int) -> list[str]:
    """What the container's health check runs: GET /health, the endpoint the runtimes wait on (python3, which
    every SGLang image has, rather than curl, which not every one does)."""
    script = f'import urllib.request as u; u.urlopen("http://localhost:{port}/health", timeout=5)'
    return ["python3", "-c", script]


def volume_binds(spec: TaskSpec) -> list[tuple[str, str, str]]:
    """(host path, container path, mode) as the Docker runtime mounts them: the model folder read-only at /model,
    else the host's HF cache; then ``docker.volumes``. ``${HOME}`` stays for the shell or Compose to expand."""
    model = spec.model.id_or_path if spec.model is not None else ""
    binds: list[tuple[str, str, str]] = []
    if model and Path(model).exists():
        binds.append((str(Path(model).resolve()), CONTAINER_MODEL_DIR, "ro"))
    else:
        binds.append((spec.docker.hf_cache or HOST_HF_CACHE, CONTAINER_HF_CACHE, "rw"))
    for host, target in spec.docker.volumes.items():
        path, _, mode = target.partition(":")
        binds.append((host, path, mode or "rw"))
    return binds


def _host_path(path: str) -> str:
    """A host path for the shell: quoted, but ``${HOME}`` and a leading ``~`` left for it to expand."""
    if path.startswith("${HOME}"):
        return '"${HOME}"' + shlex.quote(path[len("${HOME}") :]) if path != "${HOME}" else '"${HOME}"'
    if path.startswith("~/"):
        return '"${HOME}"' + shlex.quote(path[1:])
    return shlex.quote(path)


def _double_quoted(text: str) -> str:
    """``text`` as one double-quoted shell word (readable where it holds single quotes)."""
    return '"' + re.sub(r'([\\"$`])', r"\\\1", text) + '"'


def _gpus_option(spec: TaskSpec, params: Mapping[str, ParamValue]) -> str | None:
    """``--gpus`` as the Docker runtime requests them (docker.gpus; auto: tp x dp x pp of them)."""
    gpus = spec.docker.gpus
    if gpus == "none" or gpus == 0:
        return None
    if gpus == "all":
        return "all"
    if isinstance(gpus, list):
        return f'"device={",".join(str(i) for i in gpus)}"'
    return str(gpus if isinstance(gpus, int) else gpu_count(params))


def docker_run_script(spec: TaskSpec, params: Mapping[str, ParamValue]) -> str:
    """A POSIX shell script: ``docker run`` of the configuration, detached, port published, health-checked."""
    port = container_port(spec)
    docker = spec.docker
    options: list[str] = ["docker run -d", f"--name {shlex.quote(resource_name(spec))}"]
    gpus = _gpus_option(spec, params)
    if gpus:
        options.append(f"--gpus {gpus}")
    if docker.shm_size:
        options.append(f"--shm-size {shlex.quote(docker.shm_size)}")
    if docker.ipc_mode:
        options.append(f"--ipc {shlex.quote(docker.ipc_mode)}")
    if docker.init:
        options.append("--init")
    options.append(f"-p {port}:{port}")
    for host, target, mode in volume_binds(spec):
        options.append(f"-v {_host_path(host)}:{shlex.quote(f'{target}:{mode}')}")
    for name, value in docker.env.items():
        options.append(f"-e {shlex.quote(f'{name}={value}')}")
    if TOKEN_ENV not in docker.env:
        options.append(f"-e {TOKEN_ENV}")
    options.append(f"--health-cmd {_double_quoted(shlex.join(health_command(port)))}")
    options += ["--health-interval 10s", "--health-timeout 5s", "--health-retries 3",
                f"--health-start-period {int(spec.optimization.timeout_per_iteration)}s"]  # fmt: skip
    options.append(shlex.quote(deploy_image(spec)))
    command = shell_line(launch_argv(spec, params), indent="  ")
    return (
        "#!/bin/sh\n"
        f"# {spec.task_name}: the confirmed best configuration in {deploy_image(spec)}, written by pytest-autotuner;\n"
        f"# its flags were checked against SGLang {spec_sglang_version(spec)}'s argument table.\n"
        "# HF_TOKEN is passed through from this shell's environment (a public model needs none).\n"
        "set -eu\n" + " \\\n  ".join(options) + " \\\n  " + command + "\n"
    )


def compose_yaml(spec: TaskSpec, params: Mapping[str, ParamValue]) -> str:
    """A Compose file with one service: the same container as ``docker run``."""
    port = container_port(spec)
    docker = spec.docker
    service: dict[str, Any] = {
        "image": deploy_image(spec),
        "command": launch_argv(spec, params),
        "ports": [f"{port}:{port}"],
    }
    if docker.shm_size:
        service["shm_size"] = docker.shm_size
    if docker.ipc_mode:
        service["ipc"] = docker.ipc_mode
    if docker.init:
        service["init"] = True
    service["volumes"] = [f"{host}:{target}:{mode}" for host, target, mode in volume_binds(spec)]
    environment = [f"{name}={value}" for name, value in docker.env.items()]
    service["environment"] = environment + ([] if TOKEN_ENV in docker.env else [TOKEN_ENV])
    gpus = _gpus_option(spec, params)
    if gpus:
        device: dict[str, Any] = {"driver": "nvidia", "capabilities": ["gpu"]}
        if gpus == "all":
            device["count"] = "all"
        elif gpus.startswith('"device='):
            device["device_ids"] = gpus.strip('"').removeprefix("device=").split(",")
        else:
            device["count"] = int(gpus)
        service["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    service["healthcheck"] = {
        "test": ["CMD", *health_command(port)],
        "interval": "10s",
        "timeout": "5s",
        "retries": 3,
        "start_period": f"{int(spec.optimization.timeout_per_iteration)}s",
    }
    header = (
        f"# {spec.task_name}: the confirmed best configuration, written by pytest-autotuner; its flags were\n"
        f"# checked against SGLang {spec_sglang_version(spec)}'s argument table.\n"
    )
    return header + yaml.safe_dump({"services": {resource_name(spec): service}}, sort_keys=False, width=120)
