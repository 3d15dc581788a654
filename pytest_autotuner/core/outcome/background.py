"""What runs the session's evaluations beside it: the ``Background`` protocol, and ``Inline`` (none).

The session (``session.py``) starts no thread. It prepares each evaluation with its ``Background``, begins it, and
looks at it from its own thread: the plugin passes ``pytest_autotuner.threads.Threads`` (a thread per
evaluation, so trials overlap and ``timeout_per_iteration`` holds); tests and benchmarks whose evaluate always
returns may run it ``Inline``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["Background", "Inline", "Running"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Running(Protocol[T_co]):
    """One evaluation a ``Background`` prepared: started by ``begin``."""

    def begin(self) -> None:
        """Start it (returns at once, or, inline, when it has ended)."""
        ...

    def ended(self) -> bool:
        """Whether it returned or raised, or never began."""
        ...

    def outcome(self) -> T_co:
        """What it returned, or raise what it raised (only once it has ended)."""
        ...


class Background(Protocol):
    """Runs evaluations beside the session's thread (the edge's threads: ``pytest_autotuner.threads``).

    ``prepare`` and ``begin`` are two steps so that the session holds an evaluation before it starts: a Ctrl-C
    that lands while it starts finds it, cancels its deadline and waits for its teardown."""

    def prepare(self, work: Callable[[], T]) -> Running[T]:
        """An evaluation of ``work``, not yet started."""
        ...

    def wait(self, timeout: float) -> None:
        """Until an evaluation ends that ended after the last ``wait`` returned, or ``timeout`` seconds."""
        ...


class _Inline(Generic[T]):
    def __init__(self, work: Callable[[], T]) -> None:
        self._work = work
        self._done = False
        self._value: T | None = None
        self._error: Exception | None = None

    def begin(self) -> None:
        try:
            self._value = self._work()
        except Exception as err:  # carried like a thread's: the session scores it
            self._error = err
        finally:
            self._done = True

    def ended(self) -> bool:
        return True  # before begin (never began) and after it (inline: begin returns when it has ended)

    def outcome(self) -> T:
        if not self._done:
            raise RuntimeError("the evaluation never began")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


class Inline:
    """No background: ``begin`` runs the evaluation to its end in the caller's thread (one trial at a time, and no
    timeout can stop it). A Ctrl-C inside it is the caller's."""

    def prepare(self, work: Callable[[], T]) -> Running[T]:
        return _Inline(work)

    def wait(self, timeout: float) -> None:
        return None
