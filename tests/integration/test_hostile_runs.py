"""Hostile runs through the plugin: clashing task names, a journal in use, a torn journal, an owned flag."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from factories import write_specs

pytestmark = pytest.mark.slow

FAST_SIM = {"speedup": 8, "startup_scale": 0.01}


def sim_spec(name: str, **overrides: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "task_name": name,
        "model": {"id_or_path": "meta-llama/Llama-3.2-1B-Instruct"},
        "runtime": "sim",
        "parameters": {"chunked-prefill-size": [512, 2048]},
        "optimization": {"strategy": "grid", "max_iterations": 2, "timeout_per_iteration": 60, "confirm_runs": 0},
        "benchmark": {
            "traffic_scenarios": ["D(64,32)"],
            "num_concurrency": [2],
            "max_requests_per_iteration": 6,
            "warmup_requests": 0,
        },
        "simulator": FAST_SIM,
    }
    spec.update(overrides)
    return spec


def test_two_specs_with_one_task_name_are_a_collection_error(pytester: pytest.Pytester) -> None:
    write_specs(pytester, first=sim_spec("same"), second=sim_spec("same"))
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", "--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*ERROR collecting tuning_specs/second.json*", "*task_name 'same' is also the task name of*first.json*"]
    )
    assert "Traceback" not in result.stdout.str()


def test_names_that_share_a_safe_spelling_get_distinct_report_folders(pytester: pytest.Pytester) -> None:
    one = {"max_iterations": 1, "timeout_per_iteration": 60, "confirm_runs": 0, "strategy": "grid"}
    write_specs(
        pytester,
        a=sim_spec("team/a", optimization=one),
        b=sim_spec("team_a", optimization=one),
        c=sim_spec("team a", optimization=one),
    )
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    folders = sorted(p.name for p in (pytester.path / "reports").iterdir() if p.is_dir())
    assert len(folders) == 3 and "team_a" in folders, folders
    names = {json.loads((pytester.path / "reports" / f / "results.json").read_text())["task"] for f in folders}
    assert names == {"team/a", "team_a", "team a"}


HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pytest_autotuner.study_storage import lock_journal
    lock_journal(Path(sys.argv[1]))
    print("locked", flush=True)
    sys.stdin.read()
    """
)


def test_a_second_run_on_a_journal_in_use_is_refused_naming_the_other(pytester: pytest.Pytester) -> None:
    write_specs(pytester, busy=sim_spec("busy"))
    journal = pytester.path / "reports" / "busy" / "study.journal"
    journal.parent.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(journal)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None and holder.stderr is not None
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*study.journal is in use by another run (pid {holder.pid} on *, started *)*"])
    assert "Traceback" not in result.stdout.str()
    # the holder died without releasing: the next run takes the lock over, says so and runs
    again = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines([f"*busy: *took over the lock of a run that is gone (pid {holder.pid}*"])


def test_a_torn_journal_is_repaired_reported_and_the_finished_trials_kept(pytester: pytest.Pytester) -> None:
    write_specs(pytester, torn=sim_spec("torn"))
    first = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", "--autotune-max-iterations", "1")
    first.assert_outcomes(passed=1)
    journal = pytester.path / "reports" / "torn" / "study.journal"
    with journal.open("ab") as handle:
        handle.write(b'{"op_code": 5, "worker_id": "w", "tri')  # a kill mid-write
    again = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider")
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines(["*torn: *removed a partial last record*complete records before it are kept*"])
    trial_lines = [line for line in again.stdout.lines if line.strip().startswith("trial ")]
    assert [line.split()[2] for line in trial_lines] == ["[2/2]"]  # the first run's trial was kept, not rerun
    assert "Traceback" not in again.stdout.str()
