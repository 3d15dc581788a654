"""The local study journal: torn writes repaired, corruption a clear error, one run at a time (a lock)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_autotuner.core.search.space import SearchSpace
from pytest_autotuner.core.search.study import Search, StudyStorageError
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.study_storage import lock_journal, open_storage, repair_journal


def make_spec() -> TaskSpec:
    return TaskSpec.model_validate(
        {"task_name": "journal", "parameters": {"x": {"low": 1, "high": 100}}, "optimization": {"strategy": "random"}}
    )


def open_search(journal: Path) -> Search:
    spec = make_spec()
    return Search(
        spec=spec,
        space=SearchSpace.from_spec(spec),
        storage=open_storage(f"journal:{journal}"),
        study_name="journal",
        seed=1,
    )


def finish_trials(search: Search, n: int) -> None:
    for value in range(n):
        proposal = search.propose()
        assert proposal is not None
        search.study.tell(proposal.trial, float(value))


def complete_trials(journal: Path) -> int:
    """Finished trials, read back by plain Optuna (the journal must stay readable by it too)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="journal", storage=JournalStorage(JournalFileBackend(str(journal))))
    return len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    path = tmp_path / "study.journal"
    finish_trials(open_search(path), 10)
    return path


def test_a_partial_last_record_is_cut_off_and_every_complete_trial_kept(journal: Path) -> None:
    with journal.open("ab") as handle:
        handle.write(b'{"op_code": 6, "worker_id": "x", "trial_id": 3, "sta')  # a write cut short
    search = open_search(journal)
    assert len(search.notes) == 1 and "removed a partial last record" in search.notes[0]
    assert str(journal) in search.notes[0]
    assert search.n_evaluated == 10
    finish_trials(search, 2)  # appends after the repair: the journal stays whole
    assert complete_trials(journal) == 12
    assert journal.read_bytes().endswith(b"\n")


def test_a_whole_last_record_without_its_newline_is_completed(journal: Path) -> None:
    journal.write_bytes(journal.read_bytes().rstrip(b"\n"))
    note = repair_journal(journal)
    assert note is not None and "completed the last record" in note
    assert complete_trials(journal) == 10
    assert repair_journal(journal) is None  # nothing left to repair


def test_a_corrupt_record_before_the_end_is_a_clear_error(journal: Path) -> None:
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"op_code": 4, \x00\x00 garbage\n'
    journal.write_bytes(b"".join(lines))
    with pytest.raises(StudyStorageError) as err:
        open_search(journal)
    message = str(err.value)
    assert f"{journal}:3" in message and "corrupt" in message and f"mv {journal}" in message
    assert journal.read_bytes() == b"".join(lines)  # left as it was, for the user to inspect


def test_a_journal_that_cannot_be_replayed_is_a_clear_error(tmp_path: Path) -> None:
    journal = tmp_path / "study.journal"
    journal.write_text(json.dumps({"op_code": 99, "worker_id": "w"}) + "\n")
    with pytest.raises(StudyStorageError, match=r"cannot be replayed.*mv "):
        open_search(journal)


def test_a_journal_path_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    journal = tmp_path / "study.journal"
    journal.mkdir()  # a directory where the file should be (root may write read-only files)
    with pytest.raises(StudyStorageError, match=r"study\.journal"):
        open_search(journal)


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


def test_a_second_run_on_a_journal_in_use_is_refused_and_a_dead_runs_lock_taken_over(tmp_path: Path) -> None:
    journal = tmp_path / "study.journal"
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
        with pytest.raises(StudyStorageError) as err:
            lock_journal(journal)
        message = str(err.value)
        assert str(journal) in message and f"pid {holder.pid}" in message and "in use by another run" in message
    finally:
        holder.send_signal(signal.SIGKILL)  # dies without releasing: its lock is stale
        holder.communicate()
    note = lock_journal(journal)
    assert note is not None and f"pid {holder.pid}" in note and "took over" in note
    assert lock_journal(journal) is None  # this process holds it now: later items of the run reuse it


def test_a_run_that_ends_normally_leaves_no_stale_lock(tmp_path: Path) -> None:
    journal = tmp_path / "study.journal"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", HOLDER, str(journal)], input="", text=True, env=env, check=True)
    assert lock_journal(journal) is None  # no "took over": the holder released it at exit
