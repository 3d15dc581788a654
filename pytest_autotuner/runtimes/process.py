"""Servers as local processes: ``python3 -m sglang.launch_server`` on the host, in its own process group.

A server dies with the process that launched it, however that process ends: on Linux the child asks the kernel
for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)`` in a ``preexec_fn``, before exec), so a
``kill -9`` of pytest leaves no server holding a port or GPU memory; SGLang's own subprocesses do the same
towards the server. The death signal follows the launching *thread*: a trial's server is launched and stopped
by the same worker thread (``launch`` is a context manager), which outlives it. Normal teardown signals the
server's process group (``start_new_session``), so children that outlive the server's main process go too.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from pytest_autotuner.core.measure.trial import Deadline, ParamValue, TrialFailure
from pytest_autotuner.core.spec.sglang_args import ArgumentTable
from pytest_autotuner.core.spec.spec_model import owned_flags_in
from pytest_autotuner.runtimes.base import (
    Endpoint,
    RuntimeUnavailable,
    classify_startup_failure,
    mask_secrets,
    server_argv,
    table_from_help,
    tail_lines,
    wait_until_ready,
)

__all__ = ["ProcessHost", "ProcessServer", "die_with_parent", "free_port", "lost_port_race", "release_port"]

logger = logging.getLogger(__name__)

_DERIVED_PORT_ROOM = 300  # SGLang opens internal ports from port + 233 upwards
_STOP_GRACE_S = 10.0
_PREFLIGHT_TIMEOUT_S = 300.0  # SGLang imports torch before it prints its help
_VERSION_SCRIPT = "import importlib.metadata as m; print(m.version('sglang'))"

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once in the parent: the child must not load libraries between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return None


_PRCTL = _load_prctl()


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGKILL when its parent dies (and exits at once if it already has)."""

    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before the request took effect
            os._exit(1)

    return preexec


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_PORT_IN_USE = re.compile(r"address already in use|Errno 98\b|EADDRINUSE", re.I)
_LAUNCH_ATTEMPTS = 4  # a port taken between our check and the server's bind is retried on a fresh one
_RESERVED_FOR_S = 3600.0  # a port handed out and never released is free again after this long
_reserved: dict[int, tuple[float, int]] = {}  # port -> (when drawn, its room)
_reserved_lock = threading.Lock()


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections (32768 where it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(room: int = _DERIVED_PORT_ROOM) -> int:
    """A free 127.0.0.1 port whose derived ports (port + 233 and up) are free too.

    Drawn below the kernel's range for outgoing connections where there is room, so no client socket of this
    host (the benchmark's, a test's) is given the port between this check and the server's bind (SGLang binds
    its HTTP port only after loading the model). The port and its derived range stay reserved in this process
    until ``release_port``, so two trials launched at once cannot both draw them. A server can still lose the
    race to another program: ``ProcessHost.launch`` then retries on a new port.
    """
    top = _ephemeral_low() - room
    low, high = (10000, top) if top - 10000 >= 2000 else (20000, 60000 - room)
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(low, high)
        now = time.monotonic()
        with _reserved_lock:
            for taken, (at, _) in list(_reserved.items()):
                if now - at > _RESERVED_FOR_S:
                    del _reserved[taken]
            if any(port < taken + span and taken < port + room for taken, (_, span) in _reserved.items()):
                continue
            if all(_bindable(p) for p in (port, port + 233, port + 234, port + room - 1)):
                _reserved[port] = (now, room)
                return port
    raise RuntimeError(f"no free port with room for SGLang's derived ports between {low} and {high}")


def release_port(port: int) -> None:
    """The server on ``port`` has stopped: the port may be drawn again."""
    with _reserved_lock:
        _reserved.pop(port, None)


def lost_port_race(failure: TrialFailure) -> bool:
    """Whether a startup failure is the server finding its port taken (another program bound it first)."""
    return bool(_PORT_IN_USE.search(f"{failure.message}\n{failure.log_tail or ''}"))


class ProcessServer:
    """One server process in its own process group; its log is a temporary file until teardown, then memory."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, env: Mapping[str, str]) -> None:
        self.proc = proc
        self.endpoint = Endpoint("", "")  # set once the server is ready
        self.port = 0  # the port drawn for it, released when it stops
        self._log_path = log_path
        self._env = env
        self._kept_log = ""  # the log's end, read at teardown

    @property
    def pid(self) -> int:
        return self.proc.pid

    def is_alive(self) -> bool:
        return self.proc.poll() is None

    def has_exited(self) -> bool:
        return self.proc.poll() is not None

    def log_tail(self, lines: int = 40) -> str:
        text = self._read_log() if self._log_path.exists() else self._kept_log
        return mask_secrets(tail_lines(text, lines), self._env)

    def _read_log(self) -> str:
        return self._log_path.read_bytes()[-200_000:].decode("utf-8", "replace")

    def startup_failure(self) -> TrialFailure:
        log = self.log_tail(200)
        code = self.proc.poll()
        failure_class = classify_startup_failure(log, code)
        last = next((line for line in reversed(log.splitlines()) if line.strip()), "no output")
        return TrialFailure(
            failure_class, f"server exited with code {code} during startup: {last}", log_tail=tail_lines(log)
        )

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after a grace period; the log's end is kept."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(_STOP_GRACE_S)
        # children that left the group's leader behind are still in the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log_path.exists():
            self._kept_log = self._read_log()
            self._log_path.unlink(missing_ok=True)


class ProcessHost:
    """Servers as local processes, one per trial; each process group is killed on every exit path.

    Nothing is shared between launches but the configuration, so concurrent trials need no lock beyond the
    set of live servers that ``close()`` stops.
    """

    kind = "process"
    image = ""
    image_digest = ""
    server_module = "sglang.launch_server"

    def __init__(
        self,
        *,
        model: str,
        readiness_timeout: float = 900.0,
        python: str = "python3",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        owned = owned_flags_in(extra_args)
        if owned:
            raise ValueError(f"extra_args {owned[0]!r} sets a flag the runtime sets itself (address, port, model)")
        self.model = model
        self.readiness_timeout = readiness_timeout
        self.python = python
        self.extra_args = list(extra_args)
        self.env = dict(os.environ if env is None else env)
        self._lock = threading.Lock()
        self._launches = 0
        self._live: set[ProcessServer] = set()
        self._table: ArgumentTable | None = None

    def prepare(self) -> None:
        """Nothing to set up once: each launch starts its own process."""

    def fingerprint_facts(self) -> dict[str, str]:
        version = self._table.version if self._table is not None else ""
        return {"runtime": self.kind, "image": self.image, "image_digest": self.image_digest, "sglang_version": version}

    def argument_table(self) -> ArgumentTable:
        """The preflight: ``python3 -m sglang.launch_server --help`` on this host, once per host."""
        if self._table is None:
            help_text = self._run([self.python, "-m", self.server_module, "--help"], "--help")
            try:
                version = self._run([self.python, "-c", _VERSION_SCRIPT], "version").strip()
            except RuntimeUnavailable:
                version = ""
            source = f"`{self.python} -m {self.server_module} --help` on this host"
            self._table = table_from_help(help_text, version, source)
        return self._table

    def _run(self, argv: list[str], what: str) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=_PREFLIGHT_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL, check=False)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as err:
            raise RuntimeUnavailable(f"the preflight `{' '.join(argv)}` failed: {err}") from None
        if proc.returncode != 0:
            tail = tail_lines(mask_secrets(proc.stdout + proc.stderr, self.env), 5)
            raise RuntimeUnavailable(f"the preflight ({what}) `{' '.join(argv)}` exited {proc.returncode}: {tail}")
        return proc.stdout

    def next_launch(self) -> int:
        """This host's launch count, 1 for its first launch (thread-safe: trials launch from worker threads)."""
        with self._lock:
            self._launches += 1
            return self._launches

    def own_flags(self, devices: tuple[int, ...], launch: int) -> list[str]:
        """Flags this runtime adds after the tuned parameters (``launch``: 1 for this host's first launch)."""
        return self.extra_args

    def command(
        self, params: Mapping[str, ParamValue], port: int, devices: tuple[int, ...] = (), launch: int = 1
    ) -> list[str]:
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
            *self.own_flags(devices, launch),
        ]

    def time_scale(self, server_info: Mapping[str, object]) -> float:
        return 1.0

    @contextlib.contextmanager
    def launch(self, params: Mapping[str, ParamValue], *, deadline: Deadline, label: str) -> Iterator[ProcessServer]:
        launch = self.next_launch()
        for attempt in range(1, _LAUNCH_ATTEMPTS + 1):
            port = free_port()
            try:
                server = self._start(self.command(params, port, deadline.devices, launch), deadline, label)
            except BaseException:
                release_port(port)
                raise
            server.port = port
            try:
                base_url = f"http://127.0.0.1:{port}"
                model_name, info = wait_until_ready(
                    base_url,
                    deadline=deadline,
                    timeout=self.readiness_timeout,
                    exited=server.has_exited,
                    on_exit=server.startup_failure,
                )
            except TrialFailure as failure:
                self._stop(server)
                if attempt < _LAUNCH_ATTEMPTS and lost_port_race(failure) and not deadline.expired:
                    logger.info("port %d was taken before the server bound it; launching again on another", port)
                    continue
                raise
            except BaseException:
                self._stop(server)
                raise
            break
        try:
            server.endpoint = Endpoint(base_url, model_name, self.time_scale(info), info)
            yield server
        finally:
            self._stop(server)

    def _start(self, argv: list[str], deadline: Deadline, label: str) -> ProcessServer:
        fd, log_name = tempfile.mkstemp(prefix=f"autotune-{label}-", suffix=".log")
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
                preexec_fn=die_with_parent(os.getpid()),
            )
        server = ProcessServer(proc, Path(log_name), self.env)
        with self._lock:
            self._live.add(server)
        return server

    def _stop(self, server: ProcessServer) -> None:
        try:
            server.stop()
        finally:
            with self._lock:
                self._live.discard(server)
            if server.port:
                release_port(server.port)

    def close(self) -> None:
        """Stop any server still running (a launch whose teardown was cut short)."""
        with self._lock:
            left = list(self._live)
            self._live.clear()
        for server in left:
            server.stop()
