"""SGLang's Prometheus metrics (``--enable-metrics``): what the server says about a cell's requests as a whole.

A real SGLang server does not tell a client when its request was admitted, but with ``--enable-metrics`` its
``/metrics`` endpoint keeps a histogram of every request's queueing time (``sglang:queue_time_seconds``: from
arrival in the waiting queue to admission to a forward batch, observed at admission; one series per scheduler,
labelled ``dp_rank`` and ``tp_rank``). Its ``_sum`` and ``_count`` read before and after a measured cell give the
cell's mean queueing time: the split of TTFT into queueing and prefill that the report's time breakdown uses
when the server gives no per-request timings (the simulator's ``: sim-prefill`` stamps).

Only the window's difference is used, so requests from earlier cells and warm-ups do not count; requests
admitted in the window but still running at its end do (as SGLang observes at admission), which is why the
result is a mean per admitted request and not a per-request split.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from dataclasses import dataclass

import aiohttp

__all__ = ["QueueTimes", "parse_queue_times", "read_queue_times"]

logger = logging.getLogger(__name__)

_MAX_BYTES = 16 << 20  # SGLang's /metrics is a few hundred KB; what lies past this is not read

_SERIES = re.compile(
    r"^sglang:queue_time_seconds_(sum|count)(?:\{[^}]*\})?\s+(\S+)(?:\s+\d+)?\s*$",
    re.MULTILINE,
)


@dataclass(frozen=True)
class QueueTimes:
    """The queue-time histogram's sum (seconds) and count (requests), over all of the server's schedulers."""

    seconds: float
    requests: int

    def since(self, earlier: QueueTimes) -> QueueTimes | None:
        """The window between two readings; None when a counter went back (the server restarted)."""
        seconds, requests = self.seconds - earlier.seconds, self.requests - earlier.requests
        if requests < 0 or seconds < -1e-9:
            return None
        return QueueTimes(max(0.0, seconds), requests)

    @property
    def mean(self) -> float | None:
        return self.seconds / self.requests if self.requests > 0 else None


def parse_queue_times(text: str) -> QueueTimes | None:
    """The summed ``sglang:queue_time_seconds`` sum and count of a ``/metrics`` text; None when it has none."""
    total = {"sum": 0.0, "count": 0.0}
    seen = set()
    for kind, value in _SERIES.findall(text):
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            total[kind] += number
            seen.add(kind)
    if seen != {"sum", "count"}:
        return None
    return QueueTimes(total["sum"], round(total["count"]))


async def read_queue_times(session: aiohttp.ClientSession, base_url: str, timeout: float) -> QueueTimes | None:
    """``GET /metrics`` once; None for a server without metrics (404), an unreadable answer or no answer."""
    url = base_url.rstrip("/") + "/metrics"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                return None
            body = bytearray()
            async for chunk in resp.content.iter_chunked(1 << 16):  # bounded: an answer is never read whole
                body += chunk[: _MAX_BYTES - len(body)]
                if len(body) >= _MAX_BYTES:
                    break
            text = body.decode("utf-8", "replace")
    except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, UnicodeError) as exc:
        logger.debug("no /metrics from %s: %s", base_url, exc)
        return None
    return parse_queue_times(text)
