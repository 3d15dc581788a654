"""A tuning session's loop: ask -> evaluate -> score -> tell, then confirmation runs of chosen configurations.

``run_task`` (task.py) drives it and decides the verdict; this module only measures.

``evaluate(params, deadline) -> BenchResult`` is injected: the session does no network or container I/O of
its own, and starts no thread: ``background`` (``Background``) runs each evaluation beside it (the plugin passes
``pytest_autotuner.threads.Threads``: one thread per evaluation) and everything else happens in the caller's
thread: proposals, GPU assignment, the ``timeout_per_iteration`` clock, results. On timeout the deadline is
cancelled (runtimes tear their server down when they see it) and the trial is recorded as ``trial_timeout``.
Without a ``background`` (``Inline``), an evaluation runs to its end in the caller's thread and nothing can time
it out: for tests and benchmarks with an evaluate that always returns.

Early stopping: each search trial's Deadline carries a ``PruningRule`` (core/measure/pruning.py) with the best complete
trial so far; ``Deadline.report_cell`` applies it after each cell and a trial that cannot win ends as
``pruned`` (scored like a failure that got far). Confirmation runs carry no rule.

Several objectives (``optimization.objectives``): each trial is told one score per objective; a trial improves
(``new_best``, ``patience``) when it joins the Pareto front of the trials so far (``_FrontSoFar``), and early
stopping prunes on hard SLOs only (a trial behind on the primary objective may still be on the front).

Cost: every trial records the GPU-seconds it held (``TrialCost``: wall seconds from launch to the end of its
benchmark, times ``gpus_needed``) and what early stopping saved (``trial_cost``), in its user attrs. What is
recorded (trials, costs, events, confirmations, the ranking by configuration) is ``records.py``.

Why one module of about 470 lines: the search loop, its timeout clock and the confirmation runs share the registry
of evaluations under way (an interruption finds each there); records, the background protocol and the Pareto front
live elsewhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.measure.metrics import BenchResult, CellSummary, json_safe
from pytest_autotuner.core.measure.pruning import BestSoFar, PruningRule, plan_cells
from pytest_autotuner.core.measure.scoring import TrialScore, rank_key, score_failure, score_result
from pytest_autotuner.core.measure.trial import CellRule, Deadline, FailureClass, Params, TrialFailure
from pytest_autotuner.core.outcome.background import Background, Inline, Running
from pytest_autotuner.core.outcome.pareto import FrontSoFar
from pytest_autotuner.core.outcome.records import (
    Confirmation,
    TrialCost,
    TrialEvent,
    TrialRecord,
    by_configuration,
    trial_attrs,
    trial_cost,
)
from pytest_autotuner.core.search.gpu_pool import GpuPool, gpus_needed

if TYPE_CHECKING:
    from pytest_autotuner.core.outcome.screen_guide import Guidance
    from pytest_autotuner.core.search.study import Proposal, Search
    from pytest_autotuner.core.spec.task_spec import TaskSpec

__all__ = ["EvaluateFn", "TuningSession"]

logger = logging.getLogger(__name__)

EvaluateFn = Callable[[Params, Deadline], BenchResult]
_TEARDOWN_GRACE_S = 60.0  # how long a timed-out or interrupted evaluate gets to tear its server down
_POLL_S = 0.2  # the longest the session waits before it looks at its clocks again


@dataclass
class _Run:
    """One evaluation under way: what it measures, on which GPUs, since when, and whether it timed out."""

    key: int  # its trial number; -1: a confirmation run
    params: Params
    deadline: Deadline
    devices: tuple[int, ...]
    proposal: Proposal | None = None  # None: a confirmation run
    running: Running[BenchResult] | None = None  # None: not prepared yet
    held: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # the study's heartbeat
    timed_out_at: float | None = None  # when its deadline was cancelled for running past the timeout
    started: float = 0.0  # when it began (monotonic seconds)

    def ended(self) -> bool:
        return self.running is None or self.running.ended()


class TuningSession:
    """Runs one spec's search and confirmation against an injected evaluate function.

    Up to ``workers`` trials run at once (each launches its own server), each on the GPUs it needs from
    ``gpu_pool``; a proposal whose GPUs are busy waits until a running trial gives them back. Proposals, GPUs and
    results go through the caller's thread, which is also where Ctrl-C lands.
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
        writes_held: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
        after_trial: Callable[[list[TrialRecord]], Guidance] | None = None,
        background: Background | None = None,
    ) -> None:
        """``writes_held``: a context in which a Ctrl-C or SIGTERM waits, so that a finished trial is written to
        the study whole (the plugin passes ``pytest_autotuner.interrupts.signals_held``)."""
        self.spec = spec
        self._writes_held = writes_held
        #: asked after each finished search trial (the screen's guide, ``screen_guide.py``): what to try next,
        #: or why to stop proposing
        self.after_trial = after_trial
        self.search_state = search
        self.evaluate = evaluate
        self.max_iterations = max_iterations or spec.optimization.max_iterations
        self.on_trial = on_trial or (lambda event: None)
        self.workers = max(1, workers)
        self.gpu_pool = gpu_pool
        self.background: Background = background or Inline()
        self._results: dict[int, BenchResult] = {}  # this run's measurements, by trial number
        #: evaluations under way, by ``_Run.key``: registered before they start, so an interruption finds each
        self._runs: dict[int, _Run] = {}
        self.confirmation_failures: list[str] = []  # of candidates none of whose confirmation runs worked
        self.confirmation_gpu_seconds = 0.0  # what this run's confirmation runs cost
        self._total_cells = plan_cells(spec)
        self._prune_best: tuple[tuple[bool, bool, float], BestSoFar] | None = None  # (rank key, best complete)

    # -- one evaluation -----------------------------------------------------------------------------------

    def _launch(self, params: Params, rule: CellRule | None, proposal: Proposal | None = None) -> _Run | None:
        """Start evaluating ``params`` on the GPUs it needs; None while they are held by running trials."""
        devices: tuple[int, ...] = ()
        if self.gpu_pool is not None:
            needed = gpus_needed(params)
            if needed > self.gpu_pool.total:  # Search never proposes these (max_gpus): a caller's bug, not a trial
                raise ValueError(
                    f"{params} needs {needed} GPUs but the runner has {self.gpu_pool.total}; "
                    "give Search max_gpus so such configurations are never proposed"
                )
            taken = self.gpu_pool.take(needed)
            if taken is None:
                return None
            devices = taken
        deadline = Deadline(self.spec.optimization.timeout_per_iteration, devices, rule)
        run = _Run(proposal.number if proposal is not None else -1, params, deadline, devices, proposal)
        self._runs[run.key] = run  # from here on an interruption finds it, stops it and gives its GPUs back
        if proposal is not None:
            run.held.enter_context(self.search_state.heartbeat(proposal))
        run.running = self.background.prepare(lambda: self.evaluate(params, deadline))
        run.started = time.monotonic()
        run.running.begin()
        return run

    def _release(self, run: _Run, *, keep_heartbeat: bool = False) -> None:
        """``run`` ended: its GPUs go back to the pool. Its heartbeat stops too, unless ``keep_heartbeat`` (a search
        trial waiting for its turn to be recorded: a shared study must not take it for a dead worker's)."""
        if self._runs.pop(run.key, None) is not None:
            if not keep_heartbeat:
                run.held.close()
            if self.gpu_pool is not None:
                self.gpu_pool.give_back(run.devices)

    def _settled(self, run: _Run, now: float) -> _Measured | None:
        """``run``'s measurement once it has ended, or once the timeout and the teardown grace after it are spent
        (``trial_timeout``); None while it goes on. Cancels its deadline when it runs past the timeout."""
        timeout = self.spec.optimization.timeout_per_iteration
        if run.ended():
            return self._finish(run, timed_out=run.timed_out_at is not None)
        if run.timed_out_at is None:
            if now - run.started >= timeout:
                run.deadline.cancel()  # the runtime tears its server down and the evaluation ends
                run.timed_out_at = now
            return None
        if now - run.timed_out_at >= _TEARDOWN_GRACE_S:
            return self._finish(run, timed_out=True)
        return None

    def _finish(self, run: _Run, *, timed_out: bool) -> _Measured:
        """Score an evaluation that ended (or was given up on); failures become graded scores. A search trial's
        heartbeat goes on until it is recorded (``_Finished.heartbeat``)."""
        self._release(run, keep_heartbeat=run.proposal is not None)
        result: BenchResult | None = None
        log_tail = ""
        timeout = self.spec.optimization.timeout_per_iteration
        try:
            if timed_out:
                raise TrialFailure(
                    FailureClass.TRIAL_TIMEOUT,
                    f"the trial ran longer than optimization.timeout_per_iteration ({timeout:g} s)",
                )
            assert run.running is not None  # ended and settled: it began
            result = run.running.outcome()
        except TrialFailure as failure:
            score = score_failure(failure.failure_class, self.spec.optimization, failure.message)
            log_tail = failure.log_tail
        except Exception as err:  # an evaluate bug must not end the whole session
            logger.error("evaluate raised for %s", run.params, exc_info=err)
            score = score_failure(FailureClass.UNKNOWN, self.spec.optimization, f"{type(err).__name__}: {err}")
        else:
            score = score_result(result, self.spec.optimization, self.spec.slo, gpus_needed(run.params))
        bench = self.spec.benchmark
        cost = trial_cost(
            run.deadline,
            time.monotonic(),
            gpus=max(1, gpus_needed(run.params)),
            total_cells=self._total_cells,
            pruned=score.failure == FailureClass.PRUNED,
            max_requests=bench.max_requests_per_iteration,
            max_time=bench.max_time_per_iteration,
        )
        partial = tuple(run.deadline.cells) if score.failure is FailureClass.PRUNED else ()
        return _Measured(score, result, log_tail, run.devices, cost, partial)

    def _stop(self) -> list[_Run]:
        """The session is interrupted: every evaluation under way cancels its deadline and gets the teardown grace
        to take its server down; what it returned or raised is not its configuration's measurement. Returns them."""
        runs = list(self._runs.values())
        for run in runs:
            run.deadline.cancel()
        give_up = time.monotonic() + _TEARDOWN_GRACE_S
        while any(not run.ended() for run in runs) and time.monotonic() < give_up:
            self.background.wait(_POLL_S)
        for run in runs:
            self._release(run)
        return runs

    def _measure(self, params: Params) -> _Measured:
        """Evaluate and score one configuration alone (a confirmation run), waiting in this thread.

        A Ctrl-C or SIGTERM while it runs ends it as the interruption (``KeyboardInterrupt``) after its server is
        torn down, whatever it then returns or raises: a failure the interruption caused (the cancelled deadline,
        a benchmark cut short) is not the configuration's.
        """
        try:
            run = self._launch(params, None)
            if run is None:  # confirmations run after the search, when every GPU is free
                raise RuntimeError(f"the GPUs {params} needs are held by another evaluation")
            while (measured := self._settled(run, time.monotonic())) is None:
                self.background.wait(_POLL_S)
        except BaseException:
            self._stop()
            raise
        return measured

    def _pruning_rule(self) -> CellRule | None:
        """The early-stopping rule for the next search trial, with the best complete trial so far."""
        opt = self.spec.optimization
        if not opt.early_stopping or opt.uses_capacity:
            # capacity search: its ladder breaks an SLO by design (that is how it finds the edge), and steps at
            # different loads have no common cells with the best's to compare partial scores on
            return None
        best = self._prune_best[1] if self._prune_best is not None else None
        if opt.multi_objective:
            # a trial worse than the best on the primary objective may still be on the Pareto front: with several
            # objectives, early stopping stops trials on hard SLOs only
            opt = opt.model_copy(update={"prune_margin": None})
        return PruningRule(opt, self.spec.slo, self._total_cells, best)

    def _note_complete(self, number: int, score: TrialScore, result: BenchResult | None) -> None:
        """Keep the best complete trial for the pruning rule (``rank_key`` order)."""
        if score.failure is not None or result is None:
            return
        key = rank_key(score.meets_slos, score.feasible, score.value, self.spec.optimization.direction == "maximize")
        if self._prune_best is None or key < self._prune_best[0]:
            cells = tuple(CellSummary.from_dict(json_safe(c.as_dict())) for c in result.cells)
            self._prune_best = (key, BestSoFar(number, score.value, score.feasible, cells))

    def _prune_against(self, best: TrialRecord | None) -> None:
        """Early stopping's best complete trial: ``best`` (a configuration measured twice at its mean)."""
        if best is None:
            self._prune_best = None
            return
        maximize = self.spec.optimization.direction == "maximize"
        key = rank_key(best.meets_slos, best.feasible, best.value, maximize)
        self._prune_best = (key, BestSoFar(best.number, best.value, best.feasible, best.cells))

    # -- search -------------------------------------------------------------------------------------------

    def search(self) -> str:
        """Propose and run trials until the budget is spent; returns why it stopped early ('' if it did not).

        ``optimization.patience``: stop proposing after that many finished trials in a row that did not improve
        on the best so far (``rank_key``); a failed trial never improves, the first measured one always does.
        """
        stopped_early = ""
        proposing = True
        opt = self.spec.optimization
        # a new best is measured again (one objective; grid measures each point once)
        remeasure = opt.remeasure_best and opt.strategy != "grid" and not opt.multi_objective
        best_number: int | None = None  # the best configuration's first trial
        since_improvement = 0
        patience = self.spec.optimization.patience
        runs = self._runs  # by trial number
        waiting: Proposal | None = None  # proposed; its GPUs are held by running trials
        # Trials at once are recorded in the order they were proposed, and a proposal is made only once every
        # trial but the last ``workers - 1`` proposed is recorded (none of those is, yet): so the sampler sees the
        # same trials at each proposal whichever finished first, and a run is reproducible. A trial that ends
        # before its turn waits in ``finished`` (its GPUs are given back at once).
        order: list[int] = []  # this session's proposals by trial number, as made
        finished: dict[int, _Finished] = {}
        recorded = 0  # how many of ``order`` are recorded
        front = FrontSoFar(self.spec.optimization.directions)
        for record in self.ranked_candidates()[:1]:  # a resumed study's best configuration
            if self._prune_best is None:
                self._prune_against(record)
            best_number = record.number

        def next_in_order() -> _Finished | None:
            """The oldest unrecorded trial, once it has finished and its turn has come."""
            if recorded == len(order) or order[recorded] not in finished:
                return None
            if proposing and len(order) - recorded < self.workers:
                return None  # a proposal comes first: it must not see this trial (the same in every run)
            return finished.pop(order[recorded])

        try:
            while True:
                while waiting is not None or (proposing and len(order) - recorded < self.workers):
                    if waiting is None:
                        if self.search_state.n_evaluated + len(order) - recorded >= self.max_iterations:
                            proposing = False
                            break
                        waiting = self.search_state.propose(self.max_iterations)
                        if waiting is None:
                            size = self.search_state.space.grid_size
                            if size is not None and len(self.search_state.claimed()) >= size:
                                stopped_early = f"every configuration of the space was evaluated ({size})"
                            proposing = False
                            break
                        order.append(waiting.number)
                    if self._launch(waiting.params, self._pruning_rule(), waiting) is None:
                        break  # it starts when a running trial gives its GPUs back
                    waiting = None
                if not runs and not finished:
                    return stopped_early
                if runs and not any(run.ended() for run in runs.values()):
                    self.background.wait(_POLL_S)
                now = time.monotonic()
                for run in list(runs.values()):
                    with self._writes_held():  # ended and kept for its turn at once: an interrupt finds it in one
                        done = self._settled(run, now)
                        if done is not None:
                            assert run.proposal is not None  # search runs always have one
                            finished[run.proposal.number] = _Finished(
                                run.proposal, done, time.monotonic() - run.started, run.held
                            )
                while True:
                    with self._writes_held():  # a finished trial is recorded whole, or the interrupt would lose it
                        turn = next_in_order()
                        if turn is None:
                            break
                        recorded += 1
                        proposal, score, devices = turn.proposal, turn.measured.score, turn.measured.devices
                        self._record(turn)
                    duration = turn.duration
                    repeat_of = proposal.trial.user_attrs.get("repeat_of")
                    repeat: dict[str, Any] = {}
                    if self.spec.optimization.multi_objective:
                        self._note_complete(proposal.number, score, turn.measured.result)
                        improved = score.failure is None and front.add(score)
                    else:
                        ranked = self.ranked_candidates()  # by configuration: a repeated one by its mean
                        top = ranked[0] if ranked else None
                        self._prune_against(top)
                        top_number = top.number if top is not None else None
                        improved = repeat_of is None and top_number == proposal.number != best_number
                        best_number = top_number
                        if repeat_of is not None:
                            again = next((r for r in ranked if r.number == repeat_of), None)
                            again = again if score.failure is None else None  # a failed repeat: its failure
                            repeat = {
                                "repeat_of": repeat_of,
                                "repeat_mean": again.objective if again is not None else None,
                                "repeat_runs": len(again.runs) if again is not None else 0,
                                "still_best": top_number == repeat_of,
                            }
                        busy = len(order) - recorded  # proposed and not yet recorded (running, finished, waiting)
                        room = self.search_state.n_evaluated + busy < self.max_iterations
                        if improved and remeasure and proposing and room:
                            self.search_state.repeat(proposal)  # the next proposal measures it again
                    if improved:
                        since_improvement = 0
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
                            **repeat,
                        )
                    )
                    if proposing and patience and since_improvement >= patience:
                        stopped_early = f"no improvement in the last {patience} trials (optimization.patience)"
                        proposing = False
                    if proposing and self.after_trial is not None and repeat_of is None:
                        guidance = self.after_trial(self.records()[0])
                        for params in guidance.enqueue:
                            self.search_state.enqueue(dict(params), origin="screen")
                        if guidance.stop:
                            stopped_early, proposing = guidance.stop, False
        except BaseException:
            for number in order[recorded:]:  # finished before the interruption, waiting for their turn: kept
                if (turn := finished.pop(number, None)) is not None:
                    with self._writes_held():
                        self._record(turn)
            self._stop()  # every running trial cancels its deadline and tears its server down
            self.search_state.abandon_unfinished("interrupted")  # those and any proposal not yet recorded
            raise

    def _record(self, turn: _Finished) -> None:
        """Tell the study a finished search trial (its score and what the report shows of it)."""
        proposal, measured = turn.proposal, turn.measured
        if measured.result is not None:
            self._results[proposal.number] = measured.result
        attrs = trial_attrs(
            measured.score,
            measured.result,
            measured.log_tail,
            turn.duration,
            measured.devices,
            measured.cost,
            measured.partial_cells,
        )
        try:
            self.search_state.record(proposal, measured.score, attrs)
        finally:
            turn.heartbeat.close()

    def records(self) -> tuple[list[TrialRecord], int]:
        """(every evaluated trial of the study, how many repeated proposals were skipped without a run)."""
        opt = self.spec.optimization
        primary = opt.objective_names.index(opt.objective)
        records = [TrialRecord.from_trial(t, primary) for t in self.search_state.evaluated()]
        trials = self.search_state.study.get_trials(deepcopy=False)
        return records, sum(1 for t in trials if "duplicate_of" in t.user_attrs)

    # -- confirmation -------------------------------------------------------------------------------------

    def ranked_candidates(self) -> list[TrialRecord]:
        """Measured configurations, best first (``by_configuration``: one record per configuration, repeat runs
        averaged)."""
        return by_configuration(self.records()[0], self.spec.optimization.direction == "maximize")

    def confirm(self, candidate: TrialRecord, *, first: int = 1, total: int | None = None) -> Confirmation | None:
        """Re-run ``candidate`` ``confirm_runs`` times (``confirm_runs`` 0: reuse its search run when this process
        measured it). None with the failures logged when every run failed."""
        runs: list[BenchResult] = []
        failures: list[str] = []
        n_runs = self.spec.optimization.confirm_runs
        if n_runs == 0:
            cached = [self._results[n] for n in candidate.runs or (candidate.number,) if n in self._results]
            if cached:
                runs += cached
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
        score = score_result(
            BenchResult.merge(runs), self.spec.optimization, self.spec.slo, gpus_needed(candidate.params)
        )
        return Confirmation(candidate.params, candidate.number, tuple(runs), score, tuple(failures))

    def confirm_again(self, confirmation: Confirmation) -> Confirmation:
        """One more confirmation run of ``confirmation`` (to settle an ambiguous comparison, or for a baseline)."""
        result, failure = self._confirmation_run(confirmation.params, confirmation.source_trial, 1, 1)
        if result is None:
            return dataclasses.replace(confirmation, failures=(*confirmation.failures, failure))
        runs = (*confirmation.runs, result)
        score = score_result(
            BenchResult.merge(runs), self.spec.optimization, self.spec.slo, gpus_needed(confirmation.params)
        )
        return dataclasses.replace(confirmation, runs=runs, score=score)

    def _confirmation_run(self, params: Params, source: int, index: int, total: int) -> tuple[BenchResult | None, str]:
        started = time.monotonic()
        measured = self._measure(params)
        score, result = measured.score, measured.result
        self.confirmation_gpu_seconds += measured.cost.gpu_seconds
        self.on_trial(TrialEvent("confirm", index, total, params, score, time.monotonic() - started, source))
        failure = "" if result is not None else f"{score.failure.value if score.failure else 'failed'}: "
        return result, failure + (score.failure_message if result is None else "")


@dataclass(frozen=True)
class _Finished:
    """A search trial that ended, waiting for its turn to be recorded (``TuningSession.search``)."""

    proposal: Proposal
    measured: _Measured
    duration: float  # wall seconds from its start to its end
    heartbeat: contextlib.ExitStack  # the study's heartbeat, closed once the trial is recorded


@dataclass(frozen=True)
class _Measured:
    """One evaluation as the session sees it."""

    score: TrialScore
    result: BenchResult | None
    log_tail: str
    devices: tuple[int, ...]
    cost: TrialCost
    partial_cells: tuple[CellSummary, ...] = ()  # a pruned trial's cells, up to the one that stopped it
