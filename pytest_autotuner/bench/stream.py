"""Reading an SSE stream as it arrives: each socket read stamped on arrival, parsed soon after (the benchmark
client's timing; see ``client.py``'s docstring for why).

``StreamParser`` parses one OpenAI stream incrementally (tokens per chunk, usage, the simulator's ``: sim-time``
and ``: sim-prefill`` stamps). ``StampingConnector`` gives each aiohttp connection a protocol
(``_StampingHandler``) that stamps every read with ``time.perf_counter()`` the moment the loop hands it over and
parses one connection's reads per loop iteration (``_Burst``), so a burst of reads from one decode step is not
stamped after the parsing of all the others. ``paused_gc`` keeps automatic garbage collection off while any cell
runs, so a full collection does not stamp a whole burst late.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import gc
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import aiohttp
from aiohttp.client_proto import ResponseHandler

try:  # 4x faster on the per-chunk path when available; the stdlib parser otherwise
    from orjson import loads as _json_loads
except ImportError:  # pragma: no cover
    from json import loads as _json_loads  # type: ignore[assignment,unused-ignore]

__all__ = ["SINK", "StampingConnector", "StreamParser", "StreamStopped", "new_session", "paused_gc"]

logger = logging.getLogger(__name__)

_SIM_TIME = b": sim-time "  # SSE comment with the server's time of the write that follows (the simulator)
_SIM_TIME_AT = len(_SIM_TIME)
_SIM_PREFILL = b": sim-prefill "  # SSE comment in the first write: the server's time the request's prefill began
_SIM_PREFILL_AT = len(_SIM_PREFILL)
ERROR_HEAD = 300  # bytes of a stream's or an HTTP error's body kept for its message


class _GcPause:
    """Process-wide count of cells in progress; automatic GC is off while it is above zero."""

    lock = threading.Lock()
    holders = 0
    was_enabled = True


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Automatic garbage collection off for the block; re-enabled when the last concurrent block ends.

    Leaves GC off if it was off before the first block began.
    """
    with _GcPause.lock:
        if _GcPause.holders == 0:
            _GcPause.was_enabled = gc.isenabled()
            gc.disable()
        _GcPause.holders += 1
    try:
        yield
    finally:
        with _GcPause.lock:
            _GcPause.holders -= 1
            if _GcPause.holders == 0 and _GcPause.was_enabled:
                gc.enable()


