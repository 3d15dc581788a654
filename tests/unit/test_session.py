"""Session: the loop, timeouts, failures, patience and confirmation, with an injected evaluate."""

from __future__ import annotations

import threading
import time

from factories import latency_model, result, spec, synthetic_evaluate

from pytest_autotuner.core.metrics import BenchResult
from pytest_autotuner.core.search import Search, study_name_for
from pytest_autotuner.core.session import TuningSession
from pytest_autotuner.core.space import SearchSpace
from pytest_autotuner.core.trial import Deadline, FailureClass, Params, TrialFailure


def session(s, evaluate, **kwargs):
    search = Search(spec=s, space=SearchSpace.from_spec(s), storage=None, study_name=study_name_for(s, "t"), seed=1)
    return TuningSession(spec=s, search=search, evaluate=evaluate, **kwargs)


def test_the_best_configuration_is_found_and_confirmed() -> None:
    s = spec(optimization={"strategy": "grid", "max_iterations": 80, "confirm_runs": 3})
    calls: list[Params] = []
    out = session(s, synthetic_evaluate(calls)).run()
    best = {"tp-size": 1, "mem-fraction-static": 0.8, "schedule-policy": "fcfs", "chunked-prefill-size": 512}
    assert out.best is not None and out.best.params == best
    assert len(out.best.runs) == 3
    assert calls[-3:] == [best] * 3  # confirmation re-runs the winner
    assert len(out.trials) == 80
    assert out.passed  # no SLOs: nothing to miss


def test_verdict_comes_from_confirmation_samples_not_the_lucky_search_run() -> None:
    s = spec(
        optimization={"strategy": "grid", "max_iterations": 80, "confirm_runs": 2},
        slo={"latency": {"p50": {"threshold": 1.12}}},
    )
    seen: set[str] = set()

    def lucky_once(params: Params, deadline: Deadline) -> BenchResult:
        key = str(params)
        value = latency_model(params)
        if key in seen:  # a rerun does not repeat the lucky draw
            value += 0.1
        seen.add(key)
        return result(value)

    out = session(s, lucky_once).run()
    assert out.best is not None
    assert any(t.meets_slos for t in out.trials)
    assert not out.passed


def test_a_hanging_evaluate_is_stopped_at_the_timeout() -> None:
    s = spec(
        optimization={
            "max_iterations": 2,
            "n_initial_random": 1,
            "timeout_per_iteration": 0.3,
            "confirm_runs": 0,
        }
    )
    torn_down = threading.Event()

    def hangs(params: Params, deadline: Deadline) -> BenchResult:
        while not deadline.cancelled:  # a runtime polls its deadline and tears down
            time.sleep(0.01)
        torn_down.set()
        raise TrialFailure(FailureClass.TRIAL_TIMEOUT, "cancelled")

    started = time.monotonic()
    out = session(s, hangs).run()
    assert time.monotonic() - started < 60  # without the 0.3 s timeout, nothing would end it
    assert torn_down.is_set()
    assert out.failure_counts == {"trial_timeout": 2}
    assert out.best is None and not out.passed


def test_failures_are_recorded_with_their_class_and_do_not_stop_the_session() -> None:
    s = spec(optimization={"strategy": "grid", "max_iterations": 80, "confirm_runs": 1})

    def oom_above_085(params: Params, deadline: Deadline) -> BenchResult:
        if float(params["mem-fraction-static"]) > 0.85:
            raise TrialFailure(FailureClass.OOM, "Capture cuda graph failed: CUDA out of memory", log_tail="tail")
        if params["chunked-prefill-size"] == 4096:
            raise RuntimeError("a bug in evaluate")
        return result(latency_model(params))

    out = session(s, oom_above_085).run()
    assert out.failure_counts["oom"] == 16
    assert out.failure_counts["unknown"] == 16
    failed = next(t for t in out.trials if t.failure == "oom")
    assert "CUDA out of memory" in failed.failure_message and failed.log_tail == "tail"
    assert not failed.feasible
    assert out.best is not None and out.passed


def test_patience_stops_after_trials_without_improvement() -> None:
    s = spec(optimization={"strategy": "random", "max_iterations": 60, "patience": 3, "confirm_runs": 0})
    out = session(s, lambda p, d: result(1.0)).run()  # flat landscape: nothing ever improves
    assert len(out.trials) == 4
    assert "optimization.patience" in out.stopped_early


def test_progress_events_cover_search_and_confirmation() -> None:
    s = spec(optimization={"max_iterations": 4, "n_initial_random": 2, "confirm_runs": 2})
    events = []
    session(s, synthetic_evaluate(), on_trial=events.append).run()
    assert [(e.phase, e.index, e.total) for e in events] == [
        ("search", 1, 4),
        ("search", 2, 4),
        ("search", 3, 4),
        ("search", 4, 4),
        ("confirm", 1, 2),
        ("confirm", 2, 2),
    ]
    assert all(e.duration >= 0 for e in events)
