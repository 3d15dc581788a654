"""One request in flight: the replica driver writes its chunks straight to the socket when they are due.

Every write of a request that asks for stamps (``X-Sim-Token`` or ``X-Sim-Stamps`` request header: the
project's client) starts with an SSE comment line ``: sim-time <seconds>`` carrying the simulated time at which
its tokens were produced; the first write also carries ``: sim-prefill <seconds>``, when the request was
first admitted to a prefill batch (its queueing ends there; the client keeps it as the record's
``queue_time``). Other clients get SGLang's plain stream: SSE allows comment lines, but SGLang's own
``bench_serving`` parses every non-empty line as ``data:`` JSON and fails on them. With the request's simulated
arrival (the ``X-Sim-Arrival`` response header) the benchmark client measures in server time, so neither the
speed-up nor the host's load reaches the measurement (see ``clock.py`` and ``bench/client.py``).

Writing from the driver (no queue, no task switch per chunk) and coalescing the tail (last content chunk,
finish chunk, usage chunk, ``[DONE]``) into one write keeps the server's CPU per token low, so emission stays
on time at default speed-up with tens of concurrent streams on a small machine.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pytest_autotuner.sim.protocol import sse, token_text

if TYPE_CHECKING:
    from pytest_autotuner.sim.protocol import ResponseShape
    from pytest_autotuner.sim.scheduler import SimRequest

__all__ = ["SIM_PREFILL_PREFIX", "SIM_TIME_PREFIX", "LiveRequest", "sim_time_line"]

_MARK = "\x00"
_MALFORMED_LINE = b'data: {"id": "broken", "choices": [{"delta": \n\n'
SIM_TIME_PREFIX = b": sim-time "  # the comment line that opens every write, then the simulated seconds
SIM_PREFILL_PREFIX = b": sim-prefill "  # in the first write: when the request's prefill started (simulated s)


def sim_time_line(at: float) -> bytes:
    """The SSE comment that stamps a write with its simulated time."""
    return b"%b%a\n" % (SIM_TIME_PREFIX, at)  # repr: the exact float


class LiveRequest:
    """Streams (or collects) one request's tokens; ``done`` is set when its last token is out."""

    def __init__(
        self,
        sim: SimRequest,
        shape: ResponseShape,
        *,
        malformed: bool = False,
        stamped: bool = True,
        stop_after: int | None = None,
    ) -> None:
        self.sim = sim
        self.stop_after = stop_after  # a fault: the stream writes no more than this many tokens and never ends
        self.stamped = stamped  # each write opens with its ``: sim-time`` line
        self.shape = shape
        self.sent = 0  # tokens written to the client (streaming) or produced (non-streaming)
        self.done = asyncio.Event()
        self._due = 0
        self._due_at = 0.0
        self.follow_up: str | None = None  # promise key of the request the client sends at this one's end
        self.think = 0.0  # simulated seconds after this one's end that the follower arrives
        self.token: str | None = None  # the client's name for it (``X-Sim-Token``)
        #: simulated time of its arrival, then of its latest write: what the server last did for it
        self.progress_at: float | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._broken = False
        self._malformed = malformed
        self._template: tuple[bytes, bytes] | None = None
        if shape.req.api != "generate":
            prefix, _, suffix = sse(shape.content_chunk(_MARK, 0)).partition(b'"\\u0000"')
            self._template = (prefix, suffix)

    @property
    def finish_reason(self) -> str:
        return "length" if self.sim.output_tokens >= self.sim.max_new_tokens else "stop"

    def text(self, start: int, stop: int) -> str:
        return "".join(token_text(i) for i in range(start, stop))

    def attach(self, transport: asyncio.BaseTransport | None) -> None:
        """Start streaming (response headers already sent); writes whatever came due before."""
        self._transport = transport
        if self._due > self.sent:
            self.advance(self._due, self._due_at)

    @property
    def stopped(self) -> bool:
        """The stream stopped mid-response (``stop_after``): nothing more is written, and it never ends."""
        return self.stop_after is not None and self.stop_after < self.sim.output_tokens

    @property
    def broken(self) -> bool:
        """The client went away before the last token was written."""
        return self._broken

    def advance(self, upto: int, at: float) -> None:
        """Tokens ``sent .. upto`` are due now, produced at simulated time ``at`` (called by the driver)."""
        self._due, self._due_at = upto, at
        finished = upto >= self.sim.output_tokens
        if self._transport is None:
            if finished:
                self.sent = upto
                self.done.set()
            return
        if self.stopped:
            assert self.stop_after is not None
            if self._transport is not None and not self._broken and self.sent < self.stop_after:
                self.progress_at = at
                self._write(self._stamp(at) + self._content(min(upto, self.stop_after)))
                self.sent = min(upto, self.stop_after)
            if finished:
                self.done.set()
            return
        if not self._broken:
            payload = self._stamp(at) + self._content(upto)
            if self._malformed and 2 * upto >= self.sim.output_tokens:
                payload += _MALFORMED_LINE
                self._malformed = False
            if finished:
                payload += self._tail(upto)
            self.progress_at = at
            self._write(payload)
        self.sent = upto
        if finished:
            self.done.set()

    def _stamp(self, at: float) -> bytes:
        """The comment lines that open a write: its simulated time, and in the first one the prefill start."""
        if not self.stamped:
            return b""
        start = self.sim.prefill_start
        first = b"%b%a\n" % (SIM_PREFILL_PREFIX, start) if self.sent == 0 and start is not None else b""
        return sim_time_line(at) + first

    def _content(self, upto: int) -> bytes:
        if self._template is None:  # native /generate streams the cumulative text
            self.shape.cached_tokens = self.sim.cached_tokens
            reason = self.finish_reason if upto >= self.sim.output_tokens else None
            return sse(self.shape.content_chunk(self.text(0, upto), upto, reason))
        prefix, suffix = self._template
        return b"".join((prefix, b'"', self.text(self.sent, upto).encode(), b'"', suffix))

    def _tail(self, upto: int) -> bytes:
        self.shape.cached_tokens = self.sim.cached_tokens
        parts = []
        if self.shape.req.api != "generate":
            parts.append(sse(self.shape.finish_chunk(self.finish_reason)))
            if self.shape.req.include_usage:
                parts.append(sse(self.shape.usage_chunk(upto)))
        parts.append(sse("[DONE]"))
        return b"".join(parts)

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self._broken = True  # the client went away; the request still runs to the end, like SGLang
            return
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(b"%x\r\n%b\r\n" % (len(data), data))  # HTTP chunked framing