class StreamParser:
    """Incremental parser of one OpenAI SSE stream: feed it bytes with their arrival time."""

    __slots__ = ("_chat", "_last_completion", "_tail", "_usage_tokens", "attached", "chunk_times", "done", "done_at",
                 "error", "error_detail", "finished", "head", "last_at", "prefill_at", "server_at", "texts",
                 "usage")  # fmt: skip

    def __init__(self, api: str = "chat", *, keep_text: bool = False) -> None:
        self._chat, self._tail = api == "chat", b""
        self.texts: list[str] | None = [] if keep_text else None  # the reply's text pieces (multi-turn chats)
        self.attached = False  # fed by the connection's protocol (StampingConnector), not by the reading task
        self.head = b""  # the first bytes of the body, for the message of an HTTP error
        self.done_at = self.last_at = 0.0  # arrival of data: [DONE] / of the latest bytes
        # The server's time of its latest write (``: sim-time`` lines), None while the stream has none. Once it
        # has, ``chunk_times`` and ``done_at`` are server times, not arrival times.
        self.server_at: float | None = None
        self.chunk_times: list[float] = []  # arrival (or server) times of content chunks
        self.prefill_at: float | None = None  # the server's time its prefill started (``: sim-prefill``), if said
        self._usage_tokens: list[int] | None = None  # per-chunk tokens when the server sends usage per chunk
        self._last_completion = 0
        self.usage: dict[str, Any] | None = None
        self.done = self.finished = False  # saw data: [DONE] / saw a finish_reason
        self.error: str | None = None
        self.error_detail = ""

    def feed(self, data: bytes, now: float) -> bool:
        """Consume bytes that arrived at ``now``; True once the stream is over ([DONE] or malformed)."""
        if self.done or self.error:
            return True
        self.last_at = now
        if len(self.head) < ERROR_HEAD:
            self.head += data[: ERROR_HEAD - len(self.head)]
        lines = (self._tail + data).split(b"\n") if self._tail else data.split(b"\n")
        self._tail = lines.pop()
        at = now if self.server_at is None else self.server_at
        for line in lines:
            if not line.startswith(b"data:"):
                if line.startswith(_SIM_TIME):  # the server's time of what follows
                    try:
                        at = self.server_at = float(line[_SIM_TIME_AT:])
                    except ValueError:
                        self.error, self.error_detail = "malformed_sse", line[:200].decode(errors="replace")
                        return True
                elif line.startswith(_SIM_PREFILL):  # when the server started its prefill (queueing ended)
                    try:
                        self.prefill_at = float(line[_SIM_PREFILL_AT:])
                    except ValueError:
                        self.error, self.error_detail = "malformed_sse", line[:200].decode(errors="replace")
                        return True
                continue  # blank separators, other comments, event: lines
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done, self.done_at = True, at
                return True
            try:
                obj = _json_loads(payload)
                choices = obj["choices"]
            except (ValueError, KeyError, TypeError):
                self.error, self.error_detail = "malformed_sse", payload[:200].decode(errors="replace")
                return True
            usage = obj.get("usage")
            if choices:
                choice = choices[0]
                if self._chat:
                    delta = choice.get("delta")
                    text = delta.get("content") if delta else None
                else:
                    text = choice.get("text")
                if text:
                    self.chunk_times.append(at)
                    if self.texts is not None:
                        self.texts.append(text)
                    if usage:
                        self._count_usage(usage)
                if choice.get("finish_reason") is not None:
                    self.finished = True
            if usage:
                self.usage = usage
        return False

    def _count_usage(self, usage: dict[str, Any]) -> None:
        completion = int(usage.get("completion_tokens") or 0)
        if self._usage_tokens is None:
            self._usage_tokens = [1] * (len(self.chunk_times) - 1)
        self._usage_tokens.append(max(0, completion - self._last_completion))
        self._last_completion = completion

    @property
    def completion_tokens(self) -> int:
        """``usage.completion_tokens``, else the number of content chunks."""
        if self.usage and self.usage.get("completion_tokens") is not None:
            return int(self.usage["completion_tokens"])
        return len(self.chunk_times)

    @property
    def prompt_tokens(self) -> int:
        return int(self.usage.get("prompt_tokens") or 0) if self.usage else 0

    @property
    def cached_tokens(self) -> int | None:
        """``usage.prompt_tokens_details.cached_tokens``; None when the server does not report it."""
        details = self.usage.get("prompt_tokens_details") if self.usage else None
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return int(cached) if isinstance(cached, int) and not isinstance(cached, bool) else None

    def chunk_tokens(self) -> list[int]:
        """Tokens carried by each content chunk (see the module docstring)."""
        n = len(self.chunk_times)
        if self._usage_tokens is not None and len(self._usage_tokens) == n:
            return self._usage_tokens
        extra = self.completion_tokens - n
        if n == 0 or extra <= 0:
            return [1] * n
        base, rest = divmod(extra, n)
        return [1 + base + (1 if i < rest else 0) for i in range(n)]


class StreamStopped(Exception):
    """Set on a response body whose SSE stream turned malformed, to wake the request that waits for its end."""


SINK: contextvars.ContextVar[StreamParser | None] = contextvars.ContextVar("autotuner_sse_sink", default=None)


