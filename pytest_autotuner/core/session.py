"""A tuning session's loop: ask -> evaluate -> score -> tell, then confirmation runs of chosen configurations.

``run_task`` (task.py) drives it and decides the verdict; this module only measures.

``evaluate(params, deadline) -> BenchResult`` is injected: the session does no network or container I/O of
its own. It runs ``evaluate`` in a worker thread so ``timeout_per_iteration`` holds even for an evaluate that
does not return: on timeout the deadline is cancelled (runtimes tear their server down when they see it) and
the trial is recorded as ``trial_timeout``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.gpu_pool import GpuPool, gpus_needed
from pytest_autotuner.core.metrics import BenchResult, CellSummary, json_safe
from pytest_autotuner.core.scoring import TrialScore, score_failure, score_result
from pytest_autotuner.core.trial import Deadline, FailureClass, Params, TrialFailure

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from pytest_autotuner.core.search import Proposal, Search
    from pytest_autotuner.core.spec import TaskSpec

__all__ = ["Confirmation", "EvaluateFn", "TrialEvent", "TrialRecord", "TuningSession", "rank_key"]

logger = logging.getLogger(__name__)

EvaluateFn = Callable[[Params, Deadline], BenchResult]
_TEARDOWN_GRACE_S = 60.0  # how long a timed-out evaluate gets to tear its server down


@dataclass(frozen=True)
class TrialRecord:
    """One evaluated configuration as the study remembers it (also for trials of an earlier, resumed run)."""

    number: int
    params: Params
    value: float
    objective: float | None
    feasible: bool
    meets_slos: bool
    failure: str | None
    failure_message: str
    log_tail: str
    duration: float
    cells: tuple[CellSummary, ...]
    origin: str = ""  # "sglang_defaults" for the trial that measured SGLang's defaults
    server_chose: tuple[str, ...] = ()  # flags this trial left to the server (not passed at launch)

    @property
    def measured(self) -> bool:
        """The trial produced a measurement (it may still miss an SLO or be infeasible)."""
        return self.failure is None and self.objective is not None

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialRecord:
        attrs = trial.user_attrs
        record = cls(
            number=trial.number,
            params=dict(trial.params),
            value=float(trial.value) if trial.value is not None else math.nan,
            objective=attrs.get("objective"),
            feasible=all(v <= 0 for v in trial.constraints.values()) if trial.constraints else True,
            meets_slos=bool(attrs.get("meets_slos", False)),
            failure=attrs.get("failure"),
            failure_message=attrs.get("failure_message", ""),
            log_tail=attrs.get("log_tail", ""),
            duration=float(attrs.get("duration", math.nan)),
            cells=tuple(CellSummary.from_dict(c) for c in attrs.get("cells", []) if isinstance(c, dict)),
            origin=str(attrs.get("origin", "")),
            server_chose=tuple(str(n) for n in attrs.get("server_chooses", ())),
        )
        left = set(record.server_chose)
        return dataclasses.replace(record, params={k: v for k, v in record.params.items() if k not in left})


@dataclass(frozen=True)
class TrialEvent:
    """Progress of one trial, for the terminal."""

    phase: str  # "search" or "confirm"
    index: int  # 1-based position in the phase
    total: int
    params: Params
    score: TrialScore
    duration: float
    number: int | None = None
    devices: tuple[int, ...] = ()
    new_best: bool = False  # the best trial so far (search phase)


@dataclass(frozen=True)
class Confirmation:
    """Repeat runs of one configuration; the verdict comes from these samples, not the search's lucky run."""

    params: Params
    source_trial: int
    runs: tuple[BenchResult, ...]
    score: TrialScore
    failures: tuple[str, ...] = ()

    @property
    def merged(self) -> BenchResult:
        return BenchResult.merge(self.runs)

    @property
    def server_info(self) -> dict[str, Any]:
        return self.runs[0].server_info if self.runs else {}


def rank_key(meets_slos: bool, feasible: bool, value: float, maximize: bool) -> tuple[bool, bool, float]:
    """Sort key, best first: meeting every SLO first, then feasible, then by score in the objective's direction.

    The one ordering of "better" used by the search's new-best marks, patience, the choice of candidates to
    confirm, the choice among confirmations and the report's best-so-far line.
    """
    return (not meets_slos, not feasible, -value if maximize else value)


