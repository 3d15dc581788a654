"""Putting a server back in a known state between load steps: wait until it holds no request (``/get_load``),
then empty its prefix cache (``/flush_cache``). Plain blocking HTTP, called between cells, outside any event loop.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.trial import Deadline
    from pytest_autotuner.runtimes.base import Endpoint

__all__ = ["flush_cache", "reset_server", "wait_until_idle"]


def _load(endpoint: Endpoint, timeout: float) -> int | None:
    """Requests the server holds (``/get_load``'s ``num_reqs`` summed over ranks), None when it does not say."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{endpoint.base_url}/get_load", timeout=timeout) as response:
            body = json.loads(response.read(65536))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    ranks = body if isinstance(body, list) else [body]
    counts = [r.get("num_reqs") for r in ranks if isinstance(r, dict)]
    if not counts or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        return None
    return sum(counts)  # type: ignore[arg-type]


def wait_until_idle(endpoint: Endpoint, deadline: Deadline | None, limit_s: float) -> float:
    """After an overloaded load step: wait (up to ``limit_s`` wall seconds and the trial's deadline) until the
    server reports no request left, so the next step does not start behind the last one's backlog. SGLang aborts
    the requests of a client that went away; a server without ``/get_load`` is not waited on. Returns the wall
    seconds waited."""
    started = time.perf_counter()
    while True:
        left = limit_s - (time.perf_counter() - started)
        if deadline is not None:
            left = min(left, deadline.remaining())
        if left <= 0:
            break
        load = _load(endpoint, min(5.0, left))
        if not load:
            break
        if deadline is not None:
            if deadline.wait(min(0.2, left)):
                break
        else:
            time.sleep(min(0.2, left))
    return time.perf_counter() - started


def flush_cache(endpoint: Endpoint, timeout: float = 5.0) -> bool:
    """``POST /flush_cache`` (SGLang empties its radix/prefix cache; it refuses, HTTP 400, while requests run).
    False when the server refused or has no such route."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{endpoint.base_url}/flush_cache", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (OSError, ValueError, urllib.error.URLError):
        return False


def reset_server(endpoint: Endpoint, deadline: Deadline | None, limit_s: float) -> float:
    """Before each load step of a capacity ladder: wait until the server is idle (``wait_until_idle``: an
    overloaded step's backlog drains) and empty its prefix cache (``flush_cache``), so every step starts from the
    state of a fresh server whatever the steps before it did (the step's warm-up requests, if any, then warm it
    alike). Returns the wall seconds spent."""
    started = time.perf_counter()
    waited = wait_until_idle(endpoint, deadline, limit_s)
    if not flush_cache(endpoint) and _load(endpoint, 5.0):
        # requests still running (the drain hit its limit, or one arrived late): once more after they end
        wait_until_idle(endpoint, deadline, max(0.0, limit_s - waited))
        flush_cache(endpoint)
    return time.perf_counter() - started
