"""Evaluations beside the tuning session: each in a daemon thread of its own (the core's ``Background``).

The session (``core/outcome/session.py``) starts no thread: it hands each evaluation to ``Threads.start`` and
keeps the clocks, the GPUs and the results in its own thread, which is where Ctrl-C and SIGTERM land. A thread
here only runs ``evaluate`` and says when it has ended; it never touches the study. Daemon threads: an evaluate
that ignores its cancelled deadline past the teardown grace does not keep the process alive at exit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Threads"]

T = TypeVar("T")


class _Thread(Generic[T]):
    """One evaluation in a thread; what it returned or raised is kept for the session's thread."""

    def __init__(self, work: Callable[[], T], on_end: Callable[[], None]) -> None:
        self._work = work
        self._on_end = on_end
        self._ended = threading.Event()
        self._begun = False
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="autotune-trial", daemon=True)

    def _run(self) -> None:
        try:
            self._value = self._work()
        except BaseException as err:  # carried to the session's thread
            self._error = err
        finally:
            self._ended.set()
            self._on_end()

    def begin(self) -> None:
        self._begun = True
        self._thread.start()

    def ended(self) -> bool:
        return self._ended.is_set() or not self._begun

    def outcome(self) -> T:
        if not self._ended.is_set():
            raise RuntimeError("the evaluation has not ended")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


class Threads:
    """``Background`` on threads: each prepared evaluation begins in a new daemon thread; ``wait`` returns when one
    ends."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._unseen = False  # an evaluation ended since the last wait returned

    def prepare(self, work: Callable[[], T]) -> _Thread[T]:
        return _Thread(work, self._ended)

    def _ended(self) -> None:
        with self._changed:
            self._unseen = True
            self._changed.notify_all()

    def wait(self, timeout: float) -> None:
        with self._changed:
            if not self._unseen:
                self._changed.wait(timeout)
            self._unseen = False
