"""The terminal's text of a tuning item: one progress line per trial while it runs, and its summary at the end
(from the report view, like every other output).

User text (task names, flags, server messages, cell labels) is made safe for a terminal here: every line goes
through ``text.safe`` (control characters escaped, long values cut).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_autotuner.core.measure.formatting import describe_params, format_objective
from pytest_autotuner.core.measure.trial import FailureClass
from pytest_autotuner.report.text import per_gpu_suffix, runs_text, safe

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pytest_autotuner.core.measure.trial import ParamValue
    from pytest_autotuner.core.outcome.records import TrialEvent
    from pytest_autotuner.report.view import ReportView

__all__ = ["progress_line", "summary_lines"]


def _params(params: Mapping[str, ParamValue]) -> str:
    return safe(describe_params(params), 240)


def progress_line(event: TrialEvent, objective: str, *, per_gpu: bool = False) -> str:
    """One line per trial: trial number, position, params, result, time; a new best is marked."""
    score = event.score
    if score.failure is FailureClass.PRUNED:
        result = f"PRUNED ({safe(score.failure_message.splitlines()[0], 160)})" if score.failure_message else "PRUNED"
    elif score.failure is not None:
        result = f"FAILED {score.failure.value}"
        if score.failure_message:
            result += f" ({safe(score.failure_message.splitlines()[0], 100)})"
    elif score.objectives:  # several objectives: each of them
        result = " ".join(
            f"{name}={format_objective(value, name)}{per_gpu_suffix(name, per_gpu)}"
            for name, value in score.objectives.items()
        )
        violated = [c for c in score.slo_checks if not c.passed]
        result += f" SLO miss x{len(violated)}" if violated else (" SLO ok" if score.slo_checks else "")
    else:
        result = f"{objective}={format_objective(score.objective, objective)}" + per_gpu_suffix(objective, per_gpu)
        violated = [c for c in score.slo_checks if not c.passed]
        result += f" SLO miss x{len(violated)}" if violated else (" SLO ok" if score.slo_checks else "")
    if event.devices:
        result += f" on gpu {safe(','.join(map(str, event.devices)), 40)}"
    width = len(str(event.total))
    # a negative number is no trial of the study: check mode's runs of the baseline's configuration
    number = f" #{event.number}" if event.number is not None and event.number >= 0 else ""
    if event.phase == "search":
        head = f"trial{number} [{event.index:>{width}}/{event.total}]"
    else:
        head = f"confirm{number} [{event.index:>{width}}/{event.total}]"
    mark = "  <- new best" if event.new_best else ""
    if event.repeat_of is not None:  # a new best measured again (optimization.remeasure_best)
        head += f" repeat of #{event.repeat_of}"
        if event.repeat_mean is not None:
            mean = format_objective(event.repeat_mean, objective) + per_gpu_suffix(objective, per_gpu)
            mark = f"  mean of {runs_text(event.repeat_runs)} {mean}" + (
                "" if event.still_best else ", no longer the best"
            )
    return f"  {head} {_params(event.params)} -> {result} [{event.duration:.1f}s]{mark}"


def summary_lines(view: ReportView, report_path: str | None) -> list[str]:
    """The item's lines in the terminal summary."""
    verdict = view.verdict
    best = view.best
    lines_ = view.lines
    if view.is_check:
        runs = runs_text(best.runs) if best else "no run"
        what = f"check: {runs} of the baseline's configuration, no search"
    else:
        what = f"{view.counts.total} trials"
    lines = [f"{safe(view.task, 120)}: {verdict.status}  ({what}, {view.duration:.0f}s)"]
    if best is not None and view.is_check:
        lines.append(
            f"  checked: {safe(best.params_text, 240)} (the baseline's best configuration; not a tuning result)"
        )
    elif best is not None:
        lines.append(f"  best: {safe(best.params_text, 240)} ({safe(best.found, 300)})")
        if lines_.pareto:
            lines.append(f"  {lines_.pareto}")
    if best is not None:
        lines.append(
            f"  {lines_.objective_label}: {best.objective_text} (confirmed, {runs_text(best.runs)})" + best.also
        )
        if lines_.answer:
            lines.append(f"  {lines_.answer}")
        if lines_.versus_defaults:
            lines.append(f"  {lines_.versus_defaults}")
        if view.slo_total:
            lines.append(f"  SLO checks: {view.slo_met}/{view.slo_total} met")
    if view.failures:
        lines.append("  failed trials: " + ", ".join(f"{k} x{v}" for k, v in view.failures))
    if lines_.screening:
        lines.append(f"  {lines_.screening}")
    lines.append(f"  {lines_.cost}")
    if lines_.serving_cost:
        lines.append(f"  {lines_.serving_cost}")
    lines.append(f"  baseline: {lines_.baseline}")
    for change in view.improvements:
        lines.append(f"    improved: {change}")
    for note in verdict.notes:
        lines.append(f"  note: {safe(note)}")
    if view.stopped_early:
        lines.append(f"  stopped early: {view.stopped_early}")
    if not verdict.passed:
        lines.append(f"  verdict: {safe(verdict.headline, 600)}")
    if report_path:
        lines.append(f"  report: {report_path}")
    return [safe(line, 2000) for line in lines]
