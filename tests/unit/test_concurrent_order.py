"""Trials that run at once give the same search whatever order they finish in (core/outcome/session.py).

With several trials at once, the sampler is told each result as it finishes, so which configurations it proposes
next (and which best the run names) depended on this machine's timing: the same spec gave another best from run
to run. The session records finished trials in the order they were proposed, and a proposal sees exactly the
trials that were started ``workers`` proposals before it: the family below runs one search under different
finishing orders (random trial durations) and for several worker counts and strategies.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from factories import result, spec

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.trial import Deadline, Params
from pytest_autotuner.core.outcome.session import TuningSession
from pytest_autotuner.core.search.gpu_pool import GpuPool
from pytest_autotuner.core.search.space import SearchSpace
from pytest_autotuner.core.search.study import Search, study_name_for
from pytest_autotuner.threads import Threads


def _latency(params: Params) -> float:
    """A deterministic landscape: the measured E2E of a configuration (lower is better)."""
    return (
        1.0
        + abs(float(params["mem-fraction-static"]) - 0.83) * 3
        + (0.2 if params["schedule-policy"] == "fcfs" else 0.0)
        + abs(int(params["chunked-prefill-size"]) - 2048) / 4096
        + 0.05 * int(params["tp-size"])
    )


def _search(strategy: str, workers: int, timing_seed: int, patience: int | None = None) -> list[tuple[int, Params]]:
    s = spec(
        optimization={
            "strategy": strategy,
            "max_iterations": 14,
            "n_initial_random": 4,
            "confirm_runs": 0,
            "seed": 7,
            **({"patience": patience} if patience else {}),
        }
    )
    search = Search(spec=s, space=SearchSpace.from_spec(s), storage=None, study_name=study_name_for(s, "t"), seed=7,
                    max_gpus=4)  # fmt: skip
    timing = random.Random(timing_seed)
    lock = threading.Lock()

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        with lock:
            pause = timing.choice([0.0, 0.01, 0.04, 0.09])
        time.sleep(pause)  # this machine's timing: which trial finishes first
        return result(_latency(params))

    session = TuningSession(spec=s, search=search, evaluate=evaluate, workers=workers, gpu_pool=GpuPool([0, 1, 2, 3]),
                            background=Threads())  # fmt: skip
    session.search()
    trials, _ = session.records()
    return sorted((t.number, dict(t.params)) for t in trials)


@pytest.mark.parametrize(
    ("strategy", "workers", "patience"),
    [("bayesian", 2, None), ("bayesian", 3, None), ("random", 2, None), ("bayesian", 2, 3)],
)
def test_a_search_with_trials_at_once_is_the_same_whatever_order_they_finish_in(
    strategy: str, workers: int, patience: int | None
) -> None:
    runs = [_search(strategy, workers, timing_seed, patience) for timing_seed in (1, 2, 3)]
    assert runs[0] == runs[1] == runs[2]


def test_a_trial_waiting_for_its_turn_keeps_its_heartbeat_until_it_is_recorded() -> None:
    """In a shared study a RUNNING trial without a heartbeat is taken for a dead worker's and failed by the
    others (``--autotune-grace-period``); a trial that finished before an earlier one must keep beating until it
    is told, or the tell would find it failed."""
    import contextlib
    from collections.abc import Iterator

    s = spec(
        parameters={"chunked-prefill-size": [512, 1024, 2048, 4096]},
        optimization={"strategy": "grid", "max_iterations": 2, "confirm_runs": 0, "start_from_defaults": False},
    )
    search = Search(spec=s, space=SearchSpace.from_spec(s), storage=None, study_name=study_name_for(s, "t"), seed=7)
    events: list[tuple[str, int]] = []
    real_record = search.record

    @contextlib.contextmanager
    def heartbeat(proposal: Any) -> Iterator[None]:
        yield
        events.append(("heartbeat stops", proposal.number))

    def record(proposal: Any, score: Any, attrs: Any) -> None:
        events.append(("recorded", proposal.number))
        real_record(proposal, score, attrs)

    search.heartbeat = heartbeat  # type: ignore[method-assign]
    search.record = record  # type: ignore[method-assign]
    first = threading.Event()

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        if not first.is_set():
            first.set()
            time.sleep(0.4)  # the first proposed trial is the slow one
        return result(1.0)

    TuningSession(spec=s, search=search, evaluate=evaluate, workers=2, background=Threads()).search()
    assert events == [("recorded", 0), ("heartbeat stops", 0), ("recorded", 1), ("heartbeat stops", 1)]