class _Burst:
    """Socket reads waiting to be parsed: each is stamped as it arrives and parsed one per loop iteration.

    When a decode step writes a chunk to every stream at once, hundreds of reads arrive within a millisecond or
    two. Parsing each on arrival (aiohttp's HTTP parser, then ours, about 15 us) stamps the later ones after all
    that work for the earlier ones: p99 lag 5.7-6.4 ms at 512 streams. Stamping costs well under a microsecond,
    so reads are only stamped on arrival, and one connection's reads are parsed per loop iteration, with a poll
    of the sockets in between that stamps whatever arrived meanwhile: p99 0.6-0.8 ms, for about a fifth more CPU
    per chunk (``benchmarks/RESULTS.md``).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.handlers: collections.deque[_StampingHandler] = collections.deque()

    def add(self, handler: _StampingHandler) -> None:
        if not self.handlers:
            self.loop.call_soon(self.flush)
        self.handlers.append(handler)

    def flush(self) -> None:
        self.handlers.popleft().flush()
        if self.handlers:
            self.loop.call_soon(self.flush)  # after the next poll


class _StampingHandler(ResponseHandler):
    """aiohttp's connection protocol, also stamping each socket read on arrival and parsing its body soon after,
    between polls (``_Burst``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, burst: _Burst | None = None) -> None:
        super().__init__(loop)
        self.sink: StreamParser | None = None
        self._burst = burst or _Burst(loop)
        self._pending: list[tuple[float, bytes]] = []

    def data_received(self, data: bytes) -> None:
        if not data or self.sink is None:  # an empty call is aiohttp resuming its parser, not a socket read
            self.flush()
            super().data_received(data)
            return
        self._pending.append((time.perf_counter(), data))
        if len(self._pending) == 1:
            self._burst.add(self)

    def flush(self) -> None:
        """Parse the reads stamped so far, in order (also before an end of stream, so nothing is overtaken)."""
        while self._pending:
            pending, self._pending = self._pending, []
            for now, data in pending:
                self._parse(now, data)

    def _parse(self, now: float, data: bytes) -> None:
        before = self._payload  # the releasing of a finished response may clear it during the call
        super().data_received(data)
        sink, payload = self.sink, self._payload or before
        if sink is None or payload is None or payload.exception() is not None:
            return
        body = payload.read_nowait()  # draining may resume aiohttp's parser: data_received(b"") above
        if body and sink.feed(body, now) and sink.error is not None:
            payload.set_exception(StreamStopped(sink.error))

    def eof_received(self) -> None:
        self.flush()
        super().eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.flush()
        super().connection_lost(exc)


@functools.cache
def _warn_unstamped() -> None:
    logger.warning("aiohttp %s does not fit _StampingHandler: chunks stamped in tasks", aiohttp.__version__)


class StampingConnector(aiohttp.TCPConnector):
    """A TCPConnector whose connections stamp and parse SSE bytes as they arrive (see the module docstring).

    ``connect`` hands the connection the parser of the request being sent (``SINK``, set by that request's
    task), so the parser sees the first body bytes, even those that arrive with the headers.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        factory = getattr(self, "_factory", None)
        fits = "_payload" in ResponseHandler.__init__.__code__.co_names
        if fits and isinstance(factory, functools.partial) and factory.func is ResponseHandler:
            burst = _Burst(self._loop)
            self._factory = cast(
                "functools.partial[ResponseHandler]",
                functools.partial(_StampingHandler, burst=burst, **factory.keywords),
            )
        else:  # pragma: no cover - a future aiohttp
            _warn_unstamped()

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        conn = await super().connect(req, traces, timeout)
        protocol = conn.protocol
        if isinstance(protocol, _StampingHandler):
            sink = protocol.sink = SINK.get()
            if sink is not None:
                sink.attached = True
        return conn


def new_session() -> aiohttp.ClientSession:
    """The session the client needs: unlimited connections that stamp chunks on arrival."""
    return aiohttp.ClientSession(connector=StampingConnector(limit=0))
