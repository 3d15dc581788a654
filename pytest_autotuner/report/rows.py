"""The rows and blocks of a tuning item's page and of its line in the run index, formatted for display.

A builder: it reads a ``TaskOutcome`` once, for the report view (``view.py``); ``html.py`` renders the rows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.measure.formatting import (
    describe_params,
    format_gain,
    format_objective,
    format_seconds,
)
from pytest_autotuner.report.data import trial_status
from pytest_autotuner.report.text import significance

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pytest_autotuner.core.outcome.outcome import TaskOutcome
    from pytest_autotuner.report.view import BestFacts, Lines

__all__ = ["page_rows"]


def _number(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def _censored_text(count: int, wait: tuple[float, float] | None) -> str:
    """Requests still running when a cell ended and the least they had waited (their latency's lower bound)."""
    if not count:
        return "0"
    return f"{count} (waited {format_seconds(wait[0])}-{format_seconds(wait[1])})" if wait else str(count)


def _best_context(outcome: TaskOutcome, lines: Lines, facts: BestFacts | None) -> dict[str, Any] | None:
    best = outcome.best
    if best is None or facts is None:
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
        "params": {**facts.params, **facts.left_to_server},
        "objective": facts.objective_text,
        "source_trial": best.source_trial,
        "runs": len(best.runs),
        "failures": best.failures,
        "cells": cells,
        "answer": lines.answer,
        "objective_label": lines.objective_label,
        "ladders": _ladders(outcome),
        "versus_defaults": lines.versus_defaults,
        "gain_over_defaults": None if gain is None else format_gain(gain),
        "gain_p": "" if versus is None else significance(versus),
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


def _pareto_context(block: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The Pareto front's table: one row per configuration on the front, objectives formatted."""
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


def _explained_context(explained: Mapping[str, Any], serving_cost: str) -> dict[str, Any]:
    """The page's deploy links, time breakdown and serving cost (``explain.py``'s blocks)."""
    breakdown = explained["time_breakdown"]
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
        "deploy": explained["deploy"],
        "breakdown": None if breakdown is None else {**breakdown, "rows": rows},
        "serving_cost": serving_cost if explained["serving_cost"] is not None else "",
    }


def page_rows(
    outcome: TaskOutcome,
    lines: Lines,
    explained: Mapping[str, Any],
    pareto: Mapping[str, Any] | None,
    facts: BestFacts | None,
) -> dict[str, Any]:
    """Every row and block of the page that is not a line of text: the best's cells and ladders, the SLO table,
    the trials table, the Pareto table, the failures by class, the answer's explanation, the baseline's class."""
    return {
        "best": _best_context(outcome, lines, facts),
        "slo_rows": _slo_rows(outcome),
        "trial_rows": _trial_rows(outcome),
        "pareto": _pareto_context(pareto),
        "failure_groups": _failure_groups(outcome),
        "explained": _explained_context(explained, lines.serving_cost),
        "baseline_class": _baseline_class(outcome),
    }
