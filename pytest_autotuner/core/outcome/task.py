"""``run_task``: one spec's whole tuning item, from the first trial to the verdict, as a frozen ``TaskOutcome``.

search (``TuningSession``) -> confirmation of the best, and of SGLang's defaults when they were measured, which
compete in the choice -> comparison with the baseline (one more run when it is ambiguous) -> a new baseline when
asked -> the one ``Verdict``.

Check mode (``TaskOptions.check``, ``--autotune-check``) skips the search: the baseline's ``best_params`` are
confirmed with the spec's ``confirm_runs`` and go through the same gate; the study is kept in memory, so a check
never adds trials to a tuning study. Without a baseline a check fails (``ReasonKind.NO_BASELINE``) with no launch.

Pure like the rest of the core: the evaluate function is injected, progress goes to callbacks, and nothing
is printed or written (the plugin writes the new baseline the outcome carries).

What it returns (``TaskOutcome`` and its parts) is ``outcome.py``.

Why one module of about 470 lines: its steps (search, confirmation, SGLang's defaults, the baseline, check mode)
each read what the step before decided, and ``run_task`` reads as that sequence.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.measure.formatting import describe_params
from pytest_autotuner.core.measure.scoring import gpu_divisor, objective_value, rank_key
from pytest_autotuner.core.measure.stats import ALPHA, p_worse
from pytest_autotuner.core.outcome.background import Background
from pytest_autotuner.core.outcome.baseline import compare, fingerprint, make_baseline
from pytest_autotuner.core.outcome.outcome import (
    DefaultsComparison,
    ParetoFront,
    StudyCost,
    TaskOutcome,
    pareto_front_of,
)
from pytest_autotuner.core.outcome.records import Confirmation, TrialEvent, TrialRecord
from pytest_autotuner.core.outcome.screen_guide import Guidance, RefitFn, ScreenGuide, calibrate
from pytest_autotuner.core.outcome.session import EvaluateFn, TuningSession
from pytest_autotuner.core.outcome.verdict import Verdict, decide, no_baseline
from pytest_autotuner.core.search.calibration import PredictFn
from pytest_autotuner.core.search.gpu_pool import GpuPool, gpus_needed
from pytest_autotuner.core.search.samplers import startup_trials
from pytest_autotuner.core.search.screening import Screening, screen_space
from pytest_autotuner.core.search.space import SearchSpace
from pytest_autotuner.core.search.study import Search, StudyStorage, study_name_for

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.trial import Params
    from pytest_autotuner.core.outcome.baseline import Baseline
    from pytest_autotuner.core.spec.task_spec import TaskSpec

__all__ = ["TaskOptions", "run_task"]


def _ignore(_: Any) -> None:
    return None


@dataclass(frozen=True)
class TaskOptions:
    """How to run one spec: everything the plugin's options and the runtime host decide."""

    runtime: str = "sim"
    seed: int = 0
    storage: StudyStorage | None = None  # opened at the edge (``study_storage.open_storage``); None: in memory
    local_storage: bool = True  # a storage only this process uses (trials left running were interrupted)
    study_name: str | None = None  # default: ``study_name_for(spec, runtime)``
    grace_period: int = 120
    gpu_ids: tuple[int, ...] = ()
    gpu_memory_mib: float | None = None
    workers: int | None = None  # default: as many as the GPUs fit, else 1
    report_only: bool = False
    check: bool = False  # no search: confirm the baseline's best configuration and gate it (--autotune-check)
    update_baseline: bool = False
    strict_baseline: bool = False
    baseline_path: str = ""  # how messages name the baseline file
    runtime_facts: Mapping[str, str] = field(default_factory=dict)  # runtime, image, image_digest
    on_trial: Callable[[TrialEvent], None] = _ignore
    on_note: Callable[[str], None] = _ignore  # progress lines between trials
    # the cheap model ``optimization.screening`` scores with (its score ranks the screen, core/search/screening.py) and
    # whose per-cell predictions the calibration compares the real trials with (core/search/calibration.py)
    predict: PredictFn | None = None
    # the same model with its prefill and decode steps scaled by fitted factors (TTFT, TPOT): what the screen
    # is rerun on once the real trials calibrate it (``screen_guide.py``); None: rescreens reuse ``predict``
    refit: RefitFn | None = None
    no_screen: str = ""  # why there is none, when the spec asks for screening
    # a context in which Ctrl-C and SIGTERM wait, so a finished trial is written whole (``interrupts.signals_held``)
    writes_held: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
    # what runs each evaluation beside the session (``pytest_autotuner.threads.Threads``, so trials overlap and
    # ``timeout_per_iteration`` holds); None: each runs to its end in the caller's thread, one at a time
    background: Background | None = None


