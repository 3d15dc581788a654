"""A tuning session: ask -> evaluate -> score -> tell, then confirm the best and decide pass or fail.

``evaluate(params, deadline) -> BenchResult`` is injected: the session does no network or container I/O of
its own. It runs ``evaluate`` in a worker thread so ``timeout_per_iteration`` holds even for an evaluate that
does not return: on timeout the deadline is cancelled (runtimes tear their server down when they see it) and
the trial is recorded as ``trial_timeout``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.gpu_pool import GpuPool, gpus_needed
from pytest_autotuner.core.metrics import BenchResult
from pytest_autotuner.core.scoring import SloCheck, TrialScore, score_failure, score_result
from pytest_autotuner.core.trial import Deadline, FailureClass, Params, TrialFailure

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from pytest_autotuner.core.search import Proposal, Search
    from pytest_autotuner.core.spec import TaskSpec

__all__ = ["Confirmation", "EvaluateFn", "SessionResult", "TrialEvent", "TrialRecord", "TuningSession"]

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
    cells: list[dict[str, Any]]
    origin: str = ""  # "sglang_defaults" for the trial that measured SGLang's defaults

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialRecord:
        attrs = trial.user_attrs
        return cls(
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
            cells=list(attrs.get("cells", [])),
            origin=str(attrs.get("origin", "")),
        )


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


@dataclass
class Confirmation:
    """Repeat runs of one of the best configurations; the verdict comes from these samples."""

    params: Params
    source_trial: int
    runs: list[BenchResult]
    score: TrialScore
    failures: list[str] = field(default_factory=list)

    @property
    def merged(self) -> BenchResult:
        return BenchResult.merge(self.runs)


@dataclass
class SessionResult:
    """Everything the plugin, the report and the baseline need from one session."""

    spec: TaskSpec
    study_name: str
    trials: list[TrialRecord]
    best: Confirmation | None
    duration: float
    stopped_early: str = ""
    duplicates_skipped: int = 0
    baseline: Any = None  # a baseline.BaselineComparison once compared

    @property
    def slo_checks(self) -> list[SloCheck]:
        return list(self.best.score.slo_checks) if self.best else []

    @property
    def passed(self) -> bool:
        return self.best is not None and self.best.score.meets_slos

    @property
    def failure_counts(self) -> Counter[str]:
        return Counter(t.failure for t in self.trials if t.failure)

    @property
    def defaults_trial(self) -> TrialRecord | None:
        """The trial that measured SGLang's defaults (bayesian's first trial), if this study has one."""
        return next((t for t in sorted(self.trials, key=lambda t: t.number) if t.origin == "sglang_defaults"), None)

    @property
    def gain_over_defaults(self) -> float | None:
        """How much better the confirmed best is than SGLang's defaults measured in the search, as a fraction
        (negative: worse); None when there is nothing to compare (no defaults trial, or either side unmeasured)."""
        defaults = self.defaults_trial
        if defaults is None or self.best is None or defaults.failure is not None or defaults.objective is None:
            return None
        best, base = self.best.score.objective, defaults.objective
        if best is None or not (math.isfinite(best) and math.isfinite(base)) or base == 0:
            return None
        change = (best - base) / abs(base)
        return change if self.spec.optimization.direction == "maximize" else -change

    @property
    def server_info(self) -> dict[str, Any]:
        return self.best.runs[0].server_info if self.best and self.best.runs else {}


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
        report_only: bool = False,
    ) -> None:
        self.spec = spec
        self.search = search
        self.evaluate = evaluate
        self.max_iterations = max_iterations or spec.optimization.max_iterations
        self.on_trial = on_trial or (lambda event: None)
        self.workers = max(1, workers)
        self.gpu_pool = gpu_pool
        self.report_only = report_only
        self._results: dict[int, BenchResult] = {}  # this run's measurements, by trial number
        self._stopping = threading.Event()  # set on Ctrl-C: running trials cancel their deadlines

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
        opt = self.spec.optimization
        needed = gpus_needed(params)
        try:
            if self.gpu_pool is None:
                return (*self._scored(params, ()), ())
            if needed > self.gpu_pool.total:
                message = (
                    f"needs {needed} GPUs (tp-size x dp-size) but the runner has {self.gpu_pool.total}; "
                    "recorded as infeasible without launching"
                )
                return score_failure(FailureClass.INFEASIBLE, opt, message), None, "", ()
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
        with self.search.heartbeat(proposal):
            return self._measure(proposal.params)

    # -- search -------------------------------------------------------------------------------------------

    def _search(self) -> str:
        """Propose and run trials until the budget is spent; returns why it stopped early ('' if it did not)."""
        stopped_early = ""
        proposing = True
        best_value: float | None = None
        since_improvement = 0
        patience = self.spec.optimization.patience
        maximize = self.spec.optimization.direction == "maximize"
        running: dict[Future[tuple[TrialScore, BenchResult | None, str, tuple[int, ...]]], tuple[Proposal, float]]
        running = {}
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="autotune-worker")
        try:
            while True:
                while proposing and len(running) < self.workers:
                    if self.search.n_evaluated + len(running) >= self.max_iterations:
                        proposing = False
                        break
                    proposal = self.search.propose(self.max_iterations)
                    if proposal is None:
                        size = self.search.space.grid_size
                        if size is not None and len(self.search.claimed()) >= size:
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
                    self.search.record(proposal, score, _trial_attrs(score, result, log_tail, duration, devices))
                    completed = self.search.n_evaluated  # study-wide: a resumed or shared study counts on
                    total = max(self.max_iterations, completed)
                    self.on_trial(
                        TrialEvent(
                            "search",
                            completed,
                            total,
                            proposal.params,
                            score,
                            duration,
                            proposal.number,
                            devices if self.workers > 1 else (),  # which GPUs only matters when trials overlap
                        )
                    )
                    better = best_value is None or (score.value > best_value if maximize else score.value < best_value)
                    if score.feasible and better:
                        best_value, since_improvement = score.value, 0
                    else:
                        since_improvement += 1
                    if proposing and patience and since_improvement >= patience:
                        stopped_early = f"no improvement in the last {patience} trials (optimization.patience)"
                        proposing = False
        except BaseException:
            self._stopping.set()  # every running trial cancels its deadline and tears its server down
            pool.shutdown(wait=True, cancel_futures=True)
            for proposal, _started in running.values():
                self.search.abandon(proposal, "interrupted")
            raise
        finally:
            pool.shutdown(wait=False)

    def run(self) -> SessionResult:
        started = time.monotonic()
        stopped_early = "report only: no trials run (--autotune-report-only)" if self.report_only else self._search()
        best = self.confirm_best()
        from optuna.trial import TrialState

        all_trials = self.search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        records = [TrialRecord.from_trial(t) for t in all_trials if "duplicate_of" not in t.user_attrs]
        duplicates = sum(1 for t in self.search.study.get_trials(deepcopy=False) if "duplicate_of" in t.user_attrs)
        return SessionResult(
            spec=self.spec,
            study_name=self.search.study.study_name,
            trials=records,
            best=best,
            duration=time.monotonic() - started,
            stopped_early=stopped_early,
            duplicates_skipped=duplicates,
        )

    # -- confirmation -------------------------------------------------------------------------------------

    def ranked_candidates(self) -> list[TrialRecord]:
        """Evaluated trials, best first: meeting every SLO first, then feasible, then by score."""
        records = [TrialRecord.from_trial(t) for t in self.search.evaluated()]
        sign = -1.0 if self.spec.optimization.direction == "maximize" else 1.0
        usable = [r for r in records if r.failure is None]
        return sorted(usable, key=lambda r: (not r.meets_slos, not r.feasible, sign * r.value, r.number))

    def confirm_best(self) -> Confirmation | None:
        """Re-run the top configurations ``confirm_runs`` times; the best confirmed one wins."""
        opt = self.spec.optimization
        candidates = self.ranked_candidates()[: opt.confirm_top]
        confirmations: list[Confirmation] = []
        for rank, candidate in enumerate(candidates):
            runs: list[BenchResult] = []
            failures: list[str] = []
            n_runs = opt.confirm_runs
            if n_runs == 0:
                cached = self._results.get(candidate.number)
                if cached is not None:
                    runs.append(cached)
                else:
                    n_runs = 1  # measured by an earlier, resumed run: its raw samples are gone
            for i in range(n_runs):
                started = time.monotonic()
                score, result, _log, _devices = self._measure(candidate.params)
                self.on_trial(
                    TrialEvent(
                        "confirm",
                        rank * n_runs + i + 1,
                        len(candidates) * n_runs,
                        candidate.params,
                        score,
                        time.monotonic() - started,
                        candidate.number,
                    )
                )
                if result is None:
                    failures.append(f"{score.failure.value if score.failure else 'failed'}: {score.failure_message}")
                else:
                    runs.append(result)
            if not runs:
                continue
            merged = BenchResult.merge(runs)
            confirmations.append(
                Confirmation(
                    candidate.params,
                    candidate.number,
                    runs,
                    score_result(merged, opt, self.spec.slo),
                    failures,
                )
            )
        if not confirmations:
            return None
        sign = -1.0 if opt.direction == "maximize" else 1.0
        return min(confirmations, key=lambda c: (not c.score.meets_slos, sign * c.score.value))

    def confirm_again(self, confirmation: Confirmation) -> Confirmation:
        """One more confirmation run of the chosen best (to settle an ambiguous baseline comparison)."""
        started = time.monotonic()
        score, result, _log, _devices = self._measure(confirmation.params)
        self.on_trial(
            TrialEvent(
                "confirm", 1, 1, confirmation.params, score, time.monotonic() - started, confirmation.source_trial
            )
        )
        if result is None:
            confirmation.failures.append(
                f"{score.failure.value if score.failure else 'failed'}: {score.failure_message}"
            )
            return confirmation
        runs = [*confirmation.runs, result]
        merged_score = score_result(BenchResult.merge(runs), self.spec.optimization, self.spec.slo)
        return Confirmation(confirmation.params, confirmation.source_trial, runs, merged_score, confirmation.failures)


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
        attrs["cells"] = [_json_safe(cell.as_dict()) for cell in result.cells]
        attrs["server_version"] = str(result.server_info.get("version", ""))
    return attrs


def _json_safe(value: Any) -> Any:
    """NaN is not JSON: storages and reports get None instead."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