class TuningSession:
    """Runs one spec's search and confirmation against an injected evaluate function.

    Up to ``workers`` trials run at once (threads; each launches its own server), each on the GPUs it needs
    from ``gpu_pool``. Proposals and results go through the main thread, which is also where Ctrl-C lands.
    """

    def __init__(
        self,
        *,
        spec: TaskSpec,
        search: Search,
        evaluate: EvaluateFn,
        max_iterations: int | None = None,
        on_trial: Callable[[TrialEvent], None] | None = None,
        workers: int = 1,
        gpu_pool: GpuPool | None = None,
    ) -> None:
        self.spec = spec
        self.search_state = search
        self.evaluate = evaluate
        self.max_iterations = max_iterations or spec.optimization.max_iterations
        self.on_trial = on_trial or (lambda event: None)
        self.workers = max(1, workers)
        self.gpu_pool = gpu_pool
        self._results: dict[int, BenchResult] = {}  # this run's measurements, by trial number
        self._stopping = threading.Event()  # set on Ctrl-C: running trials cancel their deadlines
        self.confirmation_failures: list[str] = []  # of candidates none of whose confirmation runs worked

    # -- one evaluation -----------------------------------------------------------------------------------

    def _evaluate_with_timeout(self, params: Params, devices: tuple[int, ...]) -> BenchResult:
        timeout = self.spec.optimization.timeout_per_iteration
        deadline = Deadline(timeout, devices)
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["result"] = self.evaluate(params, deadline)
            except BaseException as err:  # carried to the session thread
                outcome["error"] = err

        worker = threading.Thread(target=target, name="autotune-trial", daemon=True)
        worker.start()
        give_up = time.monotonic() + timeout
        try:
            while worker.is_alive() and time.monotonic() < give_up and not self._stopping.is_set():
                worker.join(min(0.2, max(0.0, give_up - time.monotonic())))
        except BaseException:  # Ctrl-C / SIGTERM in this thread: let the runtime tear down, then go on
            self._stopping.set()
        if worker.is_alive():
            deadline.cancel()
            worker.join(_TEARDOWN_GRACE_S)
            if self._stopping.is_set():
                raise KeyboardInterrupt("tuning session interrupted")
            raise TrialFailure(
                FailureClass.TRIAL_TIMEOUT,
                f"the trial ran longer than optimization.timeout_per_iteration ({timeout:g} s)",
            )
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    def _measure(self, params: Params) -> tuple[TrialScore, BenchResult | None, str, tuple[int, ...]]:
        """Evaluate and score one configuration on the GPUs it needs; failures become graded scores."""
        needed = gpus_needed(params)
        try:
            if self.gpu_pool is None:
                return (*self._scored(params, ()), ())
            if needed > self.gpu_pool.total:  # Search never proposes these (max_gpus): a caller's bug, not a trial
                raise ValueError(
                    f"{params} needs {needed} GPUs but the runner has {self.gpu_pool.total}; "
                    "give Search max_gpus so such configurations are never proposed"
                )
            with self.gpu_pool.acquire(needed, cancelled=self._stopping) as devices:
                return (*self._scored(params, devices), devices)
        except InterruptedError:
            raise KeyboardInterrupt("tuning session interrupted") from None

    def _scored(self, params: Params, devices: tuple[int, ...]) -> tuple[TrialScore, BenchResult | None, str]:
        try:
            result = self._evaluate_with_timeout(params, devices)
        except TrialFailure as failure:
            score = score_failure(failure.failure_class, self.spec.optimization, failure.message)
            return score, None, failure.log_tail
        except Exception as err:  # an evaluate bug must not end the whole session
            logger.exception("evaluate raised for %s", params)
            score = score_failure(FailureClass.UNKNOWN, self.spec.optimization, f"{type(err).__name__}: {err}")
            return score, None, ""
        return score_result(result, self.spec.optimization, self.spec.slo), result, ""

    def _trial_in_worker(self, proposal: Proposal) -> tuple[TrialScore, BenchResult | None, str, tuple[int, ...]]:
        with self.search_state.heartbeat(proposal):
            return self._measure(proposal.params)

    # -- search -------------------------------------------------------------------------------------------

    def search(self) -> str:
        """Propose and run trials until the budget is spent; returns why it stopped early ('' if it did not).

        ``optimization.patience``: stop proposing after that many finished trials in a row that did not improve
        on the best so far (``rank_key``); a failed trial never improves, the first measured one always does.
        """
        stopped_early = ""
        proposing = True
        best: tuple[bool, bool, float] | None = None
        since_improvement = 0
        patience = self.spec.optimization.patience
        maximize = self.spec.optimization.direction == "maximize"
        running: dict[Future[tuple[TrialScore, BenchResult | None, str, tuple[int, ...]]], tuple[Proposal, float]]
        running = {}
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="autotune-worker")
        try:
            while True:
                while proposing and len(running) < self.workers:
                    if self.search_state.n_evaluated + len(running) >= self.max_iterations:
                        proposing = False
                        break
                    proposal = self.search_state.propose(self.max_iterations)
                    if proposal is None:
                        size = self.search_state.space.grid_size
                        if size is not None and len(self.search_state.claimed()) >= size:
                            stopped_early = f"every configuration of the space was evaluated ({size})"
                        proposing = False
                        break
                    running[pool.submit(self._trial_in_worker, proposal)] = (proposal, time.monotonic())
                if not running:
                    return stopped_early
                done, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    proposal, started = running.pop(future)
                    score, result, log_tail, devices = future.result()
                    duration = time.monotonic() - started
                    if result is not None:
                        self._results[proposal.number] = result
                    attrs = _trial_attrs(score, result, log_tail, duration, devices)
                    self.search_state.record(proposal, score, attrs)
                    key = rank_key(score.meets_slos, score.feasible, score.value, maximize)
                    improved = score.failure is None and (best is None or key < best)
                    if improved:
                        best, since_improvement = key, 0
                    else:
                        since_improvement += 1
                    completed = self.search_state.n_evaluated  # study-wide: a resumed or shared study counts on
                    self.on_trial(
                        TrialEvent(
                            "search",
                            completed,
                            max(self.max_iterations, completed),
                            proposal.params,
                            score,
                            duration,
                            proposal.number,
                            devices if self.workers > 1 else (),  # which GPUs only matters when trials overlap
                            new_best=improved,
                        )
                    )
                    if proposing and patience and since_improvement >= patience:
                        stopped_early = f"no improvement in the last {patience} trials (optimization.patience)"
                        proposing = False
        except BaseException:
            self._stopping.set()  # every running trial cancels its deadline and tears its server down
            pool.shutdown(wait=True, cancel_futures=True)
            for proposal, _started in running.values():
                self.search_state.abandon(proposal, "interrupted")
            raise
        finally:
            pool.shutdown(wait=False)

    def records(self) -> tuple[list[TrialRecord], int]:
        """(every evaluated trial of the study, how many repeated proposals were skipped without a run)."""
        records = [TrialRecord.from_trial(t) for t in self.search_state.evaluated()]
        trials = self.search_state.study.get_trials(deepcopy=False)
        return records, sum(1 for t in trials if "duplicate_of" in t.user_attrs)

    # -- confirmation -------------------------------------------------------------------------------------

    def ranked_candidates(self) -> list[TrialRecord]:
        """Measured trials, best first (``rank_key``; the lower trial number on a tie)."""
        maximize = self.spec.optimization.direction == "maximize"
        usable = [r for r in self.records()[0] if r.failure is None]
        return sorted(usable, key=lambda r: (*rank_key(r.meets_slos, r.feasible, r.value, maximize), r.number))

    def confirm(self, candidate: TrialRecord, *, first: int = 1, total: int | None = None) -> Confirmation | None:
        """Re-run ``candidate`` ``confirm_runs`` times (``confirm_runs`` 0: reuse its search run when this process
        measured it). None with the failures logged when every run failed."""
        runs: list[BenchResult] = []
        failures: list[str] = []
        n_runs = self.spec.optimization.confirm_runs
        if n_runs == 0:
            cached = self._results.get(candidate.number)
            if cached is not None:
                runs.append(cached)
            else:
                n_runs = 1  # measured by an earlier, resumed run: its raw samples are gone
        for i in range(n_runs):
            result, failure = self._confirmation_run(candidate.params, candidate.number, first + i, total or n_runs)
            if result is not None:
                runs.append(result)
            else:
                failures.append(failure)
        if not runs:
            self.confirmation_failures += failures
            return None
        score = score_result(BenchResult.merge(runs), self.spec.optimization, self.spec.slo)
        return Confirmation(candidate.params, candidate.number, tuple(runs), score, tuple(failures))

    def confirm_again(self, confirmation: Confirmation) -> Confirmation:
        """One more confirmation run of ``confirmation`` (to settle an ambiguous comparison, or for a baseline)."""
        result, failure = self._confirmation_run(confirmation.params, confirmation.source_trial, 1, 1)
        if result is None:
            return dataclasses.replace(confirmation, failures=(*confirmation.failures, failure))
        runs = (*confirmation.runs, result)
        score = score_result(BenchResult.merge(runs), self.spec.optimization, self.spec.slo)
        return dataclasses.replace(confirmation, runs=runs, score=score)

    def _confirmation_run(self, params: Params, source: int, index: int, total: int) -> tuple[BenchResult | None, str]:
        started = time.monotonic()
        score, result, _log, _devices = self._measure(params)
        self.on_trial(TrialEvent("confirm", index, total, params, score, time.monotonic() - started, source))
        failure = "" if result is not None else f"{score.failure.value if score.failure else 'failed'}: "
        return result, failure + (score.failure_message if result is None else "")


def _trial_attrs(
    score: TrialScore, result: BenchResult | None, log_tail: str, duration: float, devices: tuple[int, ...] = ()
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "objective": score.objective,
        "penalty": score.penalty if math.isfinite(score.penalty) else None,
        "meets_slos": score.meets_slos,
        "failure": score.failure.value if score.failure else None,
        "failure_message": score.failure_message[:2000],
        "log_tail": log_tail[-4000:],
        "duration": round(duration, 3),
        "devices": list(devices),
    }
    if result is not None:
        attrs["cells"] = [json_safe(cell.as_dict()) for cell in result.cells]
        attrs["server_version"] = str(result.server_info.get("version", ""))
    return attrs
