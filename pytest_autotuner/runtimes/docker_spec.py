"""What one trial's container is: image, argv, GPUs, environment, mounts and labels (``ContainerSpec``).

The keyword arguments of ``client.containers.create`` for a configuration, and nothing else: ``docker.py`` starts,
watches and removes containers; ``docker_image.py`` makes sure the image is there; ``docker_preflight.py`` reads
its ``--help``. The labels are how a session tells its containers from those of other sessions (``docker.py``'s
docstring: leftovers).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.measure.trial import FailureClass, ParamValue, TrialFailure
from pytest_autotuner.core.search.gpu_pool import gpus_needed
from pytest_autotuner.runtimes.base import SECRET_ENV_VARS, server_argv

if TYPE_CHECKING:
    from pytest_autotuner.core.spec.runtime_settings import DockerSettings

__all__ = [
    "LABEL_HOST",
    "LABEL_PID",
    "LABEL_RUNTIME",
    "LABEL_SESSION",
    "LABEL_TASK",
    "LABEL_TRIAL",
    "SESSION_ID",
    "ContainerSpec",
    "default_image",
]

LABEL_SESSION = "pytest-autotuner.session"
LABEL_TRIAL = "pytest-autotuner.trial"
LABEL_TASK = "pytest-autotuner.task"
LABEL_HOST = "pytest-autotuner.host"
LABEL_PID = "pytest-autotuner.pid"
LABEL_RUNTIME = "pytest-autotuner.runtime"

#: This process's session id: the label that tells its containers from those of other sessions.
SESSION_ID = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

_CONTAINER_MODEL_DIR = "/model"
_CONTAINER_HF_CACHE = "/root/.cache/huggingface"


def default_image(base_runtime: str, tag: str) -> str:
    """The public image of a serving engine at ``tag``."""
    repo = "vllm/vllm-openai" if base_runtime == "vllm" else "lmsysorg/sglang"
    return f"{repo}:{tag}"


def _safe_name(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", text).strip("-.")[:60] or "x"


@dataclass
class ContainerSpec:
    """The containers of one session: the model, the ``docker`` settings, the image and who owns them."""

    model: str
    settings: DockerSettings
    image: str
    base_runtime: str = "sglang"
    task: str = ""
    gpu_ids: list[int] | None = None  # the spec's ``gpus`` list
    session_id: str = SESSION_ID
    host_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # this DockerHost's containers
    host_env: dict[str, str] = field(default_factory=dict)

    @property
    def container_port(self) -> int:
        if self.settings.container_port is not None:
            return self.settings.container_port
        return 8000 if self.base_runtime == "vllm" else 30000

    def model_path_in_container(self) -> str:
        """``/model`` for a local model directory (mounted there), else the hub id."""
        return _CONTAINER_MODEL_DIR if Path(self.model).exists() else self.model

    def command(self, params: Mapping[str, ParamValue]) -> list[str]:
        """The server's argv inside the container (a list: never a shell string)."""
        port = str(self.container_port)
        model = self.model_path_in_container()
        if self.base_runtime == "vllm":  # the vllm image's entrypoint is the OpenAI server
            head = ["--model", model, "--host", "0.0.0.0", "--port", port]
        else:
            head = ["python3", "-m", "sglang.launch_server", "--model-path", model, "--host", "0.0.0.0",
                    "--port", port]  # fmt: skip
        return [*head, *server_argv(params), *self.settings.extra_args]

    def device_ids(self, params: Mapping[str, ParamValue], assigned: tuple[int, ...] = ()) -> list[str] | None:
        """GPU ids for the container ([] = no GPUs, None = all GPUs); ``assigned`` ids come from the GPU pool."""
        gpus = self.settings.gpus
        if assigned and gpus == "auto":
            return [str(i) for i in assigned]
        if gpus == "none" or gpus == 0:
            return []
        if gpus == "all":
            return None
        if isinstance(gpus, list):
            return [str(i) for i in gpus]
        needed = gpus if isinstance(gpus, int) else gpus_needed(params)
        pool = self.gpu_ids if self.gpu_ids else list(range(needed))
        if needed > len(pool):
            raise TrialFailure(
                FailureClass.INFEASIBLE,
                f"the configuration needs {needed} GPUs (tp-size x dp-size) but the spec's gpus list has "
                f"{len(pool)} ({pool}); lower tp-size/dp-size or list more GPUs in `gpus`",
            )
        return [str(i) for i in pool[:needed]]

    def environment(self) -> dict[str, str]:
        """The container's environment: ``docker.env`` plus the host's HF tokens, passed through."""
        env = dict(self.settings.env)
        for name in SECRET_ENV_VARS:
            if self.host_env.get(name) and name not in env:
                env[name] = self.host_env[name]
        return env

    def hf_cache_dir(self) -> Path:
        if self.settings.hf_cache:
            return Path(self.settings.hf_cache).expanduser()
        if self.host_env.get("HF_HOME"):
            return Path(self.host_env["HF_HOME"]).expanduser()
        return Path.home() / ".cache" / "huggingface"

    def volumes(self) -> dict[str, dict[str, str]]:
        """Bind mounts: the model (read-only at /model) or the HF cache, plus ``docker.volumes``."""
        binds: dict[str, dict[str, str]] = {}
        model = Path(self.model)
        if model.exists():
            binds[str(model.resolve())] = {"bind": _CONTAINER_MODEL_DIR, "mode": "ro"}
        else:
            cache = self.hf_cache_dir()
            with contextlib.suppress(OSError):
                cache.mkdir(parents=True, exist_ok=True)  # downloads persist across trials
            binds[str(cache)] = {"bind": _CONTAINER_HF_CACHE, "mode": "rw"}
        for host, target in self.settings.volumes.items():
            path, _, mode = target.partition(":")  # the mode was validated with the spec
            binds[str(Path(host).expanduser())] = {"bind": path, "mode": mode or "rw"}
        return binds

    def labels(self, label: str) -> dict[str, str]:
        return {
            LABEL_SESSION: self.session_id,
            LABEL_TRIAL: label,
            LABEL_TASK: self.task,
            LABEL_HOST: socket.gethostname(),
            LABEL_PID: str(os.getpid()),
            LABEL_RUNTIME: self.host_id,
        }

    def create_kwargs(
        self, params: Mapping[str, ParamValue], label: str, devices: tuple[int, ...] = ()
    ) -> dict[str, Any]:
        """Keyword arguments of ``client.containers.create`` for one configuration."""
        from docker.types import DeviceRequest

        kwargs: dict[str, Any] = {
            "image": self.image,
            "command": self.command(params),
            "name": f"autotune-{_safe_name(self.task)}-{_safe_name(label)}-{uuid.uuid4().hex[:6]}",
            "labels": self.labels(label),
            "environment": self.environment(),
            "volumes": self.volumes(),
            "ports": {f"{self.container_port}/tcp": ("127.0.0.1", None)},
            "detach": True,
            "init": self.settings.init,
            "stop_signal": "SIGTERM",
        }
        if self.settings.shm_size:
            kwargs["shm_size"] = self.settings.shm_size
        if self.settings.ipc_mode:
            kwargs["ipc_mode"] = self.settings.ipc_mode
        ids = self.device_ids(params, devices)
        if ids is None:
            kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        elif ids:
            kwargs["device_requests"] = [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]
        return kwargs
