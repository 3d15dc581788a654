"""Several pytest processes on one study in a real PostgreSQL: no double counting, no duplicate
configuration, a report job that judges the whole study, and no trial stuck after a worker dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from processes import descendants

pytestmark = pytest.mark.slow

DEFAULT_URL = "postgresql://autotune:autotune@127.0.0.1:5432/autotune"


@pytest.fixture(scope="module")
def postgres_url() -> str:
    url = os.environ.get("AUTOTUNE_TEST_POSTGRES_URL", DEFAULT_URL)
    try:
        import sqlalchemy

        with sqlalchemy.create_engine(url).connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except Exception as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI (run .ci/start-postgres): {url}: {err}")
        pytest.skip(f"no PostgreSQL at {url} (run .ci/start-postgres): {type(err).__name__}")
    return url


def write_spec(
    folder: Path, task: str, max_iterations: int, startup_scale: float = 0.02, **optimization: object
) -> None:
    spec = {
        "task_name": task,
        "model": {"id_or_path": "meta-llama/Llama-3.2-1B-Instruct"},
        "runtime": "sim",
        "parameters": {"chunked-prefill-size": [256, 512, 1024, 2048, 4096], "schedule-policy": ["fcfs", "lpm"]},
        "optimization": {"strategy": "bayesian", "max_iterations": max_iterations, "n_initial_random": 3,
                         "timeout_per_iteration": 60, "confirm_runs": 1, **optimization},
        "benchmark": {"traffic_scenarios": ["D(64,32)"], "num_concurrency": [4], "max_requests_per_iteration": 12,
                      "warmup_requests": 1},
        "slo": {"latency": {"p90": {"threshold": 10.0}}},
        "simulator": {"speedup": 4, "startup_scale": startup_scale},
    }  # fmt: skip
    (folder / "tuning_specs").mkdir(parents=True, exist_ok=True)
    (folder / "tuning_specs" / f"{task}.json").write_text(json.dumps(spec))


def pytest_cmd(folder: Path, url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "--autotune", "-p", "no:cacheprovider", "--rootdir", str(folder),
            f"--autotune-storage={url}", "--autotune-report-dir", str(folder / "reports"), *extra]  # fmt: skip


def signal_tree(pid: int, signum: int, known: list[int] | None = None) -> list[int]:
    """Send ``signum`` to a process and all its descendants (and to ``known`` ones); return whom it reached."""
    reached = []
    for target in dict.fromkeys([*(known or []), pid, *descendants(pid)]):
        try:
            os.kill(target, signum)
            reached.append(target)
        except ProcessLookupError:
            pass
    return reached


def study_trials(url: str, task: str) -> list:
    import optuna

    summaries = [s for s in optuna.study.get_all_study_summaries(url) if s.study_name.startswith(f"{task}-")]
    assert len(summaries) == 1, [s.study_name for s in summaries]
    return optuna.load_study(study_name=summaries[0].study_name, storage=url).get_trials(deepcopy=False)


def test_three_workers_share_one_study_and_a_report_job_judges_it(tmp_path: Path, postgres_url: str) -> None:
    task = f"shared-{uuid.uuid4().hex[:8]}"
    write_spec(tmp_path, task, max_iterations=9)
    workers = [
        subprocess.Popen(pytest_cmd(tmp_path, postgres_url), cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for _ in range(3)
    ]  # fmt: skip
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), "\n".join(outputs)

    from optuna.trial import TrialState

    trials = study_trials(postgres_url, task)
    measured = [t for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len(measured) == 9  # the budget is study-wide, a new best's repeat run included: no overshoot
    keys = [json.dumps(t.params, sort_keys=True) for t in measured]
    repeats = {t.number: t.user_attrs["repeat_of"] for t in measured if "repeat_of" in t.user_attrs}
    params = {t.number: t.params for t in trials}
    assert all(params[number] == params[original] for number, original in repeats.items())
    assert len(set(keys)) == 9 - len(repeats)  # no configuration measured twice but a new best's repeat
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    ran_here = [sum(line.strip().startswith("trial ") for line in out.splitlines()) for out in outputs]
    assert sum(ran_here) == 9 and max(ran_here) < 9  # the work was shared

    report = subprocess.run(pytest_cmd(tmp_path, postgres_url, "--autotune-report-only"), cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert report.returncode == 0, report.stdout
    assert "report only: no trials run" in report.stdout
    assert not [line for line in report.stdout.splitlines() if line.strip().startswith("trial ")]
    results = json.loads((tmp_path / "reports" / task / "results.json").read_text())
    # the product's ranking: a configuration measured twice (a new best's repeat run) by the mean of its runs
    from pytest_autotuner.core.outcome.records import TrialRecord, by_configuration
    from pytest_autotuner.inputs import load_spec

    maximize = load_spec(tmp_path / "tuning_specs" / f"{task}.json").optimization.direction == "maximize"
    ranked = by_configuration([TrialRecord.from_trial(t) for t in measured], maximize)
    assert results["best"]["params"] == ranked[0].params, [(r.number, r.params, r.value, r.runs) for r in ranked]
    assert results["trials"]["total"] == 9  # the report counts every finished trial of the study, once


def test_a_worker_killed_mid_trial_leaves_no_trial_running_after_the_grace_period(
    tmp_path: Path, postgres_url: str
) -> None:
    import optuna
    from optuna.trial import TrialState

    task = f"killed-{uuid.uuid4().hex[:8]}"
    # launches of about 7 s (the 1B model's modelled 15 s x 2 / speedup 4): on a busy 2-core machine one look at
    # the study takes 2-4 s, and trials of well under a second (startup_scale 0.02) all finished between two looks
    write_spec(tmp_path, task, max_iterations=4, startup_scale=2.0)
    grace = ["--autotune-grace-period", "3"]
    doomed = subprocess.Popen(pytest_cmd(tmp_path, postgres_url, *grace), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    give_up = time.monotonic() + 60
    running: list = []
    while time.monotonic() < give_up and not running:
        time.sleep(0.3)
        try:
            seen = [t for t in study_trials(postgres_url, task) if t.state == TrialState.RUNNING]
        except (AssertionError, KeyError, optuna.exceptions.OptunaError):
            continue
        if not seen:
            continue
        # freeze the worker, then look again: a trial still running now is one it will never finish (a trial
        # seen running a moment ago may have completed before the signal landed); one frozen inside ``ask`` has
        # no configuration yet to retry, so wait for a trial that has one
        victims = signal_tree(doomed.pid, signal.SIGSTOP)
        running = [t for t in study_trials(postgres_url, task) if t.state == TrialState.RUNNING and t.params]
        if not running:
            signal_tree(doomed.pid, signal.SIGCONT, victims)
    assert running, "the worker never started a trial"
    signal_tree(doomed.pid, signal.SIGKILL, victims)  # like a runner losing power: no teardown, no last words
    doomed.wait(10)
    time.sleep(3.5)  # the grace period passes

    survivor = subprocess.run(pytest_cmd(tmp_path, postgres_url, *grace), cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
    assert survivor.returncode == 0, survivor.stdout
    trials = study_trials(postgres_url, task)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    killed = next(t for t in trials if t.number == running[0].number)
    assert killed.state == TrialState.FAIL
    retried = [t for t in trials if t.state == TrialState.COMPLETE and t.params == killed.params]
    assert retried, "the dead worker's configuration was retried"


def test_trials_of_a_worker_killed_before_its_heartbeat_thread_are_failed_after_the_grace_period(
    postgres_url: str,
) -> None:
    """Killed right after ``ask`` (the asked trial has only the heartbeat ``ask`` records) or inside it (the trial
    has no parameters and no heartbeat yet): another worker fails both once the grace period has passed."""
    import optuna
    from factories import spec
    from optuna.trial import TrialState

    from pytest_autotuner.core.search import optuna_compat
    from pytest_autotuner.core.search.space import SearchSpace
    from pytest_autotuner.core.search.study import Search
    from pytest_autotuner.study_storage import open_storage

    s = spec(task_name=f"early-{uuid.uuid4().hex[:8]}", optimization={"max_iterations": 6, "seed": 3})

    def worker() -> Search:
        return Search(spec=s, space=SearchSpace.from_spec(s), storage=open_storage(postgres_url, 1),
                      study_name=s.task_name, seed=3, local_storage=False, grace_period=1)  # fmt: skip

    dead = worker()
    asked = dead._ask()  # then the worker dies: no heartbeat thread, no tell
    storage = optuna_compat.storage_of(dead.study)
    bare = storage.create_new_trial(storage.get_study_id_from_name(s.task_name))  # died inside ask: no parameters
    time.sleep(2.5)
    assert worker().propose() is not None
    states = {t.number: t.state for t in optuna.load_study(study_name=s.task_name, storage=postgres_url).trials}
    assert states[asked.number] == TrialState.FAIL
    assert states[storage.get_trial_number_from_id(bare)] == TrialState.FAIL