def _defaults_trial(trials: list[TrialRecord]) -> TrialRecord | None:
    return next((t for t in sorted(trials, key=lambda t: t.number) if t.origin == "sglang_defaults"), None)


def _per_run_objective(confirmation: Confirmation, spec: TaskSpec) -> list[float]:
    opt = spec.optimization
    divisor = gpu_divisor(opt, gpus_needed(confirmation.params))
    return [objective_value(run, opt.objective, divisor) for run in confirmation.runs]


def _better(a: Confirmation, b: Confirmation, maximize: bool) -> bool:
    """``a`` ranks above ``b`` (``rank_key`` on the confirmed scores)."""
    key_a = rank_key(a.score.meets_slos, a.score.feasible, a.score.value, maximize)
    key_b = rank_key(b.score.meets_slos, b.score.feasible, b.score.value, maximize)
    return key_a < key_b


def _versus_defaults(
    spec: TaskSpec,
    tuned: Confirmation | None,
    trial: TrialRecord,
    defaults: Confirmation | None,
    *,
    may_choose: bool = True,
) -> DefaultsComparison:
    """Compare the tuned best with the confirmed defaults (on the primary objective): the defaults are chosen
    unless the tuned best ranks above them and is significantly better (or meets SLOs the defaults miss).
    ``may_choose`` False (a multi-objective search whose select rule the defaults do not meet): they are compared,
    never chosen."""
    opt = spec.optimization
    maximize = opt.direction == "maximize"
    if defaults is None or tuned is None:
        chosen = defaults is not None and (may_choose or tuned is None)
        return DefaultsComparison(trial, defaults, tuned, None, math.nan, defaults_chosen=chosen, eligible=may_choose)
    tuned_runs, default_runs = _per_run_objective(tuned, spec), _per_run_objective(defaults, spec)
    # one-sided: "the defaults are worse than the tuned best", per run
    p_value = p_worse(tuned_runs, default_runs, higher_is_worse=not maximize)
    base, now = defaults.score.objective, tuned.score.objective
    gain = None
    if base is not None and now is not None and math.isfinite(base) and math.isfinite(now) and base != 0:
        gain = (now - base) / abs(base) * (1 if maximize else -1)
    slo_edge = tuned.score.meets_slos and not defaults.score.meets_slos
    # below two runs a side there is no test: the ranking decides, and the outputs say the p-value is unknown
    untestable = math.isnan(p_value)
    keep_tuned = not may_choose or (_better(tuned, defaults, maximize) and (slo_edge or untestable or p_value < ALPHA))
    return DefaultsComparison(
        trial, defaults, tuned, gain, p_value, defaults_chosen=not keep_tuned, eligible=may_choose
    )


def _memoized(predict: PredictFn) -> PredictFn:
    """``predict`` asked once per configuration: the calibration compares the seeded trials with the
    predictions the screen already made for them."""
    known: dict[tuple[tuple[str, object], ...], Any] = {}

    def once(params: Params) -> Any:
        key = tuple(sorted(params.items()))
        if key not in known:
            known[key] = predict(params)
        return known[key]

    return once


