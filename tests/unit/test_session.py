"""Session: the loop, timeouts, failures, patience and confirmation, with an injected evaluate."""

from __future__ import annotations

import threading
import time

import pytest
from factories import latency_model, result, run_session, spec, synthetic_evaluate

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, Params, TrialFailure
from pytest_autotuner.report.terminal import progress_line


def test_the_best_configuration_is_found_and_confirmed() -> None:
    s = spec(optimization={"strategy": "grid", "max_iterations": 80, "confirm_runs": 3})
    calls: list[Params] = []
    out = run_session(s, synthetic_evaluate(calls))
    best = {"tp-size": 1, "mem-fraction-static": 0.8, "schedule-policy": "fcfs", "chunked-prefill-size": 512}
    assert out.best is not None and out.best.params == best
    assert len(out.best.runs) == 3
    assert calls[-3:] == [best] * 3  # confirmation re-runs the winner
    assert len(out.trials) == 80
    assert out.verdict.passed  # no SLOs: nothing to miss


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

    out = run_session(s, lucky_once)
    assert out.best is not None
    assert any(t.meets_slos for t in out.trials)
    assert not out.verdict.passed


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
    out = run_session(s, hangs)
    assert time.monotonic() - started < 60  # without the 0.3 s timeout, nothing would end it
    assert torn_down.is_set()
    assert out.failure_counts == {"trial_timeout": 2}
    assert out.best is None and not out.verdict.passed


def test_failures_are_recorded_with_their_class_and_do_not_stop_the_session() -> None:
    s = spec(optimization={"strategy": "grid", "max_iterations": 80, "confirm_runs": 1})

    def oom_above_085(params: Params, deadline: Deadline) -> BenchResult:
        if float(params["mem-fraction-static"]) > 0.85:
            raise TrialFailure(FailureClass.OOM, "Capture cuda graph failed: CUDA out of memory", log_tail="tail")
        if params["chunked-prefill-size"] == 4096:
            raise RuntimeError("a bug in evaluate")
        return result(latency_model(params))

    out = run_session(s, oom_above_085)
    assert out.failure_counts["oom"] == 16
    assert out.failure_counts["unknown"] == 16
    failed = next(t for t in out.trials if t.failure == "oom")
    assert "CUDA out of memory" in failed.failure_message and failed.log_tail == "tail"
    assert not failed.feasible
    assert out.best is not None and out.verdict.passed


def test_patience_stops_after_trials_without_improvement() -> None:
    s = spec(optimization={"strategy": "random", "max_iterations": 60, "patience": 3, "confirm_runs": 0})
    out = run_session(s, lambda p, d: result(1.0))  # flat landscape: nothing ever improves
    assert len(out.trials) == 4
    assert "optimization.patience" in out.stopped_early


def test_progress_events_cover_search_and_confirmation() -> None:
    s = spec(optimization={"max_iterations": 4, "n_initial_random": 2, "confirm_runs": 2})
    events = []
    run_session(s, synthetic_evaluate(), on_trial=events.append)
    assert [(e.phase, e.index, e.total) for e in events] == [
        ("search", 1, 4),
        ("search", 2, 4),
        ("search", 3, 4),
        ("search", 4, 4),
        ("confirm", 1, 4),  # the best tuned configuration, then SGLang's defaults, as many runs each
        ("confirm", 2, 4),
        ("confirm", 3, 4),
        ("confirm", 4, 4),
    ]
    assert all(e.duration >= 0 for e in events)


def test_patience_counts_trials_since_the_best_improved_even_when_every_trial_misses_a_hard_slo() -> None:
    # a 4-point grid whose every trial breaks a hard SLO, each one a little less: every trial improves on the
    # best so far, so patience 2 never stops it (it stopped after 2 when SLO-breaking trials never counted as best)
    s = spec(
        parameters={"chunked-prefill-size": [512, 1024, 2048, 4096]},
        optimization={"strategy": "grid", "max_iterations": 4, "patience": 2, "confirm_runs": 0},
        slo={"latency": {"p50": {"threshold": 0.1, "hard_fail": True, "fail_ratio": 0.1}}},
        initial_configs=[{"chunked-prefill-size": size} for size in (512, 1024, 2048, 4096)],  # in this order
    )
    latency = {512: 4.0, 1024: 3.0, 2048: 2.0, 4096: 1.0}
    events = []
    out = run_session(s, lambda p, d: result(latency[int(p["chunked-prefill-size"])]), on_trial=events.append)
    searched = [e for e in events if e.phase == "search"]
    assert "patience" not in out.stopped_early
    assert len(out.trials) == 4 and all(not t.feasible for t in out.trials)
    assert [e.new_best for e in searched] == [True, True, True, True]


