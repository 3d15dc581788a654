"""A Ctrl-C or SIGTERM in the session's thread ends an evaluation as the interruption, and a write to the study is
never cut in half (``pytest_autotuner/interrupts.py``). The whole run, signalled at many points, is in
tests/integration/test_interrupts.py; these send the signal to this process while a confirmation run is under way."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from factories import result, spec
from test_search import make_search

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, Params, TrialFailure
from pytest_autotuner.core.outcome.session import TuningSession
from pytest_autotuner.interrupts import signals_held
from pytest_autotuner.threads import Threads


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # the plugin's SIGTERM handler


@pytest.fixture
def handlers() -> Iterator[None]:
    """SIGINT as Python's default, SIGTERM raising KeyboardInterrupt as the plugin's: restored afterwards."""
    previous = {s: signal.signal(s, h) for s, h in ((signal.SIGINT, signal.default_int_handler),
                                                    (signal.SIGTERM, _raise_interrupt))}  # fmt: skip
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _signal_later(signum: int, after: float, timers: list[threading.Timer]) -> None:
    timer = threading.Timer(after, os.kill, (os.getpid(), signum))
    timers.append(timer)  # before it can fire: the test counts the runs that started
    timer.start()


@pytest.mark.usefixtures("handlers")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_inside_a_held_block_is_delivered_when_the_block_ends(signum: int) -> None:
    steps = []
    with pytest.raises(KeyboardInterrupt), signals_held():
        os.kill(os.getpid(), signum)
        for step in range(20):  # many bytecodes, and sleeps: the handler would run here if not held
            time.sleep(0.005)
            steps.append(step)
    assert len(steps) == 20
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is _raise_interrupt


@pytest.mark.usefixtures("handlers")
def test_a_held_block_without_a_signal_changes_nothing() -> None:
    with signals_held():
        pass
    assert signal.getsignal(signal.SIGTERM) is _raise_interrupt


def _blocks_until_cancelled(torn_down: list[str]) -> Callable[[Params, Deadline], BenchResult]:
    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        while not deadline.wait(0.01):
            pass
        torn_down.append("server")  # what a runtime does when its deadline is cancelled
        raise TrialFailure(FailureClass.TRIAL_TIMEOUT, "trial deadline cancelled during the benchmark")

    return evaluate


def _ignores_the_cancel(torn_down: list[str]) -> Callable[[Params, Deadline], BenchResult]:
    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        while not deadline.wait(0.01):
            pass
        torn_down.append("server")
        return result(1.0)  # a run that finished anyway: still not this configuration's measurement

    return evaluate


def _fails_on_the_cancel(torn_down: list[str]) -> Callable[[Params, Deadline], BenchResult]:
    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        while not deadline.wait(0.01):
            pass
        torn_down.append("server")
        raise ConnectionResetError("the server went away")  # a failure the interruption caused

    return evaluate


@pytest.mark.usefixtures("handlers")
@pytest.mark.parametrize("after", [0.0, 0.05, 0.3])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("make", [_blocks_until_cancelled, _ignores_the_cancel, _fails_on_the_cancel])
def test_a_signal_during_a_confirmation_run_is_the_interruption_not_a_failure(
    make: Callable[[list[str]], Callable[[Params, Deadline], BenchResult]], signum: int, after: float
) -> None:
    s = spec(optimization={"strategy": "grid", "max_iterations": 1, "confirm_runs": 2, "remeasure_best": False})
    torn_down: list[str] = []
    timers: list[threading.Timer] = []
    blocking = make(torn_down)

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        _signal_later(signum, after, timers)  # lands while this run is under way
        return blocking(params, deadline)

    session = TuningSession(spec=s, search=make_search(s), evaluate=lambda params, deadline: result(1.0),
                            background=Threads())  # fmt: skip
    session.search()
    candidate = session.ranked_candidates()[0]
    session.evaluate = evaluate
    events = []
    session.on_trial = events.append
    try:
        with pytest.raises(KeyboardInterrupt):
            session.confirm(candidate)
    finally:
        for timer in timers:
            timer.cancel()
    assert len(timers) == 1  # the first run was interrupted, no second one started
    assert torn_down == ["server"]  # the deadline was cancelled and the evaluate ended before the interrupt went on
    assert events == [] and session.confirmation_failures == []  # no run reported, none counted as failed


@pytest.mark.usefixtures("handlers")
@pytest.mark.parametrize("workers,pool", [(1, None), (2, 2), (3, 4)])
@pytest.mark.parametrize("after", [0.0, 0.01, 0.04, 0.12, 0.35])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_at_any_moment_of_a_concurrent_search_stops_every_trial_and_loses_none(
    signum: int, after: float, workers: int, pool: int | None
) -> None:
    """Trials of 30 ms or until cancelled, one to three at once on a GPU pool, tp 1 or 2: a signal at any moment
    (while a trial starts, runs, waits for GPUs, or is recorded) ends the search as the interruption; every
    evaluation that began has ended (its deadline cancelled), every GPU is free, no thread is left, and each trial
    of the study is either recorded or closed as interrupted, none left running."""
    from optuna.trial import TrialState

    from pytest_autotuner.core.search.gpu_pool import GpuPool

    s = spec(
        parameters={"tp-size": [1, 2], "chunked-prefill-size": [512, 1024, 2048, 4096]},
        optimization={"strategy": "grid", "max_iterations": 8, "confirm_runs": 0, "start_from_defaults": False},
    )
    begun, ended = [], []

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        begun.append(params)
        try:
            if deadline.wait(0.03):  # cancelled: the runtime tears its server down
                raise TrialFailure(FailureClass.TRIAL_TIMEOUT, "trial deadline cancelled")
            return result(1.0 + int(params["chunked-prefill-size"]) / 1e4)
        finally:
            ended.append(params)

    search = make_search(s)
    session = TuningSession(spec=s, search=search, evaluate=evaluate, workers=workers, writes_held=signals_held,
                            gpu_pool=GpuPool(list(range(pool))) if pool else None, background=Threads())  # fmt: skip
    timer = threading.Timer(after, os.kill, (os.getpid(), signum))
    try:
        with pytest.raises(KeyboardInterrupt):
            timer.start()  # inside: at 0 s the signal can land before start returns
            session.search()
            time.sleep(5)  # the search ended before the signal: it lands here
    finally:
        timer.cancel()
    assert len(begun) == len(ended)  # no evaluation still running
    assert not [t for t in threading.enumerate() if t.name == "autotune-trial"]
    assert session.gpu_pool is None or session.gpu_pool.free == pool
    assert not session._runs
    states = [t.state for t in search.study.get_trials()]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states


@pytest.mark.usefixtures("handlers")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_trial_that_finished_before_its_turn_is_kept_when_the_search_is_interrupted(signum: int) -> None:
    """Two trials at once: the first proposed runs until cancelled, the second finishes at once and waits for
    its turn to be told to the sampler (trials are recorded in proposal order). A signal then ends the search:
    the finished trial is in the study with its measurement, the other closed as interrupted."""
    from optuna.trial import TrialState

    s = spec(
        parameters={"chunked-prefill-size": [512, 1024, 2048, 4096]},
        optimization={"strategy": "grid", "max_iterations": 4, "confirm_runs": 0, "start_from_defaults": False},
    )
    first, second = threading.Event(), threading.Event()

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        if not first.is_set():
            first.set()
            deadline.wait(30)  # the slow first trial: until the interruption cancels it
            raise TrialFailure(FailureClass.TRIAL_TIMEOUT, "trial deadline cancelled")
        second.set()
        return result(1.0)

    search = make_search(s)
    session = TuningSession(spec=s, search=search, evaluate=evaluate, workers=2, writes_held=signals_held,
                            background=Threads())  # fmt: skip

    def signal_once_the_second_has_ended() -> None:  # however slowly this host runs the threads
        second.wait(30)
        while 1 in session._runs:  # the session has not ended it yet (it keeps it for its turn when it does)
            time.sleep(0.01)
        os.kill(os.getpid(), signum)

    watcher = threading.Thread(target=signal_once_the_second_has_ended, daemon=True)
    with pytest.raises(KeyboardInterrupt):
        watcher.start()
        session.search()
    watcher.join(5)
    trials = sorted(search.study.get_trials(), key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].value is not None
