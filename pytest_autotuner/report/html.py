"""Write a session's report folder (index.html, trials.csv, results.json) and the run's index page.

Why one module of about 440 lines: the page's and the run index's template contexts (the markup is in templates/);
the frozen report view of issue 30 would leave only rendering here.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.measure.formatting import (
    describe_params,
    format_gain,
    format_objective,
    format_p,
    format_seconds,
)
from pytest_autotuner.files import write_atomically
from pytest_autotuner.report.data import environment, pareto_block, results_summary, trial_status, trials_frame
from pytest_autotuner.report.text import (
    answer_line,
    baseline_text,
    cost_line,
    defaults_line,
    objective_label,
    server_choices,
)

if TYPE_CHECKING:
    import jinja2

    from pytest_autotuner.core.outcome.outcome import TaskOutcome
    from pytest_autotuner.core.outcome.trends import HistoryEntry

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


def _number(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def _censored_text(count: int, wait: tuple[float, float] | None) -> str:
    """Requests still running when a cell ended and the least they had waited (their latency's lower bound)."""
    if not count:
        return "0"
    return f"{count} (waited {format_seconds(wait[0])}-{format_seconds(wait[1])})" if wait else str(count)


def _best_context(outcome: TaskOutcome) -> dict[str, Any] | None:
    best = outcome.best
    if best is None:
        return None
    versus = outcome.defaults
    gain = versus.gain if versus is not None and not versus.defaults_chosen else None
    cells = [
        {
            "label": cell.label,
            "completed": cell.completed,
            "requests": len(cell.records),
            "incomplete": cell.incomplete,
            "censored": _censored_text(cell.censored, cell.censored_wait),
            "e2e_mean": format_seconds(cell.summary("e2e").mean),
            "e2e_p99": format_seconds(cell.summary("e2e").p99),
            "ttft_mean": format_seconds(cell.summary("ttft").mean),
            "tpot_mean": format_seconds(cell.summary("tpot").mean),
            "throughput": _number(cell.output_throughput),
            "error_rate": f"{cell.error_rate:.1%}",
            "cache_hit_rate": "n/a" if math.isnan(hit := cell.cache_hit_rate) else f"{hit:.1%}",
        }
        for cell in best.merged.cells
    ]
    return {
        "params": {**best.params, **(server_choices(outcome) if versus and versus.defaults_chosen else {})},
        "objective": format_objective(best.score.objective, outcome.spec.optimization.objective),
        "source_trial": best.source_trial,
        "runs": len(best.runs),
        "failures": best.failures,
        "cells": cells,
        "answer": answer_line(outcome),
        "objective_label": objective_label(outcome),
        "ladders": _ladders(outcome),
        "versus_defaults": defaults_line(outcome),
        "gain_over_defaults": None if gain is None else format_gain(gain),
        "gain_p": ""
        if versus is None
        else f"p = {format_p(versus.p_value)}" + ("" if versus.significant else ", not significant"),
    }


def _ladders(outcome: TaskOutcome) -> list[dict[str, Any]]:
    """maximize_goodput: each confirmation run's load steps in the order run, and where it broke."""
    best = outcome.best
    if best is None:
        return []
    out = []
    for i, run in enumerate(best.runs, 1):
        for ladder in run.capacities:
            unit = "req/s" if ladder.load == "rate" else "concurrent"
            out.append(
                {
                    "run": i,
                    "capacity": f"{ladder.capacity:.3g} {unit}" + (" (the search's max)" if ladder.at_ceiling else ""),
                    "steps": [
                        {
                            "index": n,
                            "load": f"{step.load:.3g}",
                            "holds": step.holds,
                            "chosen": step.holds and step.load == ladder.capacity,
                            "throughput": _number(step.throughput, 2),
                            "goodput": _number(step.goodput, 2),
                            "reason": step.reason,
                            "verdict": step.verdict,
                            "requests": step.requests or "",
                            "repeats": step.repeats,
                            "intervals": [i.describe() for i in step.intervals],
                            "undecided": not step.decided,
                        }
                        for n, step in enumerate(ladder.steps, 1)
                    ],
                }
            )
    return out


def _slo_rows(outcome: TaskOutcome) -> list[dict[str, Any]]:
    return [
        {
            "cell": c.cell,
            "name": c.name,
            "value": format_seconds(c.value)
            + (f" ({c.censored} unfinished counted at their wait)" if c.censored else ""),
            "threshold": format_seconds(c.threshold),
            "margin": format_seconds(c.margin),
            "over": f"{c.ratio:+.1%}" if math.isfinite(c.ratio) else "no samples",
            "passed": c.passed,
            "hard": c.hard_fail,
        }
        for c in outcome.slo_checks
    ]


def _trial_rows(outcome: TaskOutcome) -> list[dict[str, Any]]:
    objective = outcome.spec.optimization.objective
    source = outcome.best.source_trial if outcome.best else None
    return [
        {
            "number": t.number,
            "params": [t.params.get(n, "server" if n in t.server_chose else "") for n in outcome.spec.parameters],
            "objective": format_objective(t.objective, objective),
            "feasible": t.feasible,
            "status": trial_status(t),
            "failure": t.failure or "",
            "duration": _number(t.duration),
            "best": t.number == source,
            "defaults": t.origin == "sglang_defaults",
            "screen": t.origin == "screen",
            "repeat_of": t.repeat_of,
        }
        for t in sorted(outcome.trials, key=lambda t: t.number)
    ]


_BETTER = {"maximize": "higher", "minimize": "lower"}


def _pareto_context(outcome: TaskOutcome) -> dict[str, Any] | None:
    """The Pareto front's table: one row per configuration on the front, objectives formatted."""
    block = pareto_block(outcome)
    if block is None:
        return None
    names = [o["name"] for o in block["objectives"]]
    rows = [
        {
            "trial": point["trial"],
            "params": describe_params(point["params"]),
            "figures": [format_objective(point["objectives"].get(name), name) for name in names],
            "eligible": point["eligible"],
            "chosen": point["chosen"],
            "defaults": point["origin"] == "sglang_defaults",
        }
        for point in block["front"]
    ]
    return {
        "objectives": [f"{o['name']} ({_BETTER[o['direction']]} is better)" for o in block["objectives"]],
        "rule": block["select"]["text"],
        "compared": block["compared"],
        "considered": block["considered"],
        "dominated": len(block["dominated_trials"]),
        "rows": rows,
    }


def _failure_groups(outcome: TaskOutcome) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in sorted(outcome.trials, key=lambda t: t.number):
        if t.failure:
            groups[t.failure].append(
                {
                    "number": t.number,
                    "params": describe_params(t.params),
                    "message": t.failure_message,
                    "log_tail": t.log_tail,
                }
            )
    return [{"name": name, "trials": trials} for name, trials in sorted(groups.items(), key=lambda g: -len(g[1]))]


def _baseline_class(outcome: TaskOutcome) -> str:
    baseline = outcome.baseline
    if baseline is not None and baseline.regressed and outcome.new_baseline is None:
        return "bad"
    if outcome.new_baseline is not None or (baseline is not None and baseline.compared):
        return "ok"
    return "warn"


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
    outcome: TaskOutcome, history: Sequence[HistoryEntry] | None = None, history_skipped: Sequence[str] = ()
) -> str:
    """The HTML page of one tuning item (self-contained: inline CSS, plots as data: URIs); with ``history``, its
    trends over runs."""
    from pytest_autotuner.report.plots import render_plots

    spec = outcome.spec
    return (
        _jinja()
        .get_template("report.html.j2")
        .render(
            spec=spec,
            mode=outcome.mode,
            verdict=outcome.verdict,
            history=None if history is None else history_context(history, history_skipped),
            has_best=outcome.best is not None,
            slo_count=len(outcome.slo_checks),
            slo_passed=sum(c.passed for c in outcome.slo_checks),
            baseline_text=baseline_text(outcome),
            baseline_class=_baseline_class(outcome),
            best=_best_context(outcome),
            slo_rows=_slo_rows(outcome),
            plots=render_plots(outcome),
            param_names=list(spec.parameters),
            trial_rows=_trial_rows(outcome),
            pareto=_pareto_context(outcome),
            counts=outcome.counts,
            cost_text=cost_line(outcome),
            explained=_explained_context(outcome),
            failure_groups=_failure_groups(outcome),
            environment=environment(outcome),
            stopped_early=outcome.stopped_early,
            duration=outcome.duration,
        )
    )


