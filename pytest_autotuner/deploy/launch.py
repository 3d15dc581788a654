"""The server's command line for a configuration, as the deploy files run it, and its check against SGLang's
argument table of the spec's version."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_autotuner.core.search.gpu_pool import gpus_needed
from pytest_autotuner.core.spec.sglang_args import check_argv, imitated_version
from pytest_autotuner.runtimes.base import server_argv
from pytest_autotuner.sglang_tables import shipped_table

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.trial import ParamValue
    from pytest_autotuner.core.spec.task_spec import TaskSpec

__all__ = [
    "CONTAINER_HF_CACHE",
    "CONTAINER_MODEL_DIR",
    "SERVER_MODULE",
    "container_port",
    "deploy_image",
    "launch_argv",
    "launch_problems",
    "resource_name",
    "server_flags",
    "shell_line",
    "spec_sglang_version",
]

SERVER_MODULE = "sglang.launch_server"
# the Docker runtime's mount points (runtimes/docker.py), so a container deploys as it was measured
CONTAINER_MODEL_DIR = "/model"
CONTAINER_HF_CACHE = "/root/.cache/huggingface"


def spec_sglang_version(spec: TaskSpec) -> str:
    """The SGLang release the spec names (``simulator.sglang_version``, else its image tag's, else the newest
    shipped table): the argument table its deploy command is checked against."""
    images = tuple(i for i in (spec.docker.image, spec.runtime_image_tag) if i)
    return imitated_version(spec.simulator.sglang_version, images)


def deploy_image(spec: TaskSpec) -> str:
    """The image the Docker runtime runs: ``docker.image``, else the engine's public image at the spec's tag."""
    from pytest_autotuner.runtimes.docker_spec import default_image

    return spec.docker.image or default_image(spec.base_runtime, spec.runtime_image_tag)


def container_port(spec: TaskSpec) -> int:
    """The server's port inside the container (``docker.container_port``, else SGLang's 30000)."""
    return spec.docker.container_port or 30000


def resource_name(spec: TaskSpec) -> str:
    """``deploy.name``, else the task name as a DNS-1123 label (Kubernetes and Compose names)."""
    if spec.deploy.name:
        return spec.deploy.name
    name = re.sub(r"[^a-z0-9-]+", "-", spec.task_name.lower()).strip("-")[:63].strip("-")
    return name if name and name[0].isalpha() else f"sglang-{name}".strip("-")[:63]


def _model(spec: TaskSpec, in_container: bool) -> str:
    model = spec.model.id_or_path if spec.model is not None else ""
    if in_container and model and Path(model).exists():
        return CONTAINER_MODEL_DIR  # a local model folder is mounted there, as the Docker runtime does
    return model


def server_flags(spec: TaskSpec, params: Mapping[str, ParamValue]) -> list[str]:
    """The configuration's flags, in the order they are passed: the parameters, then ``docker.extra_args``."""
    return [*server_argv(params), *spec.docker.extra_args]


def launch_argv(spec: TaskSpec, params: Mapping[str, ParamValue], *, in_container: bool = True) -> list[str]:
    """``python3 -m sglang.launch_server --model-path ... --host 0.0.0.0 --port ... <flags>`` as a list."""
    head = ["python3", "-m", SERVER_MODULE, "--model-path", _model(spec, in_container), "--host", "0.0.0.0",
            "--port", str(container_port(spec))]  # fmt: skip
    return [*head, *server_flags(spec, params)]


def shell_line(argv: Sequence[str], *, indent: str = "  ") -> str:
    """``argv`` quoted for a POSIX shell, one option (with its values) per continued line."""
    groups: list[list[str]] = []
    for token in argv:
        if not groups or token.startswith("--"):
            groups.append([token])
        else:
            groups[-1].append(token)
    lines = [" ".join(shlex.quote(t) for t in group) for group in groups]
    return (" \\\n" + indent).join(lines)


def launch_problems(spec: TaskSpec, params: Mapping[str, ParamValue]) -> list[str]:
    """Problems of the deploy command's flags against the shipped argument table of the spec's SGLang version
    (the preflight's check); [] when every flag fits."""
    table = shipped_table(spec_sglang_version(spec))
    return check_argv(table, server_flags(spec, params))


def gpu_count(params: Mapping[str, ParamValue]) -> int:
    """GPUs one server of the configuration uses: tp-size x dp-size x pp-size."""
    return gpus_needed(params)
