"""The benchmark client in a child process of its own (concurrent trials): same results, same failures, and
no child outlives its trial."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from processes import descendants
from test_client_faults import FakeSglang, ServerThread, endpoint, fake, make_plan, server

from pytest_autotuner.bench.child import run_benchmark_in_child
from pytest_autotuner.bench.client import run_benchmark
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, ParamValue, TrialFailure
from pytest_autotuner.evaluate import make_evaluate
from pytest_autotuner.runtimes.base import Endpoint

__all__ = ["fake", "server"]  # the fixtures, shared with the client's tests


def clients() -> list[int]:
    """Benchmark client processes below this one."""
    found = []
    for pid in descendants(os.getpid()):
        with contextlib.suppress(FileNotFoundError):
            if b"pytest_autotuner.bench.child" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def when_a_client_runs(action: Callable[[int], None], limit: float = 20.0) -> list[int]:
    """In a thread: wait for a client process, then ``action(pid)``; returns the pids it acted on."""
    acted: list[int] = []

    def watch() -> None:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if found := clients():
                action(found[0])
                acted.append(found[0])
                return
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    return acted


def test_a_child_client_measures_what_the_in_process_client_measures(server: ServerThread) -> None:
    plan = make_plan(max_requests=12)
    child = run_benchmark_in_child(endpoint(server), plan, deadline=Deadline(60))
    here = run_benchmark(endpoint(server), plan)
    assert child.server_info == here.server_info == {"version": "fake", "max_total_num_tokens": 1234}
    assert [c.label for c in child.cells] == [c.label for c in here.cells]
    cell = child.cells[0]
    assert cell.completed == 12 and cell.errors == {}
    assert [(r.requested_input_tokens, r.requested_output_tokens) for r in cell.records] == [
        (r.requested_input_tokens, r.requested_output_tokens) for r in here.cells[0].records
    ]
    assert all(r.output_tokens == 6 and r.e2e is not None for r in cell.records)
    assert clients() == []


@pytest.mark.parametrize(
    ("fault", "kind"), [("http_500", FailureClass.BENCHMARK_ERRORS), ("stall", FailureClass.STALLED)]
)
def test_a_trial_failure_in_the_child_comes_back_as_the_same_failure(
    server: ServerThread, fake: FakeSglang, fault: str, kind: FailureClass
) -> None:
    fake.fault, fake.fault_every = fault, 2
    plan = make_plan(max_error_rate=0.1, max_time=0.5, request_timeout=60, min_completed=15)
    with pytest.raises(TrialFailure) as in_child:
        run_benchmark_in_child(endpoint(server), plan, deadline=Deadline(60))
    assert type(in_child.value) is TrialFailure and in_child.value.failure_class is kind
    fake.requests = 0
    with pytest.raises(TrialFailure) as here:
        run_benchmark(endpoint(server), plan)
    assert in_child.value.message == here.value.message
    assert str(in_child.value) == str(here.value)


def test_cancelling_the_deadline_kills_the_child_client(server: ServerThread, fake: FakeSglang) -> None:
    fake.fault = "stall"
    deadline = Deadline(None)
    killed = when_a_client_runs(lambda _pid: deadline.cancel())
    with pytest.raises(TrialFailure) as info:
        run_benchmark_in_child(endpoint(server), make_plan(request_timeout=600, max_time=600), deadline=deadline)
    assert info.value.failure_class is FailureClass.TRIAL_TIMEOUT and "cancelled" in info.value.message
    assert killed and clients() == []
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # gone and reaped, not a zombie


def test_an_expired_deadline_kills_the_child_client(server: ServerThread, fake: FakeSglang) -> None:
    fake.fault = "stall"
    with pytest.raises(TrialFailure) as info:
        run_benchmark_in_child(endpoint(server), make_plan(request_timeout=600, max_time=600), deadline=Deadline(1.5))
    assert info.value.failure_class is FailureClass.TRIAL_TIMEOUT
    assert clients() == []


def test_a_client_that_dies_without_a_result_fails_the_trial_with_its_exit_code(
    server: ServerThread, fake: FakeSglang
) -> None:
    fake.fault = "stall"
    killed = when_a_client_runs(lambda pid: os.kill(pid, signal.SIGKILL))
    with pytest.raises(TrialFailure) as info:
        run_benchmark_in_child(endpoint(server), make_plan(request_timeout=600, max_time=600), deadline=Deadline(60))
    assert killed and info.value.failure_class is FailureClass.UNKNOWN
    assert "exited with code -9 without a result" in info.value.message


class FakeRuntime:
    """A runtime host whose every launch is the in-test FakeSglang (it is its own Server)."""

    kind = "fake"

    def __init__(self, base: Endpoint) -> None:
        self.endpoint = base

    @contextlib.contextmanager
    def launch(self, params: Mapping[str, ParamValue], *, deadline: Deadline, label: str) -> Iterator[FakeRuntime]:
        yield self

    def is_alive(self) -> bool:
        return True

    def log_tail(self, lines: int = 40) -> str:
        return ""


@pytest.mark.parametrize("client_process", [True, False])
def test_evaluate_runs_the_client_in_a_child_process_only_when_asked(
    server: ServerThread, fake: FakeSglang, client_process: bool
) -> None:
    fake.token_delay = 0.05  # each request ~0.3 s: long enough to see the child
    seen: list[list[int]] = []
    host = FakeRuntime(endpoint(server))
    evaluate = make_evaluate(host, make_plan(max_requests=8), client_process=client_process)  # type: ignore[arg-type]
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            seen.append(clients())
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = evaluate({}, Deadline(60))
    finally:
        watching.set()
        watcher.join()
    assert result.cells[0].completed == 8
    assert any(seen) is client_process
    assert clients() == []


@pytest.mark.slow
def test_concurrent_trials_through_the_plugin_measure_with_child_clients(pytester: pytest.Pytester) -> None:
    spec = {
        "task_name": "workers-task",
        "model": {"id_or_path": "meta-llama/Llama-3.2-1B-Instruct"},
        "runtime": "sim",
        "parameters": {"chunked-prefill-size": [512, 2048]},
        "optimization": {"strategy": "grid", "max_iterations": 2, "timeout_per_iteration": 60, "confirm_runs": 1},
        "benchmark": {"traffic_scenarios": ["D(64,32)"], "num_concurrency": [4], "max_requests_per_iteration": 12},
        "slo": {"ttft": {"p90": {"threshold": 5.0}}},
        "simulator": {"speedup": 8, "startup_scale": 0.01},
    }
    (pytester.path / "tuning_specs").mkdir()
    (pytester.path / "tuning_specs" / "workers.json").write_text(json.dumps(spec))
    result = pytester.runpytest_subprocess("--autotune", "--autotune-workers", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*up to 2 trial(s) at once*", "*trial #* [[]?/2] * SLO ok*", "*trial #* [[]?/2] * SLO ok*"]
    )