def _screen(spec: TaskSpec, space: SearchSpace, options: TaskOptions, predict: PredictFn | None) -> Screening | None:
    """What ``optimization.screening`` scored and hands to the first trials (None when it is off or has no
    model; the notes say which)."""
    opt = spec.optimization
    if not opt.screening:
        return None
    if predict is None:
        options.on_note(f"{spec.task_name}: screening off: {options.no_screen or 'no model to screen with'}")
        return None
    max_gpus = len(options.gpu_ids) or None

    def hostable(params: Params) -> float | None:
        if max_gpus is not None and gpus_needed(params) > max_gpus:
            return None
        prediction = predict(params)
        return None if prediction is None else prediction[0]

    def progress(done: int, total: int) -> None:
        options.on_note(f"{spec.task_name}: screening {done:,}/{total:,}")

    screening = screen_space(space, hostable, size=opt.screen_size, seeds=opt.screen_seeds, seed=options.seed,
                             on_progress=progress)  # fmt: skip
    options.on_note(f"{spec.task_name}: {screening.summary}")
    for params, predicted in zip(screening.seeds, screening.predicted, strict=True):
        options.on_note(f"  screen: {describe_params(params)} (predicted score {predicted:.4g})")
    return screening


def _guide(
    spec: TaskSpec, space: SearchSpace, options: TaskOptions, screening: Screening | None, predict: PredictFn | None
) -> ScreenGuide | None:
    """The screen's guide between trials (``screen_guide.py``), for a screened single-objective search."""
    if screening is None or predict is None or not screening.seeds or spec.optimization.multi_objective:
        return None
    return ScreenGuide(
        space=space,
        predict=predict,
        refit=options.refit,
        maximize=spec.optimization.direction == "maximize",
        size=spec.optimization.screen_size,
        seed=options.seed,
        max_gpus=len(options.gpu_ids) or None,
        gpus_needed=gpus_needed,
    )


def _noted(
    spec: TaskSpec, guide: ScreenGuide, on_note: Callable[[str], None]
) -> Callable[[list[TrialRecord]], Guidance]:
    """``guide``, its notes shown as progress lines."""

    def after_trial(records: list[TrialRecord]) -> Guidance:
        guidance = guide(records)
        if guidance.note:
            first, *rest = guidance.note.splitlines()
            on_note("\n".join([f"{spec.task_name}: {first}", *rest]))
        return guidance

    return after_trial


def _budget_saved(spec: TaskSpec, records: list[TrialRecord]) -> str:
    """What stopping on the screen's word saved: the trials left in the budget at this run's mean trial cost."""
    left = spec.optimization.max_iterations - len(records)
    costs = [r.gpu_seconds for r in records if r.gpu_seconds > 0]
    if left <= 0:
        return ""
    if not costs:
        return f"; {left} trials of the budget not run"
    hours = left * sum(costs) / len(costs) / 3600
    return f"; {left} trials of the budget not run (about {hours:.2g} GPU-hours at this run's mean trial cost)"


