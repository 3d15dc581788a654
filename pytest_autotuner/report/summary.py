"""The GitHub Actions job summary: verdicts, best configurations and where the report is, from the report views."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_autotuner.report.view import ReportView

__all__ = ["append_step_summary", "github_step_summary"]

logger = logging.getLogger(__name__)


def _cell(text: str) -> str:
    """Markdown table cell: pipes would split the cell, angle brackets would become HTML."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("\n", " ")


def github_step_summary(entries: list[tuple[ReportView, Path | None]], report_dir: Path) -> str:
    """Markdown for ``$GITHUB_STEP_SUMMARY``: each item's verdict as its report view has it."""
    ok = [view.passed for view, _page in entries]
    lines = [
        f"## Autotune: {'PASS' if all(ok) else 'FAIL'} ({sum(ok)}/{len(entries)} specs)",
        "",
        "| | spec | objective | best config | trials | baseline | report |",
        "|---|---|---|---|---|---|---|",
    ]
    for view, page in entries:
        best = view.best
        value = best.versus_text if best else "n/a"
        if view.lines.pareto_brief:
            value += f"; {view.lines.pareto_brief}"
        slo = f" ({view.slo_met}/{view.slo_total} SLO checks)" if view.slo_total else ""
        cells = [
            (":white_check_mark: " if view.passed else ":x: ") + view.verdict.status,
            _cell(view.task) + slo,
            _cell(f"{view.lines.objective_label}: {value}"),
            _cell(f"`{best.params_text}`" if best else "none measured"),
            "check (no search)" if view.is_check else _cell(f"{view.counts.text}; {view.lines.cost}"),
            _cell(view.lines.baseline),
            f"`{_cell(str(page))}`" if page else "none",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for view, _page in entries:
        if not view.passed:
            lines += ["", f"**{_cell(view.task)}**: {_cell(view.verdict.headline)}"]
    lines += ["", f"Reports: `{_cell(str(Path(report_dir) / 'index.html'))}` (also in the job's artifacts)", ""]
    return "\n".join(lines)


def append_step_summary(entries: list[tuple[ReportView, Path | None]], report_dir: Path) -> None:
    """Append the summary to the file named by ``GITHUB_STEP_SUMMARY``; nothing outside GitHub Actions."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(github_step_summary(entries, report_dir) + "\n")
    logger.debug("job summary appended to %s", target)
