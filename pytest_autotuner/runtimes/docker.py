"""Servers as Docker containers (Docker SDK): one labelled container per trial, removed on every exit path.

Each trial runs ``python3 -m sglang.launch_server --model-path ... --host 0.0.0.0 --port 30000 <flags>`` in
the runtime image (``lmsysorg/sglang:<runtime_image_tag>`` unless the spec's ``docker.image`` names another),
with the container port published on 127.0.0.1 only, on a host port chosen by the engine.

Leftovers: every container carries ``pytest-autotuner.session`` (plus ``.trial``, ``.task``, ``.host``,
``.pid``, ``.runtime``) labels. When a runtime first launches, it removes the labelled containers of earlier
sessions on this host whose pytest process is gone (a crashed or killed session); containers of sessions that
are still running (another pytest on the same machine) and of other hosts sharing the engine are left alone,
and containers without a ``.pid`` or ``.host`` label are treated as leftovers. Inside a session, teardown is
``stop`` (grace period) then ``remove(force)`` on every path (startup failure, readiness timeout, cancelled
deadline, benchmark error, Ctrl-C); ``close()`` removes whatever is still there, and an ``atexit`` hook does
the same at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.trial import Deadline, FailureClass, ParamValue, TrialFailure
from pytest_autotuner.runtimes.base import (
    SECRET_ENV_VARS,
    Endpoint,
    classify_startup_failure,
    mask_secrets,
    server_argv,
    tail_lines,
    wait_until_ready,
)

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

    from pytest_autotuner.core.spec import TaskSpec

__all__ = [
    "LABEL_HOST",
    "LABEL_PID",
    "LABEL_RUNTIME",
    "LABEL_SESSION",
    "LABEL_TASK",
    "LABEL_TRIAL",
    "SESSION_ID",
    "DockerOptions",
    "DockerRuntime",
    "default_image",
]

logger = logging.getLogger(__name__)

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
_LOG_KEEP_LINES = 400
_PULL_LOG_INTERVAL_S = 5.0
_PORT_WAIT_S = 10.0


@dataclass(frozen=True)
class DockerOptions:
    """The ``docker`` section of a spec (see ``DockerRuntime.from_spec``); every field has a default."""

    image: str | None = None  # default: lmsysorg/sglang:<runtime_image_tag> (vllm/vllm-openai:<tag> for vllm)
    pull: str = "missing"  # missing | always | never
    gpus: str | int | list[int] = "auto"  # auto (tp x dp from params) | all | none / 0 | N | [ids]
    shm_size: str | None = "16g"
    ipc_mode: str | None = "host"
    init: bool = True  # docker --init: signals reach the server, zombies are reaped
    volumes: dict[str, str] = field(default_factory=dict)  # host path -> "container path[:ro|:rw]"
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)  # appended to the server command line
    container_port: int | None = None  # default: 30000 (SGLang), 8000 (vLLM)
    stop_timeout: float = 10.0  # seconds between SIGTERM and SIGKILL at teardown
    hf_cache: str | None = None  # host HF cache; default $HF_HOME or ~/.cache/huggingface

    def __post_init__(self) -> None:
        if self.pull not in ("missing", "always", "never"):
            raise ValueError(f"docker.pull must be one of missing, always, never; got {self.pull!r}")
        if isinstance(self.gpus, str) and self.gpus not in ("auto", "all", "none"):
            raise ValueError(f"docker.gpus must be auto, all, none, a count or a list of ids; got {self.gpus!r}")
        if self.stop_timeout < 0:
            raise ValueError(f"docker.stop_timeout must be >= 0, got {self.stop_timeout!r}")

    @classmethod
    def coerce(cls, value: object) -> DockerOptions:
        """Options from None, a mapping, a pydantic model (``spec.docker``) or DockerOptions itself."""
        if value is None:
            return cls()
        if isinstance(value, DockerOptions):
            return value
        if isinstance(value, Mapping):
            raw = dict(value)
        elif hasattr(value, "model_dump"):
            raw = dict(value.model_dump())
        else:
            raw = {f.name: getattr(value, f.name) for f in fields(cls) if hasattr(value, f.name)}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            logger.warning("ignoring unknown docker settings: %s", ", ".join(unknown))
        kwargs = {k: v for k, v in raw.items() if k in known}
        for name in ("volumes", "env"):
            if kwargs.get(name) is None:
                kwargs.pop(name, None)
            else:
                kwargs[name] = {str(k): str(v) for k, v in kwargs[name].items()}
        if kwargs.get("extra_args") is not None:
            kwargs["extra_args"] = [str(a) for a in kwargs["extra_args"]]
        elif "extra_args" in kwargs:
            kwargs.pop("extra_args")
        if isinstance(kwargs.get("gpus"), (list, tuple)):
            kwargs["gpus"] = [int(i) for i in kwargs["gpus"]]
        return cls(**kwargs)


def default_image(base_runtime: str, tag: str) -> str:
    """The public image of a serving engine at ``tag``."""
    repo = "vllm/vllm-openai" if base_runtime == "vllm" else "lmsysorg/sglang"
    return f"{repo}:{tag}"


def _int_param(params: Mapping[str, ParamValue], *names: str) -> int:
    for name in names:
        value = params.get(name)
        if value is not None and not isinstance(value, bool):
            try:
                return max(1, int(float(value)))
            except ValueError:
                return 1
    return 1


def _safe_name(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", text).strip("-.")[:60] or "x"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_RUNTIMES: weakref.WeakSet[DockerRuntime] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # pragma: no cover - runs at interpreter exit
    for runtime in list(_RUNTIMES):
        with contextlib.suppress(Exception):
            runtime.close()


class DockerRuntime:
    """One container per trial through the Docker SDK; see the module docstring for labels and cleanup."""

    kind = "docker"

    def __init__(
        self,
        *,
        model: str,
        image: str,
        options: DockerOptions | None = None,
        base_runtime: str = "sglang",
        task: str = "",
        gpu_ids: Sequence[int] | None = None,
        readiness_timeout: float = 900.0,
        session_id: str = SESSION_ID,
        client: DockerClient | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.image = image
        self.options = options or DockerOptions()
        self.base_runtime = base_runtime
        self.task = task
        self.gpu_ids = None if gpu_ids is None else list(gpu_ids)
        self.readiness_timeout = readiness_timeout
        self.session_id = session_id
        self.host_env = dict(os.environ if env is None else env)
        self._client = client
        self._lock = threading.Lock()
        self._prepared = False
        self._live: dict[str, Container] = {}
        self._current: Container | None = None
        self._current_logs = ""  # logs of the last container, kept after its removal
        self.runtime_id = uuid.uuid4().hex[:12]
        _RUNTIMES.add(self)

    # ----------------------------------------------------------------------------------------- construction
    @classmethod
    def from_spec(cls, spec: TaskSpec, *, readiness_timeout: float, connect: bool = True) -> DockerRuntime:
        """The runtime configured by a spec: its model, image tag, ``gpus`` and ``docker`` section.

        With ``connect`` (the default) it also checks the engine, removes leftovers of dead sessions and
        pulls the image per the pull policy, so that a missing engine or image fails the session once, up
        front, with RuntimeUnavailable (and a long pull does not eat the first trial's time budget).
        """
        from pytest_autotuner.runtimes import RuntimeUnavailable

        if spec.model is None:
            raise RuntimeUnavailable("`model.id_or_path` is not set in the spec; a container needs a model to serve")
        try:
            options = DockerOptions.coerce(getattr(spec, "docker", None))
        except (TypeError, ValueError) as err:
            raise RuntimeUnavailable(f"invalid docker settings: {err}") from None
        image = options.image or default_image(spec.base_runtime, spec.runtime_image_tag)
        runtime = cls(
            model=spec.model.id_or_path,
            image=image,
            options=options,
            base_runtime=spec.base_runtime,
            task=spec.task_name,
            gpu_ids=spec.gpus,
            readiness_timeout=readiness_timeout,
        )
        if connect:
            try:
                runtime.prepare()
            except TrialFailure as failure:
                raise RuntimeUnavailable(failure.message) from None
        return runtime

    @property
    def client(self) -> DockerClient:
        """The Docker client (from the environment: DOCKER_HOST or the local socket), created on first use."""
        if self._client is None:
            import docker

            try:
                self._client = docker.from_env()
                self._client.ping()
            except docker.errors.DockerException as err:
                self._client = None
                raise TrialFailure(
                    FailureClass.LAUNCH_FAILED,
                    f"no Docker engine answers ({err}); start dockerd (or set DOCKER_HOST), "
                    "or use --autotune-runtime=process|sim",
                ) from None
        return self._client

    @property
    def container_port(self) -> int:
        if self.options.container_port is not None:
            return self.options.container_port
        return 8000 if self.base_runtime == "vllm" else 30000

    # ---------------------------------------------------------------------------------------- configuration
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
        return [*head, *server_argv(params), *self.options.extra_args]

    def device_ids(self, params: Mapping[str, ParamValue], assigned: tuple[int, ...] = ()) -> list[str] | None:
        """GPU ids for the container ([] = no GPUs, None = all GPUs); ``assigned`` ids come from the GPU pool."""
        gpus = self.options.gpus
        if assigned and gpus == "auto":
            return [str(i) for i in assigned]
        if gpus == "none" or gpus == 0:
            return []
        if gpus == "all":
            return None
        if isinstance(gpus, list):
            return [str(i) for i in gpus]
        needed = (
            gpus if isinstance(gpus, int) else _int_param(params, "tp-size", "tp") * _int_param(params, "dp-size", "dp")
        )
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
        env = dict(self.options.env)
        for name in SECRET_ENV_VARS:
            if self.host_env.get(name) and name not in env:
                env[name] = self.host_env[name]
        return env

    def hf_cache_dir(self) -> Path:
        if self.options.hf_cache:
            return Path(self.options.hf_cache).expanduser()
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
        for host, target in self.options.volumes.items():
            path, _, mode = target.partition(":")
            if mode and mode not in ("ro", "rw"):
                raise ValueError(f"docker.volumes[{host!r}]: mode must be ro or rw, got {mode!r}")
            binds[str(Path(host).expanduser())] = {"bind": path, "mode": mode or "rw"}
        return binds

    def labels(self, label: str) -> dict[str, str]:
        return {
            LABEL_SESSION: self.session_id,
            LABEL_TRIAL: label,
            LABEL_TASK: self.task,
            LABEL_HOST: socket.gethostname(),
            LABEL_PID: str(os.getpid()),
            LABEL_RUNTIME: self.runtime_id,
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
            "init": self.options.init,
            "stop_signal": "SIGTERM",
        }
        if self.options.shm_size:
            kwargs["shm_size"] = self.options.shm_size
        if self.options.ipc_mode:
            kwargs["ipc_mode"] = self.options.ipc_mode
        ids = self.device_ids(params, devices)
        if ids is None:
            kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        elif ids:
            kwargs["device_requests"] = [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]
        return kwargs

    # ---------------------------------------------------------------------------------- session preparation
    def prepare(self) -> None:
        """Once per runtime: check the engine, remove leftovers of dead sessions, make sure the image is there.

        Raises TrialFailure (LAUNCH_FAILED without an engine, IMAGE_MISSING without the image).
        """
        with self._lock:
            if self._prepared:
                return
            self.remove_leftovers()
            self._ensure_image()
            self._prepared = True

    def remove_leftovers(self) -> list[str]:
        """Remove labelled containers of dead sessions on this host (see the module docstring)."""
        import docker

        host = socket.gethostname()
        removed: list[str] = []
        for container in self.client.containers.list(all=True, filters={"label": LABEL_SESSION}):
            labels = container.labels or {}
            if labels.get(LABEL_SESSION) == self.session_id:
                continue
            owner_host, pid = labels.get(LABEL_HOST), labels.get(LABEL_PID, "")
            if owner_host and owner_host != host:
                continue  # another machine's session sharing this engine
            if owner_host and pid.isdigit() and _pid_alive(int(pid)):
                continue  # a live session on this machine
            logger.warning("removing leftover container %s of session %s", container.name, labels.get(LABEL_SESSION))
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
            removed.append(container.name)
        return removed

    def _ensure_image(self) -> None:
        import docker

        try:
            self.client.images.get(self.image)
            present = True
        except docker.errors.ImageNotFound:
            present = False
        pull = self.options.pull
        if not present and pull == "never":
            raise TrialFailure(
                FailureClass.IMAGE_MISSING,
                f"the image {self.image} is not on this machine and docker.pull is 'never'; "
                f"run `docker pull {self.image}` (or build it) first, or set docker.pull to 'missing'",
            )
        if pull == "always" or not present:
            self._pull()

    def _pull(self) -> None:
        import docker
        from docker.utils import parse_repository_tag

        repo, tag = parse_repository_tag(self.image)
        logger.info("pulling %s (this can take minutes for a serving image)", self.image)
        last_log = 0.0
        try:
            for event in self.client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                if "error" in event:
                    raise docker.errors.APIError(str(event["error"]))
                status = f"{event.get('id', '')} {event.get('status', '')} {event.get('progress', '')}".strip()
                now = time.monotonic()
                if "progress" not in event or now - last_log >= _PULL_LOG_INTERVAL_S:
                    logger.info("pull %s: %s", self.image, status)
                    last_log = now
        except docker.errors.DockerException as err:
            raise TrialFailure(
                FailureClass.IMAGE_MISSING,
                f"cannot pull {self.image}: {err}; check the image name and runtime_image_tag, the registry "
                "login (docker login) and the network, or pull it yourself and set docker.pull 'never'",
            ) from None
        logger.info("pulled %s", self.image)

    # ------------------------------------------------------------------------------------------------ trials
    @contextlib.contextmanager
    def launch(self, params: Mapping[str, ParamValue], *, deadline: Deadline, label: str) -> Iterator[Endpoint]:
        """Start a container for ``params``, yield its ready endpoint, and stop and remove it on exit."""
        import docker

        self.prepare()
        kwargs = self.create_kwargs(params, label, deadline.devices)
        logger.debug("launching %s: %s", kwargs["name"], " ".join(kwargs["command"]))
        self._current_logs = ""
        container: Container | None = None
        try:
            try:
                container = self.client.containers.create(**kwargs)
                self._live[container.id] = container
                self._current = container
                container.start()
            except docker.errors.ImageNotFound as err:
                raise TrialFailure(FailureClass.IMAGE_MISSING, f"image {self.image} not found: {err}") from None
            except docker.errors.APIError as err:
                raise TrialFailure(FailureClass.LAUNCH_FAILED, self._explain_api_error(err)) from None
            host_port = self._host_port(container, deadline)
            base_url = f"http://127.0.0.1:{host_port}"
            model_name, info = wait_until_ready(
                base_url,
                deadline=deadline,
                timeout=self.readiness_timeout,
                exited=lambda: self._exited(container),
                on_exit=lambda: self._startup_failure(container),
            )
            yield Endpoint(base_url, model_name, 1.0, info)
        finally:
            if container is not None:
                self._teardown(container)

    def _explain_api_error(self, err: Exception) -> str:
        text = str(err)
        if "could not select device driver" in text or "nvidia" in text.lower():
            return (
                f"the engine cannot give the container GPUs ({text}); install the NVIDIA Container Toolkit "
                "and restart dockerd, or set docker.gpus to 'none' for a CPU-only image"
            )
        return f"the container did not start: {text}"

    def _host_port(self, container: Container, deadline: Deadline) -> int:
        """The host port the engine published the server port on (read back from the container)."""
        key = f"{self.container_port}/tcp"
        give_up = time.monotonic() + _PORT_WAIT_S
        while True:
            container.reload()
            bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(key) or []
            for binding in bindings:
                if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
                    return int(binding["HostPort"])
            if container.status in ("exited", "dead"):
                raise self._startup_failure(container)
            if time.monotonic() >= give_up or deadline.wait(0.2):
                raise TrialFailure(FailureClass.LAUNCH_FAILED, f"the engine published no host port for {key}")

    def _exited(self, container: Container) -> bool:
        import docker

        try:
            container.reload()
        except docker.errors.NotFound:
            return True
        return container.status in ("exited", "dead")

    def _startup_failure(self, container: Container) -> TrialFailure:
        log = self._fetch_logs(container)
        state = container.attrs.get("State", {})
        code = state.get("ExitCode")
        failure_class = classify_startup_failure(log, code)
        if state.get("OOMKilled") and failure_class in (FailureClass.LAUNCH_FAILED, FailureClass.UNKNOWN):
            failure_class = FailureClass.OOM
        last = next((line for line in reversed(log.splitlines()) if line.strip()), "no output")
        return TrialFailure(
            failure_class,
            f"container exited with code {code} during startup: {last}",
            log_tail=tail_lines(log),
        )

    def _fetch_logs(self, container: Container) -> str:
        import docker

        try:
            raw = container.logs(stdout=True, stderr=True, tail=_LOG_KEEP_LINES)
        except docker.errors.DockerException:
            return self._current_logs
        text = mask_secrets(raw.decode("utf-8", "replace"), self.environment() | self.host_env)
        if container is self._current:
            self._current_logs = text
        return text

    def _teardown(self, container: Container) -> None:
        """Stop (SIGTERM, SIGKILL after the grace period), keep the log, remove (force)."""
        import docker

        try:
            container.stop(timeout=round(self.options.stop_timeout))
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as err:
            logger.warning("stopping container %s failed: %s", container.name, err)
        self._fetch_logs(container)
        self._remove(container, "close() retries")

    def _remove(self, container: Container, on_error: str) -> None:
        """Force-remove a container (and its volumes); it stays tracked in ``_live`` if the engine refuses."""
        import docker

        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as err:
            logger.warning("removing container %s failed (%s): %s", container.name, on_error, err)
            return
        self._live.pop(container.id, None)

    def is_alive(self) -> bool:
        """Whether the last launched container is running."""
        container = self._current
        return container is not None and not self._exited(container)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the current (or last removed) container's log, secrets masked."""
        container = self._current
        if container is not None and container.id in self._live:
            self._fetch_logs(container)
        return tail_lines(self._current_logs, lines)

    def close(self) -> None:
        """Remove every container this runtime started that is still there."""
        if self._client is None:
            return
        import docker

        with contextlib.suppress(docker.errors.DockerException):  # also one created but never handed back
            for found in self._client.containers.list(
                all=True, filters={"label": f"{LABEL_RUNTIME}={self.runtime_id}"}
            ):
                self._live.setdefault(found.id, found)
        for container in list(self._live.values()):
            self._remove(container, "left behind")