def run_task(spec: TaskSpec, options: TaskOptions, evaluate: EvaluateFn, baseline: Baseline | None) -> TaskOutcome:
    """Tune ``spec`` with ``evaluate`` (or check the baseline's configuration, ``options.check``) and decide the
    item's verdict (see the module docstring)."""
    started = time.monotonic()
    if options.check and baseline is None:
        return _check_without_baseline(spec, options, started)
    space = SearchSpace.from_spec(spec)
    predict = _memoized(options.predict) if options.predict is not None else None
    screening = None if options.check or options.report_only else _screen(spec, space, options, predict)
    search = Search(
        spec=spec,
        space=space,
        storage=None if options.check else options.storage,
        study_name=options.study_name or study_name_for(spec, options.runtime),
        seed=options.seed,
        local_storage=True if options.check else options.local_storage,
        grace_period=options.grace_period,
        gpu_memory_mib=options.gpu_memory_mib,
        max_gpus=len(options.gpu_ids) or None,
        screened=screening.seeds if screening is not None else (),
    )
    for note in search.notes:  # a repaired journal, a lock taken over from a run that died
        options.on_note(f"{spec.task_name}: {note}")
    gpu_pool = GpuPool(list(options.gpu_ids)) if options.gpu_ids else None
    workers = options.workers or (gpu_pool.total if gpu_pool else 1)
    screen_guide = _guide(spec, space, options, screening, predict)
    session = TuningSession(
        spec=spec,
        search=search,
        evaluate=evaluate,
        on_trial=options.on_trial,
        workers=workers,
        gpu_pool=gpu_pool,
        writes_held=options.writes_held,
        background=options.background,
        after_trial=None if screen_guide is None else _noted(spec, screen_guide, options.on_note),
    )
    defaults: DefaultsComparison | None = None
    pareto: ParetoFront | None = None
    if options.check:
        assert baseline is not None
        stopped_early = ""  # the mode says it: a check runs no search
        best = _check(spec, session, space, baseline, options.on_note)
    else:
        if baseline is not None and space.contains(baseline.best_params):
            search.enqueue(dict(baseline.best_params))  # warm start from the last known good
        opt = spec.optimization
        options.on_note(
            f"{spec.task_name}: {opt.strategy} search on {options.runtime}, {opt.max_iterations} trials, "
            f"space of {space.grid_size or 'continuous'} points, study {search.study.study_name}"
        )
        unhostable = search.unhostable_note()
        if unhostable:
            options.on_note("\n".join(f"  {line}" for line in unhostable.splitlines()))
        if workers > 1:
            options.on_note(f"  GPUs {list(options.gpu_ids) or 'none'}, up to {workers} trial(s) at once")
        stopped_early = (
            "report only: no trials run (--autotune-report-only)" if options.report_only else session.search()
        )
        if screen_guide is not None and screen_guide.stopped and stopped_early == screen_guide.stopped:
            stopped_early += _budget_saved(spec, session.records()[0])
        pareto = pareto_front_of(spec, session.records()[0])
        best, defaults = _confirm(spec, session, pareto)

    fp = fingerprint(spec, {"runtime": options.runtime, **options.runtime_facts}, best.server_info if best else {})
    comparison = None
    if baseline is not None and best is not None:
        comparison = compare(baseline, spec, best, fp, path=options.baseline_path)
        if comparison.compared and comparison.ambiguous:
            options.on_note(f"{spec.task_name}: baseline comparison is ambiguous; one more confirmation run")
            best = session.confirm_again(best)
            comparison = compare(baseline, spec, best, fp, path=options.baseline_path, extra_run=True)
        if not comparison.compared:
            options.on_note(f"{spec.task_name}: WARNING baseline not compared: {comparison.skipped_reason}")
    new_baseline, note = None, ""
    if options.update_baseline:
        best, note = _runs_for_baseline(spec, session, best, options.on_note)
        if best is not None and not note:
            new_baseline = make_baseline(spec, best, fp)
    records, duplicates = ([], 0) if options.check else session.records()
    calibration = None
    if screening is not None and predict is not None and records:
        calibration = calibrate(records, predict, spec.optimization.direction == "maximize")
        options.on_note(f"{spec.task_name}: {calibration.text}")
    verdict = decide(
        task=spec.task_name,
        trials=records,
        best=best,
        best_failures=session.confirmation_failures,
        baseline=comparison,
        strict_baseline=options.strict_baseline,
        baseline_accepted=new_baseline is not None,
        check=options.check,
    )
    return TaskOutcome(
        spec=spec,
        runtime=options.runtime,
        study_name="" if options.check else search.study.study_name,
        trials=tuple(records),
        best=best,
        defaults=defaults,
        baseline=comparison,
        new_baseline=new_baseline,
        baseline_note=note,
        fingerprint=fp,
        verdict=verdict,
        duration=time.monotonic() - started,
        stopped_early=stopped_early,
        duplicates_skipped=duplicates,
        cost=StudyCost.of(records, session.confirmation_gpu_seconds),
        mode="check" if options.check else "tune",
        baseline_objective=baseline.objective_value if baseline is not None else None,
        pareto=pareto,
        space_fingerprint=space.fingerprint(),
        startup_trials=(
            startup_trials(spec.optimization.n_initial_random, space.grid_size)
            if spec.optimization.strategy == "bayesian"
            else 0
        ),
        distributions=space.distributions(),
        screening=screening,
        calibration=calibration,
    )


def _check_without_baseline(spec: TaskSpec, options: TaskOptions, started: float) -> TaskOutcome:
    """A check with nothing to check against: FAIL before any launch, saying how to record a baseline."""
    reason = no_baseline(spec.task_name, options.baseline_path)
    options.on_note(f"{spec.task_name}: {reason.summary}")
    return TaskOutcome(
        spec=spec,
        runtime=options.runtime,
        study_name="",
        trials=(),
        best=None,
        defaults=None,
        baseline=None,
        new_baseline=None,
        baseline_note="",
        fingerprint=fingerprint(spec, {"runtime": options.runtime, **options.runtime_facts}, {}),
        verdict=Verdict((reason,)),
        duration=time.monotonic() - started,
        mode="check",
    )


