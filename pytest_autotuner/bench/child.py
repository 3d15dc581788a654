"""The benchmark client in a child process of its own, for trials that run at the same time.

Concurrent trials run in threads of one process; their clients would share one interpreter lock, and one core
then parses every trial's chunks: eight trials at concurrency 64 and about 100 tokens/s per stream ask for
about 51,000 chunks/s, above what the client parses on a core, and every trial's latencies grow with the
others' load. ``run_benchmark_in_child`` runs ``run_benchmark`` in a fresh interpreter instead
(``python -m pytest_autotuner.bench.child JOB OUT``), so each trial's client has the scheduler's choice of core.

The plan and endpoint go in, and the BenchResult or TrialFailure comes back, as pickles in a private temporary
folder (parent and child are the same code). The trial's Deadline stays with the parent: the child gets its
remaining time and checks it itself, sends each finished cell's aggregates back as it goes (``cell-NNNN.pickle``,
a ``CellSummary``), and the parent reports them to the Deadline in order, so the early-stopping rule runs in
the parent as for an in-process client; when it prunes the trial the parent ends the child. The parent kills
the child when the deadline is cancelled or passes, and on any way out of the call (an exception, Ctrl-C), so
no client outlives its trial. A child whose parent died exits on its own.
"""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_autotuner.core.measure.trial import Deadline, FailureClass, TrialFailure

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pytest_autotuner.core.measure.metrics import BenchResult, CellSummary
    from pytest_autotuner.core.measure.plan import BenchmarkPlan
    from pytest_autotuner.runtimes.base import Endpoint

__all__ = ["run_benchmark_in_child"]

_POLL = 0.05  # seconds between checks of the child and the deadline
_ORPHAN_POLL = 0.5  # seconds between the child's checks that its parent is alive
_LOG_TAIL = 2000  # characters of the child's stderr kept when it fails without a result


def run_benchmark_in_child(endpoint: Endpoint, plan: BenchmarkPlan, *, deadline: Deadline) -> BenchResult:
    """``run_benchmark(endpoint, plan, deadline=deadline)`` in a child process; same result, same failures."""
    with tempfile.TemporaryDirectory(prefix="autotune-bench-") as tmp:
        job, out, log = Path(tmp, "job.pickle"), Path(tmp, "result.pickle"), Path(tmp, "client.log")
        job.write_bytes(pickle.dumps((endpoint, plan, deadline.remaining())))
        argv = [sys.executable, "-m", "pytest_autotuner.bench.child", str(job), str(out)]
        with log.open("wb") as stderr:
            # its own session: a Ctrl-C reaches the parent, which ends the child, not both at once
            child = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
            )
        reported = 0
        try:
            while child.poll() is None:
                reported = _report_cells(Path(tmp), reported, deadline)  # may prune the trial (TrialFailure)
                if deadline.expired:
                    why = "cancelled" if deadline.cancelled else "expired"
                    raise TrialFailure(FailureClass.TRIAL_TIMEOUT, f"trial deadline {why} during the benchmark")
                deadline.wait(_POLL)
            _report_cells(Path(tmp), reported, deadline)  # the cells it sent before it ended, in order
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
        if out.exists():
            outcome: BenchResult | TrialFailure = pickle.loads(out.read_bytes())
            if isinstance(outcome, TrialFailure):
                raise outcome
            return outcome
        tail = log.read_text(errors="replace")[-_LOG_TAIL:]
        raise TrialFailure(
            FailureClass.UNKNOWN,
            f"the benchmark client process exited with code {child.returncode} without a result",
            log_tail=tail,
        )


def _cell_path(folder: Path, index: int) -> Path:
    return folder / f"cell-{index:04d}.pickle"


def _report_cells(folder: Path, reported: int, deadline: Deadline) -> int:
    """Report the cells the child sent since the first ``reported`` to ``deadline``; how many are reported now."""
    while (path := _cell_path(folder, reported)).exists():
        reported += 1
        deadline.report_cell(pickle.loads(path.read_bytes()))
    return reported


class _SendCells:
    """The child's Deadline rule: it decides nothing, it sends each cell's aggregates to the parent."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.sent = folder, 0

    def __call__(self, cells: Sequence[CellSummary]) -> str | None:
        path = _cell_path(self.folder, self.sent)
        part = path.with_suffix(".part")
        part.write_bytes(pickle.dumps(cells[-1], protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(part, path)
        self.sent += 1
        return None


def _exit_with_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(_ORPHAN_POLL)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def main(job_path: str, out_path: str) -> None:
    """The child: run the job, write the BenchResult or the TrialFailure (atomically, so a kill leaves none)."""
    from pytest_autotuner.bench.client import run_benchmark

    _exit_with_parent()
    endpoint, plan, remaining = pickle.loads(Path(job_path).read_bytes())
    deadline = Deadline(None if math.isinf(remaining) else remaining, rule=_SendCells(Path(out_path).parent))
    outcome: BenchResult | TrialFailure
    try:
        outcome = run_benchmark(endpoint, plan, deadline=deadline)
    except TrialFailure as failure:
        outcome = failure
    part = Path(out_path + ".part")
    part.write_bytes(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(part, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:3])
