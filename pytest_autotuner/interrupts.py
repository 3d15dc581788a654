"""Writes a Ctrl-C or SIGTERM must not cut in half: the signal waits until the write is done.

The plugin turns SIGTERM into ``KeyboardInterrupt`` like Ctrl-C, and Python raises it in the main thread between
any two bytecodes. Inside a write to the study that tears it: Optuna's journal lock is taken and released by a
rename and an unlink, and an interrupt between them leaves the lock file behind (and a ``FileNotFoundError`` in
place of the interrupt); an interrupt between a finished trial's attributes and its ``tell`` loses a measurement
that was complete. ``signals_held`` keeps SIGINT and SIGTERM for the length of such a write and hands the first
one that came to its own handler right after, so the run still stops, one write later.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["signals_held"]

_HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block go to their handlers when it ends (main thread only: the
    only thread a Python signal handler runs in; elsewhere, and for handlers installed outside Python, a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def hold(signum: int, frame: object) -> None:
        arrived.append(signum)

    previous: dict[int, Any] = {}
    try:
        for signum in _HELD:
            handler = signal.getsignal(signum)
            if handler is None or handler == signal.SIG_IGN:
                continue  # not ours to replace (installed outside Python), or nothing to deliver
            previous[signum] = signal.signal(signum, hold)
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler)
        if arrived:
            first = arrived[0]
            restored = previous[first]
            if callable(restored):
                restored(first, None)  # the plugin's handler or Python's default: raises KeyboardInterrupt
            else:  # SIG_DFL: the signal's default action, now that it is back in place
                signal.raise_signal(first)
