"""Servers as local processes: ``python3 -m sglang.launch_server`` on the host, in its own process group."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pytest_autotuner.core.trial import Deadline, ParamValue, TrialFailure
from pytest_autotuner.runtimes.base import (
    Endpoint,
    classify_startup_failure,
    mask_secrets,
    server_argv,
    tail_lines,
    wait_until_ready,
)

__all__ = ["ProcessRuntime", "free_port"]

logger = logging.getLogger(__name__)

_DERIVED_PORT_ROOM = 300  # SGLang opens internal ports from port + 233 upwards
_STOP_GRACE_S = 10.0


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(room: int = _DERIVED_PORT_ROOM) -> int:
    """A free 127.0.0.1 port whose derived ports (port + 233 and up) are free too."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 60000 - room)
        if all(_bindable(p) for p in (port, port + 233, port + 234, port + room - 1)):
            return port
    raise RuntimeError("no free port with room for SGLang's derived ports between 20000 and 60000")


class ProcessRuntime:
    """One server process per trial; the process group is killed on every exit path."""

    kind = "process"

    def __init__(
        self,
        *,
        model: str,
        readiness_timeout: float = 900.0,
        python: str = "python3",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.readiness_timeout = readiness_timeout
        self.python = python
        self.extra_args = list(extra_args)
        self.env = dict(os.environ if env is None else env)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._live: set[subprocess.Popen[bytes]] = set()

    server_module = "sglang.launch_server"

    def own_flags(self, devices: tuple[int, ...]) -> list[str]:
        """Flags this runtime adds after the tuned parameters."""
        return self.extra_args

    def command(self, params: Mapping[str, ParamValue], port: int, devices: tuple[int, ...] = ()) -> list[str]:
        """The argv of the server for one configuration."""
        return [
            self.python,
            "-m",
            self.server_module,
            "--model-path",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *server_argv(params),
            *self.own_flags(devices),
        ]

    def time_scale(self, server_info: Mapping[str, object]) -> float:
        return 1.0

    @contextlib.contextmanager
    def launch(self, params: Mapping[str, ParamValue], *, deadline: Deadline, label: str) -> Iterator[Endpoint]:
        port = free_port()
        argv = self.command(params, port, deadline.devices)
        fd, log_name = tempfile.mkstemp(prefix=f"autotune-{label}-", suffix=".log")
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)  # the previous trial's log: its tail is in the study
        self._log_path = Path(log_name)
        logger.debug("launching %s", " ".join(argv))
        env = (
            {**self.env, "CUDA_VISIBLE_DEVICES": ",".join(map(str, deadline.devices))} if deadline.devices else self.env
        )
        with os.fdopen(fd, "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self._proc = proc
        self._live.add(proc)
        try:
            base_url = f"http://127.0.0.1:{port}"
            model_name, info = wait_until_ready(
                base_url,
                deadline=deadline,
                timeout=self.readiness_timeout,
                exited=lambda: proc.poll() is not None,
                on_exit=self._startup_failure,
            )
            yield Endpoint(base_url, model_name, self.time_scale(info), info)
        finally:
            self._stop(proc)

    def _startup_failure(self) -> TrialFailure:
        log = self.log_tail(200)
        code = self._proc.poll() if self._proc else None
        failure_class = classify_startup_failure(log, code)
        last = next((line for line in reversed(log.splitlines()) if line.strip()), "no output")
        return TrialFailure(
            failure_class, f"server exited with code {code} during startup: {last}", log_tail=tail_lines(log)
        )

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        text = self._log_path.read_bytes()[-200_000:].decode("utf-8", "replace")
        return mask_secrets(tail_lines(text, lines), self.env)

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the whole process group, SIGKILL after a grace period."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(_STOP_GRACE_S)
        # children that left the group's leader behind are still in the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._live.discard(proc)

    def close(self) -> None:
        for proc in list(self._live):
            self._stop(proc)
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
