"""Servers as Docker containers (Docker SDK): one labelled container per trial, removed on every exit path.

Each trial runs ``python3 -m sglang.launch_server --model-path ... --host 0.0.0.0 --port 30000 <flags>`` in
the runtime image (``lmsysorg/sglang:<runtime_image_tag>`` unless the spec's ``docker.image`` names another),
with the container port published on 127.0.0.1 only, on a host port chosen by the engine.

A ``DockerHost`` lives for one tuning session: ``prepare()`` makes the client (and pings the engine), sweeps
leftovers, checks or pulls the image per ``docker.pull`` and reads its digest, once; ``launch()`` then starts one
container per trial (from several worker threads at once when trials run concurrently).

Leftovers: every container carries ``pytest-autotuner.session`` (plus ``.trial``, ``.task``, ``.host``,
``.pid``, ``.runtime``) labels, ``.host`` and ``.pid`` naming the machine and the pytest process that own it.
``prepare()`` removes the labelled containers of earlier sessions on this host whose owning pid is gone (a
crashed or killed session); containers of sessions that are still running (another pytest on the same machine)
and of other hosts sharing the engine are left alone, and containers without a ``.pid`` or ``.host`` label are
treated as leftovers. Inside a session, teardown is ``stop`` (grace period) then ``remove(force)`` on every path
(startup failure, readiness timeout, cancelled deadline, benchmark error, Ctrl-C); the host tracks its
containers, and ``close()`` (which the plugin calls in a ``finally``) removes whatever is still there. A process
killed outright leaves its containers to the next session's sweep: ``prepare()`` lists containers with the
``pytest-autotuner.session`` label and removes those whose ``.host`` is this machine and whose ``.pid`` is no
longer running (``remove_leftovers``), before the session's first trial.

The model, address and port flags belong to the runtime: a spec that tunes one or passes one in
``docker.extra_args`` is refused at collection (``core/spec/spec_model.py``: ``RUNTIME_OWNED_FLAGS``,
``owned_flags_in``).

This module starts, watches and removes containers; what a trial's container is (argv, GPUs, mounts, labels) is
``docker_spec.py``, the image's presence, pull and digest ``docker_image.py``, its ``--help`` ``docker_preflight.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_autotuner.core.measure.trial import Deadline, FailureClass, ParamValue, TrialFailure
from pytest_autotuner.core.spec.sglang_args import ArgumentTable
from pytest_autotuner.runtimes.base import (
    Endpoint,
    RuntimeUnavailable,
    classify_startup_failure,
    mask_secrets,
    table_from_help,
    tail_lines,
    wait_until_ready,
)
from pytest_autotuner.runtimes.docker_image import ensure_image, image_digest
from pytest_autotuner.runtimes.docker_preflight import help_and_version, help_cache_path
from pytest_autotuner.runtimes.docker_spec import (
    LABEL_HOST,
    LABEL_PID,
    LABEL_RUNTIME,
    LABEL_SESSION,
    SESSION_ID,
    ContainerSpec,
    default_image,
)

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

    from pytest_autotuner.core.spec.runtime_settings import DockerSettings
    from pytest_autotuner.core.spec.task_spec import TaskSpec

__all__ = ["DockerHost", "DockerServer"]

logger = logging.getLogger(__name__)

_LOG_KEEP_LINES = 400
_PORT_WAIT_S = 10.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DockerServer:
    """One container: its endpoint once ready, its state, and its log (kept after the container is removed)."""

    def __init__(self, container: Container, secrets: Mapping[str, str]) -> None:
        self.container = container
        self.endpoint = Endpoint("", "")  # set once the server is ready
        self._secrets = secrets
        self._logs = ""

    def is_alive(self) -> bool:
        """Whether the container is running."""
        import docker

        try:
            self.container.reload()
        except docker.errors.NotFound:
            return False
        return self.container.status not in ("exited", "dead")

    def fetch_logs(self) -> str:
        """The container's log, secrets masked; the last one read once the container is gone."""
        import docker

        try:
            raw = self.container.logs(stdout=True, stderr=True, tail=_LOG_KEEP_LINES)
        except docker.errors.DockerException:
            return self._logs
        self._logs = mask_secrets(raw.decode("utf-8", "replace"), self._secrets)
        return self._logs

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the container's log, secrets masked (kept after teardown)."""
        return tail_lines(self.fetch_logs(), lines)

    def startup_failure(self) -> TrialFailure:
        log = self.fetch_logs()
        state = self.container.attrs.get("State", {})
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