def write_report(
    outcome: TaskOutcome,
    report_dir: Path,
    history: Sequence[HistoryEntry] | None = None,
    history_skipped: Sequence[str] = (),
) -> Path:
    """Write ``report_dir/<task>/results.json``, ``trials.csv`` and ``index.html`` (each atomically, the
    verdict-bearing results.json first); return the page's path. Other files in the folder (the study journal)
    are left alone. ``history``: the spec's runs (``--autotune-history``), drawn as trends.
    """
    folder = Path(report_dir) / outcome.spec.slug
    summary = results_summary(outcome)
    write_atomically(folder / "results.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    write_atomically(folder / "trials.csv", trials_frame(outcome).to_csv(index=False))
    _write_deploy(outcome, folder)
    page = folder / "index.html"
    write_atomically(page, render_report(outcome, history, history_skipped))
    logger.info("report of %s written to %s", outcome.spec.task_name, page)
    return page


def _write_deploy(outcome: TaskOutcome, folder: Path) -> None:
    """The confirmed best's deploy files in ``folder/deploy`` (results.json and the page link them)."""
    from pytest_autotuner.deploy import deploy_files, write_deploy_folder
    from pytest_autotuner.report.explain import DEPLOY_FOLDER, deploy_params

    params = deploy_params(outcome)
    if params is not None:
        write_deploy_folder(folder / DEPLOY_FOLDER, deploy_files(outcome.spec, params))


def _explained_context(outcome: TaskOutcome) -> dict[str, Any]:
    """The page's deploy links, time breakdown and serving cost (``explain.py``)."""
    from pytest_autotuner.report.explain import cost_block, deploy_block, serving_cost_line, time_breakdown

    breakdown = time_breakdown(outcome)
    rows = []
    for row in breakdown["cells"] if breakdown else []:
        for side in ("best", "defaults"):
            cell = row.get(side)
            if cell is None:
                continue
            share = cell["waiting_and_prefill_share"]
            rows.append(
                {
                    "cell": row["cell"],
                    "side": side,
                    "e2e": format_seconds(cell["mean_e2e"]),
                    "before_first": format_seconds(cell["mean_waiting_and_prefill"])
                    if cell["mean_queueing"] is None
                    else f"{format_seconds(cell['mean_queueing'])} queueing + "
                    f"{format_seconds(cell['mean_prefill'])} prefill",
                    "decode": format_seconds(cell["mean_decode"]),
                    "share": "n/a" if share is None else f"{share:.0%}",
                    "in_flight": _number(cell["mean_in_flight"]),
                }
            )
    return {
        "deploy": deploy_block(outcome),
        "breakdown": None if breakdown is None else {**breakdown, "rows": rows},
        "serving_cost": serving_cost_line(outcome) if cost_block(outcome) is not None else "",
    }


def _comparison_groups(results: list[TaskOutcome]) -> list[list[TaskOutcome]]:
    """Sessions over the same parameters and objective, when they used more than one strategy."""
    groups: dict[tuple[Any, ...], list[TaskOutcome]] = defaultdict(list)
    for outcome in results:
        opt = outcome.spec.optimization
        groups[(tuple(sorted(outcome.spec.parameters)), opt.objective)].append(outcome)
    return [g for g in groups.values() if len({r.spec.optimization.strategy for r in g}) > 1]


def write_index(
    entries: list[tuple[TaskOutcome, Path | None]],
    report_dir: Path,
    histories: Mapping[str, Sequence[HistoryEntry]] | None = None,
) -> Path:
    """Write ``report_dir/index.html``: every spec of the run with its verdict and a link to its page; with
    ``histories`` (by spec slug), each spec's trends over runs."""
    from pytest_autotuner.report.plots import strategy_comparison_plot

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for outcome, page in entries:
        objective = outcome.spec.optimization.objective
        link = Path(os.path.relpath(page, report_dir)).as_posix() if page is not None else None
        rows.append(
            {
                "task": outcome.spec.task_name,
                "ok": outcome.verdict.passed,
                "status": outcome.verdict.status,
                "headline": outcome.verdict.headline,
                "baseline": baseline_text(outcome),
                "strategy": "check" if outcome.is_check else outcome.spec.optimization.strategy,
                "objective": f"{objective}: {format_objective(outcome.best.score.objective, objective)}"
                if outcome.best
                else "no configuration measured",
                "params": describe_params(outcome.best.params) if outcome.best else "",
                "counts": outcome.counts,
                "link": link,
            }
        )
    comparisons = [
        {"tasks": ", ".join(r.spec.task_name for r in group), "uri": strategy_comparison_plot(group)}
        for group in _comparison_groups([outcome for outcome, _page in entries if not outcome.is_check])
    ]
    trend_sections = [
        {"task": outcome.spec.task_name, **history_context(histories[outcome.spec.slug])}
        for outcome, _page in entries
        if histories and histories.get(outcome.spec.slug)
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
