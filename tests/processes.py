"""Process helpers for tests: the simulator as a child process, and the process tree (nothing left running)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pytest_autotuner.runtimes.process import free_port, release_port

T = TypeVar("T")


def interruptible() -> None:
    """``preexec_fn`` for a child that a test Ctrl-Cs: SIGINT back to its default, so Python installs its
    KeyboardInterrupt handler. A shell that starts a command in the background without job control (``cmd &`` in
    a script, as CI runners and nohup may) makes it ignore SIGINT, and every process below inherits that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from ps."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    pairs = list(zip(map(int, out[::2]), map(int, out[1::2]), strict=True))
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in pairs if pp == parent]
        found += children
        frontier += children
    return found


class SimProcess:
    def __init__(self, tmp: Path, *flags: str, model: str = "meta-llama/Llama-3.2-1B-Instruct") -> None:
        # below the outgoing-connection range, so no client socket takes it before the simulator binds it
        self.port = free_port(room=1)
        self.base = f"http://127.0.0.1:{self.port}"
        self.stderr_path = tmp / f"sim-{self.port}.log"
        argv = [sys.executable, "-m", "pytest_autotuner.sim", "--model-path", model, "--host", "127.0.0.1"]
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [*argv, "--port", str(self.port), *flags], stdout=subprocess.DEVNULL, stderr=self._stderr
        )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def status(self, path: str, timeout: float = 2.0) -> int:
        """HTTP status of GET ``path``; 0 while nothing listens."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, ConnectionError):
            return 0

    def wait_listening(self, limit: float = 15.0) -> int:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            code = self.status("/health")
            if code:
                return code
            if self.proc.poll() is not None:
                raise AssertionError(f"simulator exited {self.proc.returncode}:\n{self.stderr}")
            time.sleep(0.05)
        raise AssertionError("simulator never listened")

    def wait_ready(self, limit: float = 20.0) -> None:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if self.status("/health") == 200:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"simulator exited {self.proc.returncode}:\n{self.stderr}")
            time.sleep(0.05)
        raise AssertionError(f"simulator not ready after {limit} s:\n{self.stderr}")

    def post(self, path: str, body: bytes | dict[str, Any], timeout: float = 10.0) -> tuple[int, bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=5) as resp:
            return json.loads(resp.read())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._stderr.close()
        release_port(self.port)


def gather_in_threads(work: Callable[[], list[T]], threads: int) -> list[T]:
    """Run ``work`` in ``threads`` threads at once and return everything they returned, in no order."""
    gathered: list[T] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = work()
        with lock:
            gathered.extend(mine)

    started = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    return gathered