class DockerHost:
    """Containers for one session through the Docker SDK; see the module docstring for labels and cleanup."""

    kind = "docker"

    def __init__(
        self,
        *,
        model: str,
        settings: DockerSettings,
        image: str,
        base_runtime: str = "sglang",
        task: str = "",
        gpu_ids: Sequence[int] | None = None,
        readiness_timeout: float = 900.0,
        session_id: str = SESSION_ID,
        client: DockerClient | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.host_env = dict(os.environ if env is None else env)
        #: what each trial's container is (argv, GPUs, mounts, labels)
        self.container_spec = ContainerSpec(
            model=model,
            settings=settings,
            image=image,
            base_runtime=base_runtime,
            task=task,
            gpu_ids=None if gpu_ids is None else list(gpu_ids),
            session_id=session_id,
            host_env=self.host_env,
        )
        self.settings = settings
        self.image = image
        self.image_digest = ""
        self.base_runtime = base_runtime
        self.readiness_timeout = readiness_timeout
        self.session_id = session_id
        self.host_id = self.container_spec.host_id
        self._client = client
        self._lock = threading.Lock()  # guards preparation and the set of live containers
        self._prepared = False
        self._live: dict[str, Container] = {}
        self._table: ArgumentTable | None = None

    @classmethod
    def from_spec(cls, spec: TaskSpec, *, readiness_timeout: float) -> DockerHost:
        """The host configured by a spec: its model, image tag, ``gpus`` and ``docker`` section (no I/O yet)."""
        from pytest_autotuner.runtimes.base import RuntimeUnavailable

        if spec.model is None:
            raise RuntimeUnavailable("`model.id_or_path` is not set in the spec; a container needs a model to serve")
        return cls(
            model=spec.model.id_or_path,
            settings=spec.docker,
            image=spec.docker.image or default_image(spec.base_runtime, spec.runtime_image_tag),
            base_runtime=spec.base_runtime,
            task=spec.task_name,
            gpu_ids=spec.gpus,
            readiness_timeout=readiness_timeout,
        )

    @property
    def client(self) -> DockerClient:
        """The Docker client (from the environment: DOCKER_HOST or the local socket), made by ``prepare()``."""
        if self._client is None:
            import docker

            try:
                self._client = docker.from_env()
                self._client.ping()
            except docker.errors.DockerException as err:
                self._client = None
                raise RuntimeUnavailable(
                    f"no Docker engine answers ({err}); start dockerd (or set DOCKER_HOST), "
                    "or use --autotune-runtime=process|sim"
                ) from None
        return self._client

    @property
    def container_port(self) -> int:
        return self.container_spec.container_port

    def fingerprint_facts(self) -> dict[str, str]:
        version = self._table.version if self._table is not None else ""
        return {"runtime": self.kind, "image": self.image, "image_digest": self.image_digest, "sglang_version": version}

    # -------------------------------------------------------------------------------------------- preflight
    def argument_table(self) -> ArgumentTable | None:
        """The preflight: the image's ``python3 -m sglang.launch_server --help``, once per image digest.

        The help (and the SGLang version the image's package metadata states, else its tag's) is cached under
        ``$PYTEST_AUTOTUNER_CACHE`` (default ``~/.cache/pytest-autotuner``) by digest, so a new image costs one
        short container and a known one none. None for vllm images (their flags are not checked).
        """
        if self.base_runtime != "sglang":
            return None
        if self._table is None:
            self.prepare()
            help_text, version = self._help_and_version()
            self._table = table_from_help(help_text, version, f"`sglang.launch_server --help` of {self.image}")
        return self._table

    def help_cache_path(self) -> Path:
        return help_cache_path(self.image, self.image_digest, self.host_env)

    def _help_and_version(self) -> tuple[str, str]:
        return help_and_version(self.client, self.container_spec, self.image_digest)

    # ---------------------------------------------------------------------------------- session preparation
    def prepare(self) -> None:
        """Once per session: connect, remove leftovers of dead sessions, make sure the image is there, read
        its digest. Raises RuntimeUnavailable (no engine, no image) with what to do about it."""
        with self._lock:
            if self._prepared:
                return
            self.remove_leftovers()
            ensure_image(self.client, self.image, self.settings.pull)
            self.image_digest = image_digest(self.client, self.image)
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

    # ------------------------------------------------------------------------------------------------ trials
    @contextlib.contextmanager
    def launch(self, params: Mapping[str, ParamValue], *, deadline: Deadline, label: str) -> Iterator[DockerServer]:
        """Start a container for ``params``, yield it once ready, and stop and remove it on exit.

        Prepares the host first if ``prepare()`` was not called (RuntimeUnavailable then comes from here).
        """
        import docker

        self.prepare()
        kwargs = self.container_spec.create_kwargs(params, label, deadline.devices)
        logger.debug("launching %s: %s", kwargs["name"], " ".join(kwargs["command"]))
        server: DockerServer | None = None
        try:
            try:
                container = self.client.containers.create(**kwargs)
                with self._lock:
                    self._live[container.id] = container
                server = DockerServer(container, self.container_spec.environment() | self.host_env)
                container.start()
            except docker.errors.ImageNotFound as err:
                raise TrialFailure(FailureClass.IMAGE_MISSING, f"image {self.image} not found: {err}") from None
            except docker.errors.APIError as err:
                raise TrialFailure(FailureClass.LAUNCH_FAILED, self._explain_api_error(err)) from None
            host_port = self._host_port(server, deadline)
            base_url = f"http://127.0.0.1:{host_port}"
            ready = server
            model_name, info = wait_until_ready(
                base_url,
                deadline=deadline,
                timeout=self.readiness_timeout,
                exited=lambda: not ready.is_alive(),
                on_exit=ready.startup_failure,
            )
            server.endpoint = Endpoint(base_url, model_name, 1.0, info)
            yield server
        finally:
            if server is not None:
                self._teardown(server)

    def _explain_api_error(self, err: Exception) -> str:
        text = str(err)
        if "could not select device driver" in text or "nvidia" in text.lower():
            return (
                f"the engine cannot give the container GPUs ({text}); install the NVIDIA Container Toolkit "
                "and restart dockerd, or set docker.gpus to 'none' for a CPU-only image"
            )
        return f"the container did not start: {text}"

    def _host_port(self, server: DockerServer, deadline: Deadline) -> int:
        """The host port the engine published the server port on (read back from the container)."""
        container = server.container
        key = f"{self.container_port}/tcp"
        give_up = time.monotonic() + _PORT_WAIT_S
        while True:
            container.reload()
            bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(key) or []
            for binding in bindings:
                if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
                    return int(binding["HostPort"])
            if container.status in ("exited", "dead"):
                raise server.startup_failure()
            if time.monotonic() >= give_up or deadline.wait(0.2):
                raise TrialFailure(FailureClass.LAUNCH_FAILED, f"the engine published no host port for {key}")

    def _teardown(self, server: DockerServer) -> None:
        """Stop (SIGTERM, SIGKILL after the grace period), keep the log, remove (force)."""
        import docker

        container = server.container
        try:
            container.stop(timeout=round(self.settings.stop_timeout))
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as err:
            logger.warning("stopping container %s failed: %s", container.name, err)
        server.fetch_logs()
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
        with self._lock:
            self._live.pop(container.id, None)

    def close(self) -> None:
        """Remove every container this host started that is still there, and let go of the client."""
        if self._client is None:
            return
        import docker

        with contextlib.suppress(docker.errors.DockerException):  # also one created but never handed back
            for found in self._client.containers.list(all=True, filters={"label": f"{LABEL_RUNTIME}={self.host_id}"}):
                with self._lock:
                    self._live.setdefault(found.id, found)
        with self._lock:
            left = list(self._live.values())
        for container in left:
            self._remove(container, "left behind")
        with contextlib.suppress(docker.errors.DockerException):
            self._client.close()
        self._client = None
        self._prepared = False
