"""A trial's Deadline (core/measure/trial.py): its budget, and a cancel from another thread (the session's, on
Ctrl-C or a timeout) ending a wait at once, not when the wait would have ended."""

from __future__ import annotations

import threading
import time

from pytest_autotuner.core.measure.trial import Deadline


def test_a_cancel_from_another_thread_ends_a_long_wait() -> None:
    deadline = Deadline(None)
    timer = threading.Timer(0.05, deadline.cancel)
    timer.start()
    started = time.monotonic()
    assert deadline.wait(3600.0) is True  # would sleep an hour; the cancel ends it
    assert time.monotonic() - started < 600  # far from the hour the wait asked for
    assert deadline.cancelled and deadline.expired and deadline.remaining() == 0.0


def test_a_wait_is_bounded_by_the_budget_and_says_when_it_ran_out() -> None:
    assert Deadline(None).wait(0.0) is False  # no budget: never expired
    short = Deadline(0.01)
    assert short.wait(3600.0) is True and short.expired and not short.cancelled
    roomy = Deadline(3600.0)
    assert roomy.wait(0.01) is False and not roomy.expired
