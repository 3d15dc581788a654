"""Where a tuning study is kept: journal files under the report folder, or a shared database; opened here, at
the edge, and handed to the search (``core.search.study.StudyStorage``).

Local journals (``journal:<file>``, by default ``reports/<task>/study.journal``) survive torn writes and
concurrent runs: a run takes an exclusive lock on ``<file>.owner`` (``flock``, so a killed run's lock is free at
once; the file names the owner's pid, host and start time for the message that refuses a second run); then a
trailing partial record (a kill mid-write, a full disk) is cut off, or completed when only its newline is
missing, and the repair reported in ``Search.notes``; any other unreadable line is a ``StudyStorageError`` that
names the file, the line and what to do.

A database storage (``--autotune-storage postgresql://...``) gets heartbeats, so the other workers fail (and retry
once) a trial whose worker died.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from pytest_autotuner.core.search.study import StudyStorage, StudyStorageError, unreplayable
from pytest_autotuner.interrupts import signals_held

__all__ = ["default_storage_url", "lock_journal", "open_storage", "repair_journal"]

logger = logging.getLogger(__name__)


def default_storage_url(report_dir: Path, folder: str) -> str:
    """A per-spec journal file under the report folder, so an interrupted run resumes."""
    path = report_dir / folder / "study.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"journal:{path}"


_HELD_LOCKS: dict[str, int] = {}  # journal path -> descriptor of its locked .owner file, for this process's life


def _owner_text(fd: int) -> str:
    try:
        owner = json.loads(os.pread(fd, 4096, 0) or b"null")
    except ValueError:
        return ""
    if not isinstance(owner, dict):
        return ""
    return f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}"


def lock_journal(path: Path) -> str | None:
    """Hold ``<path>.owner`` exclusively for the rest of this process (see the module docstring).

    Returns a note when the lock of a run that died was taken over; raises StudyStorageError when another live
    run holds it. A process that already holds the lock (an earlier item of the same run) keeps it.
    """
    key = str(path.resolve())
    if key in _HELD_LOCKS:
        return None
    owner_path = path.with_name(path.name + ".owner")
    try:
        fd = os.open(owner_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise StudyStorageError(f"{owner_path}: cannot create the study's lock file ({err.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        other = _owner_text(fd) or "another process"
        os.close(fd)
        raise StudyStorageError(
            f"{path} is in use by another run ({other}); two runs on one study journal would corrupt it. Wait "
            "for that run to finish, or give this one another --autotune-report-dir (or a shared --autotune-storage)"
        ) from None
    stale = _owner_text(fd)
    os.ftruncate(fd, 0)
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}).encode(), 0)
    _HELD_LOCKS[key] = fd
    return f"{path}: took over the lock of a run that is gone ({stale})" if stale else None


@atexit.register
def _release_locks() -> None:
    """A run that ends normally leaves an empty owner file (a non-empty one tells the next run it died)."""
    for fd in _HELD_LOCKS.values():
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.close(fd)
    _HELD_LOCKS.clear()


def repair_journal(path: Path) -> str | None:
    """Check every record of a journal file; cut off (or complete) a torn last record. Returns the repair's note.

    Raises StudyStorageError for a journal that is corrupt before its last record.
    """
    if not path.exists():
        return None
    try:
        with path.open("rb+") as handle:
            size = os.fstat(handle.fileno()).st_size
            good_end, count, torn = 0, 0, b""
            for number, line in enumerate(handle, start=1):
                record = _record(line)
                if not line.endswith(b"\n"):
                    torn = line
                    break
                if record is None:
                    raise StudyStorageError(
                        f"{path}:{number}: the study journal is corrupt (line {number} is not a journal record). "
                        f"Move it away (`mv {path} {path}.bad`) to start a fresh study, or restore it from a backup"
                    )
                good_end += len(line)
                count += 1
            if not torn:
                return None
            if _record(torn) is not None:  # a whole record whose newline was not written
                handle.seek(good_end + len(torn))
                handle.write(b"\n")
                return f"{path}: completed the last record (its newline was missing); {count + 1} records kept"
            handle.truncate(good_end)
            return (
                f"{path}: removed a partial last record ({size - good_end} bytes, a write cut short); "
                f"the {count} complete records before it are kept"
            )
    except OSError as err:
        raise StudyStorageError(f"{path}: cannot read or repair the study journal ({err.strerror})") from None


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "op_code" in record else None


def _open_journal(path: Path, notes: list[str]) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path.parent.mkdir(parents=True, exist_ok=True)
    for note in (lock_journal(path), repair_journal(path)):
        if note:
            logger.warning("%s", note)
            notes.append(note)
    try:
        with path.open("ab"):
            pass
    except OSError as err:
        raise StudyStorageError(
            f"{path}: cannot write the study journal ({err.strerror}); fix its permissions or choose another "
            "--autotune-report-dir"
        ) from None

    class _HeldBackend(JournalFileBackend):
        """Each append whole, lock taken and released, before a Ctrl-C or SIGTERM stops the run (``interrupts``)."""

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            with signals_held():
                super().append_logs(logs)

    try:
        return JournalStorage(_HeldBackend(str(path)))  # replays the journal
    except Exception as err:  # Optuna asserts or raises on records it cannot apply
        raise unreplayable(path, err) from None


def open_storage(url: str, grace_period: int = 120) -> StudyStorage:
    """The storage behind ``url``: ``journal:<file>`` (locked and repaired), a database URL (with heartbeats,
    ``grace_period`` seconds), or anything else as Optuna interprets it."""
    if url.startswith("journal:"):
        notes: list[str] = []
        path = url.removeprefix("journal:")
        return StudyStorage(_open_journal(Path(path), notes), tuple(notes), journal=path)
    if url.startswith(("postgresql", "mysql", "sqlite")):
        return StudyStorage(_rdb_storage(url, grace_period))
    return StudyStorage(url)  # let Optuna interpret anything else


def _rdb_storage(url: str, grace_period: int) -> Any:
    """RDB storage with heartbeats, so the other workers fail (and retry once) a trial whose worker died."""
    import optuna
    import sqlalchemy.exc
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(3):
            try:
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=max(1, grace_period // 4),
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
            except sqlalchemy.exc.SQLAlchemyError:
                # workers starting together on an empty database race to create Optuna's tables
                if attempt == 2:
                    raise
                time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")
