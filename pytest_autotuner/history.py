"""History files (``--autotune-history DIR``): one JSON file per run under ``DIR/<spec slug>/``.

A file per run, named by its time and a short hash of its content, never a shared file: two runners (or two
branches of a history kept in git) add different files, so histories merge without conflicts and live as well
on a branch as in a CI cache or artifact. Files are written atomically; a file that cannot be read is skipped
with a warning naming it, so one bad file never loses the others (or the run being recorded).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path

from pytest_autotuner.core.outcome.trends import HistoryEntry, RunInfo, parse_history_entry
from pytest_autotuner.files import write_atomically

__all__ = ["append_history", "load_history", "run_info"]

logger = logging.getLogger(__name__)
UNKNOWN = "unknown"


def _git(args: list[str], cwd: Path) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def run_info(cwd: Path, *, now: dt.datetime | None = None) -> RunInfo:
    """Commit and branch from GitHub Actions (``GITHUB_SHA``, ``GITHUB_HEAD_REF`` for a pull request, else
    ``GITHUB_REF_NAME``), else from ``git rev-parse`` in ``cwd``, else "unknown"; the date is now, in UTC."""
    commit = os.environ.get("GITHUB_SHA") or _git(["rev-parse", "HEAD"], cwd) or UNKNOWN
    branch = os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME") or ""
    if not branch:
        branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd)
        branch = "" if branch == "HEAD" else branch  # a detached checkout has no branch name
    moment = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    return RunInfo(commit=commit, branch=branch or UNKNOWN, date=moment.isoformat(timespec="milliseconds"))


def _file_name(entry: HistoryEntry, text: str) -> str:
    moment = dt.datetime.fromisoformat(entry.date).astimezone(dt.timezone.utc)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{digest}.json"


def append_history(history_dir: Path, entry: HistoryEntry) -> Path:
    """Write ``entry`` as a new file under ``history_dir/<slug>/`` (created when missing); return its path."""
    text = json.dumps(entry.model_dump(mode="json"), indent=1, sort_keys=True, allow_nan=False) + "\n"
    path = Path(history_dir) / entry.slug / _file_name(entry, text)
    write_atomically(path, text)
    logger.info("history of %s: %s", entry.task, path)
    return path


def load_history(history_dir: Path, slug: str) -> tuple[list[HistoryEntry], list[str]]:
    """Every readable run of ``slug`` (oldest first) and one warning per file that was skipped, naming it."""
    folder = Path(history_dir) / slug
    entries: list[HistoryEntry] = []
    skipped: list[str] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            entries.append(parse_history_entry(document, str(path)))
        except (OSError, UnicodeDecodeError) as err:
            skipped.append(f"history file {path} skipped: cannot be read ({err})")
        except json.JSONDecodeError as err:
            skipped.append(f"history file {path} skipped: not valid JSON ({err.msg} at line {err.lineno})")
        except ValueError as err:
            skipped.append(f"history file skipped: {err}")
    for warning in skipped:
        logger.warning("%s", warning)
    return sorted(entries, key=lambda e: e.date), skipped
