"""The RuntimeHost and Server protocols and what every runtime shares: argv from parameters, readiness wait,
log handling, failure classification."""

from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from pytest_autotuner.core.measure.trial import Deadline, FailureClass, ParamValue, TrialFailure
from pytest_autotuner.core.spec.sglang_args import (
    DEFAULT_VERSION,
    SHIPPED_VERSIONS,
    ArgumentTable,
    parse_help,
)
from pytest_autotuner.sglang_tables import shipped_table

__all__ = [
    "SECRET_ENV_VARS",
    "Endpoint",
    "RuntimeHost",
    "RuntimeUnavailable",
    "Server",
    "classify_startup_failure",
    "mask_secrets",
    "server_argv",
    "table_from_help",
    "tail_lines",
    "wait_until_ready",
]

#: Environment variables whose values never appear in logs, reports or errors.
SECRET_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN")
_FIRST_POLL_INTERVAL_S = 0.05
_POLL_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Endpoint:
    """A ready server: where to send requests and how to read its clock."""

    base_url: str  # e.g. http://127.0.0.1:41234
    model_name: str  # served model name for the "model" field of requests
    time_scale: float = 1.0  # server seconds per wall second (the simulator's speed-up; 1 for real servers)
    server_info: dict[str, Any] = field(default_factory=dict)


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot be used on this machine (no Docker engine, no image, no model, ...)."""


class Server(Protocol):
    """One launched server, ready: where it answers, whether it still runs, what it logged."""

    endpoint: Endpoint

    def is_alive(self) -> bool:
        """Whether the server still runs (to tell a crash from a slow server)."""
        ...

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log, secrets masked; still readable after teardown."""
        ...


class RuntimeHost(Protocol):
    """A runtime for one tuning session: set up once, then one server per trial, then cleaned up.

    ``prepare()`` does the session's one-off work (Docker: the client and its ping, the leftover sweep, the
    image check or pull, the image digest) and raises RuntimeUnavailable with what to do about it.
    ``launch()`` is called per trial, from several worker threads at once when trials run concurrently.
    ``close()`` removes whatever is left; it is idempotent.
    """

    kind: str
    image: str  # the image servers run from ("" where there is none)
    image_digest: str  # its RepoDigest (else its image ID), known after prepare(); "" where there is none

    def prepare(self) -> None:
        """Session start: everything a launch needs that is the same for every trial."""
        ...

    def launch(
        self, params: Mapping[str, ParamValue], *, deadline: Deadline, label: str
    ) -> AbstractContextManager[Server]:
        """Start a server for ``params``; the context yields it once ready and tears it down on every exit path.

        Raises TrialFailure (classified) when the server does not come up before the deadline.
        """
        ...

    def fingerprint_facts(self) -> dict[str, str]:
        """What a baseline's fingerprint takes from the runtime: ``runtime``, ``image``, ``image_digest`` and
        ``sglang_version`` (from the preflight; "" before it or where unknown)."""
        ...

    def argument_table(self) -> ArgumentTable | None:
        """The preflight: the launch options of the server this host runs, read once per session (the image's or
        the host's ``--help``, or the simulator's imitated version); None where flags cannot be checked (vllm).

        Raises RuntimeUnavailable when the server cannot even print its help.
        """
        ...

    def close(self) -> None:
        """Remove anything this host left behind (called once at the end of a session; idempotent)."""
        ...


def server_argv(params: Mapping[str, ParamValue]) -> list[str]:
    """``--flag value`` per parameter as separate argv items; True -> bare flag, False -> omitted."""
    argv: list[str] = []
    for name, value in params.items():
        flag = f"--{name}"
        if value is True:
            argv.append(flag)
        elif value is False:
            continue
        else:
            argv += [flag, str(value)]
    return argv