def test_failed_trials_never_improve_so_patience_stops_after_them() -> None:
    s = spec(optimization={"strategy": "grid", "max_iterations": 20, "patience": 3, "confirm_runs": 0})
    calls: list[Params] = []

    def first_works_then_fails(params: Params, deadline: Deadline) -> BenchResult:
        calls.append(params)
        if len(calls) > 1:
            raise TrialFailure(FailureClass.LAUNCH_FAILED, "exit 1")
        return result(1.0)

    out = run_session(s, first_works_then_fails)
    assert len(out.trials) == 4  # the measured one, then 3 failures without improvement
    assert "optimization.patience" in out.stopped_early


def test_a_lucky_run_loses_the_best_when_its_repeat_run_comes_in() -> None:
    # every configuration but A measures 0.5 s once and 3.0 s after that; A measures 1.0 s every time. Each new
    # best is measured again at once (remeasure_best), and ranks by the mean of its runs: 1.75 s loses to A
    a = {"tp-size": 1, "mem-fraction-static": 0.8, "schedule-policy": "fcfs", "chunked-prefill-size": 512}
    s = spec(optimization={"strategy": "random", "max_iterations": 6, "confirm_runs": 0}, initial_configs=[a])
    seen: set[str] = set()

    def lucky_once(params: Params, deadline: Deadline) -> BenchResult:
        key = str(sorted(params.items()))
        value = 1.0 if dict(params) == a else (3.0 if key in seen else 0.5)
        seen.add(key)
        return result(value)

    events = []
    out = run_session(s, lucky_once, on_trial=events.append)
    searched = [e for e in events if e.phase == "search"]
    assert [e.new_best for e in searched] == [True, False, True, False, True, False]
    assert [e.repeat_of for e in searched] == [None, 0, None, 2, None, 4]
    assert [e.still_best for e in searched[1::2]] == [True, False, False]
    assert [e.repeat_mean for e in searched[1::2]] == [1.0, 1.75, 1.75]
    assert out.best is not None and dict(out.best.params) == a and out.best.source_trial == 0
    assert len(out.best.runs) == 2  # confirm_runs 0: the search's two runs of A
    lines = [progress_line(e, "minimize_latency") for e in searched]
    assert lines[2].endswith("<- new best")
    assert "trial #3 [4/6] repeat of #2 " in lines[3]
    assert lines[3].endswith("mean of 2 runs 1.750 s, no longer the best")
    assert lines[1].endswith("mean of 2 runs 1.000 s")


def test_without_remeasure_best_the_lucky_run_keeps_the_best() -> None:
    a = {"tp-size": 1, "mem-fraction-static": 0.8, "schedule-policy": "fcfs", "chunked-prefill-size": 512}
    s = spec(
        optimization={"strategy": "random", "max_iterations": 3, "confirm_runs": 0, "remeasure_best": False},
        initial_configs=[a],
    )
    out = run_session(s, lambda p, d: result(1.0 if dict(p) == a else 0.5))
    assert out.best is not None and dict(out.best.params) != a
    assert all(t.repeat_of is None for t in out.trials)


@pytest.mark.parametrize("strategy", ["bayesian", "random", "grid"])
@pytest.mark.parametrize("seed", [1, 2])
def test_threads_and_inline_run_the_same_search(strategy: str, seed: int) -> None:
    """The session's thread decides everything; where an evaluation runs (a thread of its own, or the caller's)
    changes nothing a one-worker search proposes, records or confirms."""
    from pytest_autotuner.core.outcome.background import Inline
    from pytest_autotuner.threads import Threads

    s = spec(
        parameters={"tp-size": [1, 2], "chunked-prefill-size": [512, 1024, 2048, 4096], "max-running-requests":
                    {"low": 8, "high": 128, "step": 8}},
        optimization={"strategy": strategy, "max_iterations": 12, "confirm_runs": 1, "seed": seed},
    )  # fmt: skip

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        return result(
            1.0 + int(params["chunked-prefill-size"]) / 4096 - abs(int(params["max-running-requests"]) - 64) / 256
        )

    runs = [run_session(s, evaluate, background=background) for background in (Threads(), Inline())]
    threaded, inline = ([(t.number, dict(t.params), t.objective) for t in out.trials] for out in runs)
    assert threaded == inline and len(threaded) == 12
    assert runs[0].best is not None and runs[1].best is not None
    assert runs[0].best.params == runs[1].best.params
    assert runs[0].verdict.status == runs[1].verdict.status