def _check(
    spec: TaskSpec, session: TuningSession, space: SearchSpace, baseline: Baseline, on_note: Callable[[str], None]
) -> Confirmation | None:
    """Confirm the baseline's ``best_params`` with the spec's ``confirm_runs`` (at least one), no search."""
    params = dict(baseline.best_params)
    runs = max(spec.optimization.confirm_runs, 1)
    on_note(
        f"{spec.task_name}: check mode on {spec.runtime}: no search; {runs} run(s) of the baseline's configuration "
        f"{describe_params(params)}"
    )
    if not space.contains(params):
        on_note(
            f"{spec.task_name}: note: the baseline's configuration is not a point of the spec's current space (flags "
            "left to the server's defaults, or a space changed since); it is checked as recorded"
        )
    candidate = TrialRecord(
        number=-1,  # no trial of a study: the baseline's configuration
        params=params,
        value=math.nan,
        objective=baseline.objective_value,
        feasible=True,
        meets_slos=True,
        failure=None,
        failure_message="",
        log_tail="",
        duration=0.0,
        cells=(),
        origin="baseline",
    )
    return session.confirm(candidate, first=1, total=runs)


def _confirm(
    spec: TaskSpec, session: TuningSession, pareto: ParetoFront | None = None
) -> tuple[Confirmation | None, DefaultsComparison | None]:
    """Confirm the top ``confirm_top`` tuned candidates and, when the search measured them, SGLang's defaults with
    as many runs; the best confirmed tuned candidate then competes with the defaults (``_versus_defaults``).

    With several objectives the candidates are the front's trials in the select rule's order (``pareto``), and
    the defaults can be chosen only when the rule finds them eligible."""
    opt = spec.optimization
    maximize = opt.direction == "maximize"
    records = session.records()[0]
    defaults_trial = _defaults_trial(records)
    skip = defaults_trial.number if defaults_trial else None
    ranked = [r for r in session.ranked_candidates() if r.number != skip]
    may_choose_defaults = True
    if pareto is not None and pareto.eligible:
        by_number = {r.number: r for r in ranked}
        ranked = [by_number[n] for n in pareto.eligible if n in by_number] or ranked
        may_choose_defaults = skip in pareto.eligible
    candidates = ranked[: opt.confirm_top]
    if defaults_trial is not None and defaults_trial.failure is None:
        candidates.append(defaults_trial)
    runs = max(opt.confirm_runs, 1)
    tuned: Confirmation | None = None
    defaults: Confirmation | None = None
    for rank, candidate in enumerate(candidates):
        confirmed = session.confirm(candidate, first=rank * runs + 1, total=len(candidates) * runs)
        if confirmed is None:
            continue
        if candidate is defaults_trial:
            defaults = confirmed
        elif tuned is None or _better(confirmed, tuned, maximize):
            tuned = confirmed
    if defaults_trial is None:
        return tuned, None
    comparison = _versus_defaults(spec, tuned, defaults_trial, defaults, may_choose=may_choose_defaults)
    return (defaults if comparison.defaults_chosen else tuned), comparison


def _runs_for_baseline(
    spec: TaskSpec, session: TuningSession, best: Confirmation | None, on_note: Callable[[str], None]
) -> tuple[Confirmation | None, str]:
    """The best with ``regression.baseline_runs`` runs (a baseline is a long-lived reference: measure it well),
    or why no baseline can be recorded."""
    if best is None or not best.score.meets_slos:
        return best, "baseline NOT updated: the session did not pass its SLOs"
    wanted = spec.regression.baseline_runs
    if len(best.runs) < wanted:
        on_note(f"{spec.task_name}: {wanted - len(best.runs)} more run(s) for the baseline")
    while len(best.runs) < wanted:
        before = len(best.runs)
        best = session.confirm_again(best)
        if len(best.runs) == before:
            return best, "baseline NOT updated: a confirmation run failed"
    return best, ""
