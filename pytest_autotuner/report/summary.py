"""The GitHub Actions job summary: verdicts, best configurations and where the report is."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_autotuner.core.measure.formatting import describe_params, format_gain, format_objective, format_p
from pytest_autotuner.report.text import answer_line, baseline_text, cost_line, objective_label

if TYPE_CHECKING:
    from pytest_autotuner.core.outcome.outcome import TaskOutcome

__all__ = ["append_step_summary", "github_step_summary"]

logger = logging.getLogger(__name__)


def _cell(text: str) -> str:
    """Markdown table cell: pipes would split the cell, angle brackets would become HTML."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("\n", " ")


def _trials_cell(outcome: TaskOutcome) -> str:
    return f"{outcome.counts.text}; {cost_line(outcome)}"


def github_step_summary(entries: list[tuple[TaskOutcome, Path | None]], report_dir: Path) -> str:
    """Markdown for ``$GITHUB_STEP_SUMMARY``: each item's verdict as the outcome has it."""
    ok = [r.verdict.passed for r, _page in entries]
    lines = [
        f"## Autotune: {'PASS' if all(ok) else 'FAIL'} ({sum(ok)}/{len(entries)} specs)",
        "",
        "| | spec | objective | best config | trials | baseline | report |",
        "|---|---|---|---|---|---|---|",
    ]
    for (outcome, page), passed in zip(entries, ok, strict=True):
        objective = outcome.spec.optimization.objective
        best = outcome.best
        value = format_objective(best.score.objective, objective) if best else "n/a"
        versus = outcome.defaults
        answer = answer_line(outcome)
        if answer:
            value = answer
        elif versus is not None and versus.defaults_chosen:
            value += " (SGLang defaults: tuning found nothing significantly better)"
        elif versus is not None and versus.gain is not None:
            value += f" ({format_gain(versus.gain)} than SGLang defaults, p = {format_p(versus.p_value)})"
        if outcome.pareto is not None:
            value += f"; Pareto front of {len(outcome.pareto.front)}, select: {outcome.pareto.describe_rule()}"
        params = f"`{describe_params(best.params)}`" if best else "none measured"
        checks = outcome.slo_checks
        slo = f" ({sum(c.passed for c in checks)}/{len(checks)} SLO checks)" if checks else ""
        cells = [
            (":white_check_mark: " if passed else ":x: ") + outcome.verdict.status,
            _cell(outcome.spec.task_name) + slo,
            _cell(f"{objective_label(outcome)}: {value}"),
            _cell(params),
            "check (no search)" if outcome.is_check else _trials_cell(outcome),
            _cell(baseline_text(outcome)),
            f"`{_cell(str(page))}`" if page else "none",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for (outcome, _page), passed in zip(entries, ok, strict=True):
        if not passed:
            lines += ["", f"**{_cell(outcome.spec.task_name)}**: {_cell(outcome.verdict.headline)}"]
    lines += ["", f"Reports: `{_cell(str(Path(report_dir) / 'index.html'))}` (also in the job's artifacts)", ""]
    return "\n".join(lines)


def append_step_summary(entries: list[tuple[TaskOutcome, Path | None]], report_dir: Path) -> None:
    """Append the summary to the file named by ``GITHUB_STEP_SUMMARY``; nothing outside GitHub Actions."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(github_step_summary(entries, report_dir) + "\n")
    logger.debug("job summary appended to %s", target)
