"""The report view: everything an output shows of one tuning item, computed once from its outcome.

``report_view(outcome)`` is the only place the builders (``data.py``, ``text.py``, ``explain.py``, ``rows.py``,
``series.py``, ``tradeoff.py``) read a ``TaskOutcome``. The renderers (``html.py``: the page, the run index and
the files; ``plots.py``; ``terminal.py``: the terminal summary; ``summary.py``: the job summary; the plugin's
JUnit properties) read only the frozen ``ReportView``, so no count, rank or label is computed twice and every
output says the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.measure.formatting import describe_params, format_gain, format_objective, format_p
from pytest_autotuner.core.measure.trial import FailureClass
from pytest_autotuner.report import data, explain, rows, series, text

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.trial import ParamValue
    from pytest_autotuner.core.outcome.outcome import TaskOutcome, TrialCounts
    from pytest_autotuner.core.outcome.verdict import Verdict
    from pytest_autotuner.report.series import PlotSeries

__all__ = ["BestFacts", "Lines", "ReportView", "report_view", "unreported_view"]


@dataclass(frozen=True)
class Lines:
    """The sentences every output shares, in the same words everywhere."""

    objective_label: str  # the objective's name, 'per GPU' when per_gpu divides it
    answer: str | None  # the capacity answer in operators' words (capacity objectives)
    versus_defaults: str | None  # the best against SGLang's defaults, with the significance
    pareto: str | None  # a multi-objective search's front and the select rule's choice
    pareto_brief: str | None  # the same in a table cell: 'Pareto front of 4, select: <rule>'
    screening: str  # what the simulator's screen scored and seeded ('' without screening)
    cost: str  # the tuning run's GPU time
    serving_cost: str  # the serving cost at cost.gpu_hour ('' without a price)
    baseline: str  # what happened with the baseline


@dataclass(frozen=True)
class BestFacts:
    """The confirmed best, as the summaries show it."""

    params: Mapping[str, ParamValue]
    params_text: str  # 'name=value ...'
    source_trial: int
    runs: int  # confirmation runs
    objective: float | None
    objective_text: str  # the primary objective, formatted
    meets_slos: bool
    also: str  # the other objectives of a multi-objective search: '; name: value' each
    found: str  # 'found by trial #N' (and what the defaults left to SGLang)
    left_to_server: Mapping[str, str]  # when SGLang's defaults are the best: the flags it chose at startup
    versus_text: str  # the job summary's comparison with the defaults (or the answer, for a capacity)


@dataclass(frozen=True)
class ReportView:
    """One tuning item as every output shows it (see the module's docstring)."""

    task: str
    slug: str
    description: str
    mode: str  # "tune" or "check"
    strategy: str
    objective: str
    parameters: tuple[str, ...]
    duration: float
    stopped_early: str
    verdict: Verdict
    counts: TrialCounts
    failures: tuple[tuple[str, int], ...]  # failed trials by class, most first (pruned ones are not failures)
    best: BestFacts | None
    slo_met: int  # the confirmed best's SLO checks met, of slo_total
    slo_total: int
    lines: Lines
    improvements: tuple[str, ...]  # what improved on the baseline, one line each
    pareto: Mapping[str, Any] | None  # results.json's Pareto block (JUnit reads it too)
    results: Mapping[str, Any]  # results.json
    trials_csv: str  # trials.csv
    page: Mapping[str, Any]  # the page's rows and blocks (``rows.py``)
    environment: Mapping[str, Any]
    deploy_files: Mapping[str, str]  # the deploy folder's files (name -> text); empty without a best
    deploy_folder: str  # that folder, inside the report folder
    series: PlotSeries
    unreported: str = ""  # why the view could not be built (``unreported_view``); "" for a built one

    @property
    def is_check(self) -> bool:
        return self.mode == "check"

    @property
    def passed(self) -> bool:
        return self.verdict.passed


def _lines(outcome: TaskOutcome, serving_cost: Mapping[str, Any] | None) -> Lines:
    return Lines(
        objective_label=text.objective_label(outcome),
        answer=text.answer_line(outcome),
        versus_defaults=text.defaults_line(outcome),
        pareto=text.pareto_line(outcome),
        pareto_brief=None
        if outcome.pareto is None
        else f"Pareto front of {len(outcome.pareto.front)}, select: {outcome.pareto.describe_rule()}",
        screening=text.screening_line(outcome),
        cost=text.cost_line(outcome),
        serving_cost=explain.serving_cost_text(serving_cost),
        baseline=text.baseline_text(outcome),
    )


def _best_facts(outcome: TaskOutcome, lines: Lines) -> BestFacts | None:
    best = outcome.best
    if best is None:
        return None
    opt = outcome.spec.optimization
    versus = outcome.defaults
    found = f"found by trial #{best.source_trial}"
    left = text.server_choices(outcome) if versus is not None and versus.defaults_chosen else {}
    if left:
        found += "; left to SGLang: " + ", ".join(f"{k}={v}" for k, v in left.items())
    also = "".join(
        f"; {name}{text.per_gpu_suffix(name, opt.per_gpu)}: {format_objective(value, name)}"
        for name, value in best.score.objectives.items()
        if name != opt.objective
    )
    objective_text = format_objective(best.score.objective, opt.objective)
    versus_text = objective_text
    if lines.answer:
        versus_text = lines.answer
    elif versus is not None and versus.defaults_chosen:
        versus_text += " (SGLang defaults: tuning found nothing significantly better)"
    elif versus is not None and versus.gain is not None:
        versus_text += f" ({format_gain(versus.gain)} than SGLang defaults, p = {format_p(versus.p_value)})"
    return BestFacts(
        params=dict(best.params),
        params_text=describe_params(best.params),
        source_trial=best.source_trial,
        runs=len(best.runs),
        objective=best.score.objective,
        objective_text=objective_text,
        meets_slos=best.score.meets_slos,
        also=also,
        found=found,
        left_to_server=left,
        versus_text=versus_text,
    )


def _identity(outcome: TaskOutcome) -> dict[str, Any]:
    """The fields every view has, built or not: what the item is and how it ended."""
    spec = outcome.spec
    return {
        "task": spec.task_name,
        "slug": spec.slug,
        "description": spec.description,
        "mode": outcome.mode,
        "strategy": spec.optimization.strategy,
        "objective": spec.optimization.objective,
        "parameters": tuple(spec.parameters),
        "duration": outcome.duration,
        "stopped_early": outcome.stopped_early,
        "verdict": outcome.verdict,
        "counts": outcome.counts,
    }


def report_view(outcome: TaskOutcome) -> ReportView:
    """The view of ``outcome``: every builder runs here, once."""
    spec = outcome.spec
    importances = data.param_importances(outcome)
    explained = explain.explained(outcome, importances)
    lines = _lines(outcome, explained["serving_cost"])
    facts = _best_facts(outcome, lines)
    pareto = data.pareto_block(outcome)
    environment = data.environment(outcome)
    checks = outcome.slo_checks
    failures = tuple(
        (name, count) for name, count in outcome.failure_counts.most_common() if name != FailureClass.PRUNED.value
    )
    improvements = tuple(
        f"{change.metric} {change.cell.label} {change.change:+.1%}"
        for change in (outcome.baseline.improvements if outcome.baseline is not None else ())
    )
    deploy = explain.deploy_params(outcome)
    if deploy is not None:
        from pytest_autotuner.deploy import deploy_files

        files: Mapping[str, str] = deploy_files(spec, deploy)
    else:
        files = {}
    importance = explained["importance"]
    return ReportView(
        **_identity(outcome),
        failures=failures,
        best=facts,
        slo_met=sum(c.passed for c in checks),
        slo_total=len(checks),
        lines=lines,
        improvements=improvements,
        pareto=pareto,
        results=data.results_block(outcome, lines, explained, pareto, environment),
        trials_csv=data.trials_frame(outcome).to_csv(index=False),
        page=rows.page_rows(outcome, lines, explained, pareto, facts),
        environment=environment,
        deploy_files=files,
        deploy_folder=explain.DEPLOY_FOLDER,
        series=series.plot_series(
            outcome,
            importances,
            "" if importances else (importance["warning"] or "the importance could not be computed"),
        ),
    )


def unreported_view(outcome: TaskOutcome, error: str) -> ReportView:
    """The view of an item whose report view could not be built (``error``): its verdict and counts only, no
    builder run, so that the summaries and the run index still list it with its verdict (and why nothing else)."""
    spec = outcome.spec
    opt = spec.optimization
    why = f"not shown: the report could not be built ({error})"
    empty = series.PlotSeries(
        task=spec.task_name, strategy=opt.strategy, objective=opt.objective, direction=opt.direction,
        parameters=tuple(spec.parameters), choices={}, trials=(), best_so_far=(), chosen=None, defaults=None,
        startup_trials=0, screened=frozenset(), front=(), importances=None, importance_note=why, tradeoff=None,
    )  # fmt: skip
    return ReportView(
        **_identity(outcome),
        failures=(),
        best=None,
        slo_met=0,
        slo_total=0,
        lines=Lines(
            objective_label=opt.objective,
            answer=None,
            versus_defaults=None,
            pareto=None,
            pareto_brief=None,
            screening="",
            cost=f"cost: {why}",
            serving_cost="",
            baseline=why,
        ),
        improvements=(),
        pareto=None,
        results={},
        trials_csv="",
        page={},
        environment={},
        deploy_files={},
        deploy_folder=explain.DEPLOY_FOLDER,
        series=empty,
        unreported=error,
    )