def mask_secrets(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace the values of secret environment variables (and hf_ tokens) by ``***``."""
    env = os.environ if env is None else env
    for name in SECRET_ENV_VARS:
        secret = env.get(name)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return re.sub(r"\bhf_[A-Za-z0-9]{20,}\b", "hf_***", text)


_CLASSIFIERS: list[tuple[re.Pattern[str], FailureClass]] = [
    (
        re.compile(r"Not enough memory\. Please try to increase --mem-fraction-static", re.I),
        FailureClass.KV_CACHE_OOM,
    ),
    (re.compile(r"CUDA out of memory|Capture cuda graph failed|OutOfMemoryError", re.I), FailureClass.OOM),
    (
        re.compile(
            r"must be divisible by tensor parallel|tp_size \* dp_size|"
            r"invalid device ordinal|not enough GPUs|exceeds the number of (available )?GPUs",
            re.I,
        ),
        FailureClass.INVALID_PARALLELISM,
    ),
    (
        re.compile(r"No such image|pull access denied|manifest unknown|image not found", re.I),
        FailureClass.IMAGE_MISSING,
    ),
]


def classify_startup_failure(log: str, exit_code: int | None) -> FailureClass:
    """Why a server exited during startup, from its log (last match wins: the final error is the cause)."""
    found: tuple[int, FailureClass] | None = None
    for pattern, failure_class in _CLASSIFIERS:
        for match in pattern.finditer(log):
            if found is None or match.start() > found[0]:
                found = (match.start(), failure_class)
    if found:
        return found[1]
    return FailureClass.LAUNCH_FAILED if exit_code not in (None, 0) else FailureClass.UNKNOWN


def _get_json(url: str, timeout: float) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            return response.status, json.loads(body) if body else None
    except urllib.error.HTTPError as err:
        return err.code, None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException):
        # HTTPException: e.g. BadStatusLine "GET /health HTTP/1.1" when, before the server listens, the poll's own
        # ephemeral port equals the server's and TCP connects the socket to itself; no answer yet, poll again
        return 0, None


def wait_until_ready(
    base_url: str,
    *,
    deadline: Deadline,
    timeout: float,
    exited: Callable[[], bool],
    on_exit: Callable[[], TrialFailure],
) -> tuple[str, dict[str, Any]]:
    """Poll ``/health`` then ``/v1/models`` until ready; return (model name, server info).

    Polls every 50 ms at first, backing off to every 0.5 s: a fast start (the simulator, a small model from a
    warm cache) is seen within tens of ms, and a minutes-long startup costs two requests a second.

    Stops as soon as ``exited()`` says the server is gone (raising ``on_exit()``), and raises
    READINESS_TIMEOUT after ``timeout`` seconds, or TRIAL_TIMEOUT when the trial's deadline is what ended the wait
    (the session's own timer says the same when it fires first, so the class does not depend on which wins).
    """
    started = time.monotonic()
    bound_by_trial = deadline.remaining() < timeout
    give_up = started + min(timeout, deadline.remaining())
    while True:
        if exited():
            raise on_exit()
        status, _ = _get_json(f"{base_url}/health", timeout=2.0)
        if status == 200:
            models_status, models = _get_json(f"{base_url}/v1/models", timeout=5.0)
            if models_status == 200 and models and models.get("data"):
                _, info = _get_json(f"{base_url}/server_info", timeout=5.0)
                return str(models["data"][0]["id"]), info if isinstance(info, dict) else {}
        if time.monotonic() >= give_up or deadline.expired:
            last = f"last /health status: {status or 'no answer'}"
            if deadline.expired or bound_by_trial:
                raise TrialFailure(
                    FailureClass.TRIAL_TIMEOUT,
                    f"the trial's time limit ran out while the server at {base_url} was starting ({last})",
                )
            raise TrialFailure(
                FailureClass.READINESS_TIMEOUT, f"the server at {base_url} was not ready within {timeout:g} s ({last})"
            )
        if exited():
            raise on_exit()
        deadline.wait(min(_POLL_INTERVAL_S, max(_FIRST_POLL_INTERVAL_S, 0.1 * (time.monotonic() - started))))


def table_from_help(text: str, version: str, source: str) -> ArgumentTable:
    """The table of a ``--help`` text, with value types (which help does not show) from the shipped table of
    ``version`` (else the newest shipped one): a non-number for an int flag is then caught too."""
    table = parse_help(text, version, source)
    if not table.options:
        raise RuntimeUnavailable(f"{source} printed no options; its output starts: {text[:300]!r}")
    return table.with_types_from(shipped_table(version if version in SHIPPED_VERSIONS else DEFAULT_VERSION))


def tail_lines(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])
