"""Write a session's report folder (index.html, trials.csv, results.json, deploy/) and the run's index page, from
report views (``view.py``): this module renders and writes, it computes nothing of its own.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.measure.formatting import format_objective, format_seconds
from pytest_autotuner.files import write_atomically

if TYPE_CHECKING:
    import jinja2

    from pytest_autotuner.core.outcome.trends import HistoryEntry
    from pytest_autotuner.report.view import ReportView

__all__ = ["render_report", "write_index", "write_report"]

logger = logging.getLogger(__name__)

_TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def _jinja() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,  # task names, parameter values and server logs are untrusted text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = format_seconds
    return env


LAST_RUNS = 10  # rows of the history's table of last runs


def history_context(entries: Sequence[HistoryEntry], skipped: Sequence[str] = ()) -> dict[str, Any]:
    """The history section of a page: the trend plot and the last runs, newest first (``entries`` oldest first)."""
    from pytest_autotuner.core.outcome.trends import fingerprint_changes, trends
    from pytest_autotuner.report.plots import trend_plot

    ordered = sorted(entries, key=lambda e: e.date)
    changed = set(fingerprint_changes(ordered))
    rows = [
        {
            "run": position,
            "date": entry.date.replace("T", " ")[:19],
            "commit": entry.commit[:10],
            "branch": entry.branch,
            "mode": entry.mode,
            "status": entry.status,
            "ok": entry.status == "PASS",
            "regressed": entry.regressed,
            "headline": entry.headline,
            "objective": format_objective(entry.objective, entry.objective_name),
            "fingerprint": entry.fingerprint_id,
            "fingerprint_changed": position in changed,
            "sglang_version": entry.sglang_version,
            "gpu": entry.gpu,
        }
        for position, entry in enumerate(ordered, start=1)
    ]
    return {
        "count": len(ordered),
        "plot": trend_plot(trends(ordered), sorted(changed)),
        "rows": rows[::-1][:LAST_RUNS],
        "skipped": list(skipped),
    }


def render_report(
    view: ReportView, history: Sequence[HistoryEntry] | None = None, history_skipped: Sequence[str] = ()
) -> str:
    """The HTML page of one tuning item (self-contained: inline CSS, plots as data: URIs); with ``history``, its
    trends over runs."""
    from pytest_autotuner.report.plots import render_plots

    page = view.page
    return (
        _jinja()
        .get_template("report.html.j2")
        .render(
            view=view,
            mode=view.mode,
            verdict=view.verdict,
            history=None if history is None else history_context(history, history_skipped),
            has_best=view.best is not None,
            slo_count=view.slo_total,
            slo_passed=view.slo_met,
            baseline_text=view.lines.baseline,
            baseline_class=page["baseline_class"],
            best=page["best"],
            slo_rows=page["slo_rows"],
            plots=render_plots(view.series),
            param_names=list(view.parameters),
            trial_rows=page["trial_rows"],
            pareto=page["pareto"],
            counts=view.counts,
            cost_text=view.lines.cost,
            explained=page["explained"],
            failure_groups=page["failure_groups"],
            environment=view.environment,
            stopped_early=view.stopped_early,
            duration=view.duration,
        )
    )


def write_report(
    view: ReportView,
    report_dir: Path,
    history: Sequence[HistoryEntry] | None = None,
    history_skipped: Sequence[str] = (),
) -> Path:
    """Write ``report_dir/<task>/results.json``, ``trials.csv``, the deploy files and ``index.html`` (each
    atomically, the verdict-bearing results.json first); return the page's path. Other files in the folder (the
    study journal) are left alone. ``history``: the spec's runs (``--autotune-history``), drawn as trends.
    """
    from pytest_autotuner.deploy import write_deploy_folder

    folder = Path(report_dir) / view.slug
    write_atomically(folder / "results.json", json.dumps(view.results, indent=2, allow_nan=False) + "\n")
    write_atomically(folder / "trials.csv", view.trials_csv)
    if view.deploy_files:
        write_deploy_folder(folder / view.deploy_folder, view.deploy_files)
    page = folder / "index.html"
    write_atomically(page, render_report(view, history, history_skipped))
    logger.info("report of %s written to %s", view.task, page)
    return page


def _comparison_groups(views: list[ReportView]) -> list[list[ReportView]]:
    """Sessions over the same parameters and objective, when they used more than one strategy."""
    groups: dict[tuple[Any, ...], list[ReportView]] = defaultdict(list)
    for view in views:
        groups[(tuple(sorted(view.parameters)), view.objective)].append(view)
    return [g for g in groups.values() if len({v.strategy for v in g}) > 1]


def write_index(
    entries: list[tuple[ReportView, Path | None]],
    report_dir: Path,
    histories: Mapping[str, Sequence[HistoryEntry]] | None = None,
) -> Path:
    """Write ``report_dir/index.html``: every spec of the run with its verdict and a link to its page; with
    ``histories`` (by spec slug), each spec's trends over runs."""
    from pytest_autotuner.report.plots import strategy_comparison_plot

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for view, page in entries:
        link = Path(os.path.relpath(page, report_dir)).as_posix() if page is not None else None
        rows.append(
            {
                "task": view.task,
                "ok": view.passed,
                "status": view.verdict.status,
                "headline": view.verdict.headline,
                "baseline": view.lines.baseline,
                "strategy": "check" if view.is_check else view.strategy,
                "objective": f"{view.objective}: {view.best.objective_text}"
                if view.best
                else "no configuration measured",
                "params": view.best.params_text if view.best else "",
                "counts": view.counts,
                "link": link,
            }
        )
    comparisons = [
        {"tasks": ", ".join(v.task for v in group), "uri": strategy_comparison_plot([v.series for v in group])}
        for group in _comparison_groups([view for view, _page in entries if not view.is_check])
    ]
    trend_sections = [
        {"task": view.task, **history_context(histories[view.slug])}
        for view, _page in entries
        if histories and histories.get(view.slug)
    ]
    html = (
        _jinja()
        .get_template("index.html.j2")
        .render(
            rows=rows,
            comparisons=comparisons,
            trends=trend_sections,
            passed=all(r["ok"] for r in rows),
            count=len(rows),
        )
    )
    path = report_dir / "index.html"
    write_atomically(path, html)
    return path
