"""The answer explained for results.json, the report and the summary: its deploy files, why it wins (parameter
importance, where a request's time goes) and what it costs (with ``cost.gpu_hour``).

Plain data from a ``TaskOutcome``; the deploy files are written by ``html.write_report``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.search.gpu_pool import gpus_needed
from pytest_autotuner.report.data import MIN_IMPORTANCE_TRIALS, importance_trials, param_importances

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.metrics import CellMetrics
    from pytest_autotuner.core.measure.trial import ParamValue
    from pytest_autotuner.core.outcome.outcome import TaskOutcome
    from pytest_autotuner.core.outcome.records import Confirmation

__all__ = [
    "DEPLOY_FOLDER",
    "cell_breakdown",
    "cost_block",
    "deploy_block",
    "deploy_params",
    "explained",
    "gpu_price",
    "importance_block",
    "measured_cells",
    "serving_cost_line",
    "serving_cost_text",
    "time_breakdown",
    "tradeoff_block",
]

#: The deploy files' folder inside a report folder.
DEPLOY_FOLDER = "deploy"


def measured_cells(confirmation: Confirmation) -> list[CellMetrics]:
    """A confirmation's cells at the loads it was measured at: its fixed cells; for a capacity search without
    them, the ladder steps at the capacity each run found (the load the answer is stated at)."""
    cells = confirmation.merged.cells
    fixed = [c for c in cells if not c.ladder]
    if fixed:
        return fixed
    capacities = {ladder.capacity for run in confirmation.runs for ladder in run.capacities}
    return [c for c in cells if (c.request_rate if c.request_rate else c.concurrency) in capacities]


# -- deploy -------------------------------------------------------------------------------------------------


def deploy_params(outcome: TaskOutcome) -> dict[str, ParamValue] | None:
    """The configuration the deploy files run: the confirmed best's flags; None without a best, or for a vllm
    spec (the files launch SGLang)."""
    if outcome.best is None or outcome.spec.base_runtime != "sglang":
        return None
    return dict(outcome.best.params)


def deploy_block(outcome: TaskOutcome) -> dict[str, Any] | None:
    """results.json's ``deploy``: the files (relative to the report folder), the launch command, and its check
    against the argument table of the spec's SGLang version."""
    from pytest_autotuner.deploy import DEPLOY_FILES, launch_command, launch_problems, spec_sglang_version

    params = deploy_params(outcome)
    if params is None:
        return None
    spec = outcome.spec
    return {
        "folder": DEPLOY_FOLDER,
        "files": {name: f"{DEPLOY_FOLDER}/{name}" for name in DEPLOY_FILES},
        "launch_command": launch_command(spec, params),
        "gpus": gpus_needed(params),
        "sglang_version": spec_sglang_version(spec),
        "flag_problems": launch_problems(spec, params),
    }


# -- why it wins: importance ------------------------------------------------------------------------------------


def importance_block(
    outcome: TaskOutcome, importances: dict[str, float] | None = None, *, computed: bool = False
) -> dict[str, Any]:
    """results.json's ``importance``: fANOVA over the feasible measured trials, the number it rests on, and a
    warning instead of numbers below ``MIN_IMPORTANCE_TRIALS`` (or when no parameter varied)."""
    trials, varied = importance_trials(outcome)
    block: dict[str, Any] = {"method": "fANOVA (optuna)", "trials": len(trials), "min_trials": MIN_IMPORTANCE_TRIALS}
    if len(trials) < MIN_IMPORTANCE_TRIALS or not varied:
        why = (
            f"only {len(trials)} feasible measured trial(s)"
            if len(trials) < MIN_IMPORTANCE_TRIALS
            else "no parameter varied among the feasible measured trials"
        )
        block["importances"] = None
        block["warning"] = (
            f"not enough trials for parameter importance: {why}; fANOVA needs at least {MIN_IMPORTANCE_TRIALS} "
            "feasible measured trials with varied parameters, fewer would chart noise"
        )
        return block
    block["importances"] = importances if importances is not None or computed else param_importances(outcome)
    block["warning"] = None if block["importances"] else "the importance could not be computed"
    return block


# -- why it wins: where a request's time goes -------------------------------------------------------------------


def cell_breakdown(cell: CellMetrics) -> dict[str, Any]:
    """Means over the cell's finished requests. With the server's timings on every one of them (``queue_time``,
    the simulator's) the time before the first token is split into queueing (arrival to admission) and prefill
    (admission to the first token) request by request; with SGLang's queue-time histogram over the cell
    (``server_queue``, from ``--enable-metrics``) by the cell's mean queueing time; otherwise those two stay None
    and only the split at the first token is given (``server_timings``: "per-request", "metrics" or None)."""
    done = [r for r in cell.ok_records if r.e2e is not None and r.ttft is not None]
    e2e = sum(r.e2e or 0.0 for r in done)
    before_first = sum(r.ttft or 0.0 for r in done)
    busy = sum(r.e2e or 0.0 for r in done) + sum(r.waited or 0.0 for r in cell.records if r.incomplete)
    queued: float | None = None
    timings: str | None = None
    if done and all(r.queue_time is not None for r in done):
        queued, timings = sum(min(r.queue_time or 0.0, r.ttft or 0.0) for r in done), "per-request"
    elif done and cell.server_queue is not None and cell.server_queue[1] > 0:
        mean_queue = cell.server_queue[0] / cell.server_queue[1]
        queued, timings = min(mean_queue * len(done), before_first), "metrics"
    prefill = before_first - queued if queued is not None else None

    def mean(total: float | None) -> float | None:
        return total / len(done) if done and total is not None else None

    def share(part: float | None) -> float | None:
        return part / e2e if e2e > 0 and part is not None else None

    return {
        "cell": cell.label,
        "requests": len(done),
        "server_timings": timings,
        "mean_e2e": mean(e2e),
        "mean_queueing": mean(queued),
        "mean_prefill": mean(prefill),
        "mean_waiting_and_prefill": mean(before_first),
        "mean_decode": mean(e2e - before_first),
        "queueing_share": share(queued),
        "prefill_share": share(prefill),
        "waiting_and_prefill_share": share(before_first),
        "decode_share": share(e2e - before_first),
        # Little's law over the cell: the requests the server held at once, on average (queued ones too), and
        # with the server's timings those it ran at once (in prefill or decode, past their queueing)
        "mean_in_flight": busy / cell.duration if cell.duration > 0 else None,
        "mean_running": (e2e - queued) / cell.duration if queued is not None and cell.duration > 0 else None,
    }


def _line(cell: str, best: dict[str, Any], defaults: dict[str, Any]) -> str | None:
    if defaults["waiting_and_prefill_share"] is None or not best["mean_in_flight"] or not defaults["mean_in_flight"]:
        return None
    ratio = best["mean_in_flight"] / defaults["mean_in_flight"]
    held = f"the best holds {ratio:.2g}x as many requests at once"
    if defaults["queueing_share"] is not None and best["queueing_share"] is not None:
        if best["mean_running"] and defaults["mean_running"]:
            held = f"the best runs {best['mean_running'] / defaults['mean_running']:.2g}x as many requests at once"
        return (
            f"at {cell} the defaults queue {defaults['queueing_share']:.0%} of E2E and prefill "
            f"{defaults['prefill_share']:.0%} (the best {best['queueing_share']:.0%} and {best['prefill_share']:.0%}); "
            + held
        )
    return (
        f"at {cell} the defaults spend {defaults['waiting_and_prefill_share']:.0%} of E2E before the first token "
        f"(the best {best['waiting_and_prefill_share']:.0%}); " + held
    )


def time_breakdown(outcome: TaskOutcome) -> dict[str, Any] | None:
    """Where the time of a request goes, for the confirmed best and SGLang's defaults side by side, per cell:
    queueing (arrival to admission to a prefill batch), prefill (to the first token) and decode (to the end),
    from the server's per-request timings where it gives them (the simulator always); for a server that does
    not, split at the first token only (queueing and prefill together), from the client's timings. Also how
    many requests the server held at once."""
    best = outcome.best
    if best is None:
        return None
    versus = outcome.defaults
    defaults = versus.confirmation if versus is not None and not versus.defaults_chosen else None
    rows: dict[str, dict[str, Any]] = {}
    for side, confirmation in (("best", best), ("defaults", defaults)):
        for cell in measured_cells(confirmation) if confirmation is not None else []:
            rows.setdefault(cell.label, {"cell": cell.label})[side] = cell_breakdown(cell)
    lines = []
    for row in rows.values():
        b, d = row.get("best"), row.get("defaults")
        line = _line(row["cell"], b, d) if b and d else None
        if line:
            lines.append(line)
    sides = [c for row in rows.values() for c in (row.get("best"), row.get("defaults")) if c and c["requests"]]
    kinds = {c["server_timings"] for c in sides}
    if sides and kinds == {"per-request"}:
        source = (
            "the server's per-request timings: queueing from arrival to admission to a prefill batch, prefill from "
            "admission to the first token, decode from the first token to the end"
        )
    elif sides and None not in kinds:
        source = (
            "SGLang's metrics (--enable-metrics): each cell's mean queueing time from the server's queue-time "
            "histogram (sglang:queue_time_seconds, read before and after the cell), prefill as the rest of the time "
            "to first token, decode from the first token to the end (client timings)"
        )
    else:
        why = (
            "the simulator did not report when its requests were admitted"
            if outcome.runtime == "sim"
            else "the server has no queue-time metrics: launch it with --enable-metrics (a spec's extra_args) "
            "for the split"
        )
        source = (
            "client timings per request: time to first token (queueing and prefill together) and after it "
            f"(decode); queueing and prefill are not told apart: {why}"
        )
    return {"source": source, "cells": list(rows.values()), "lines": lines}


# -- what it costs ---------------------------------------------------------------------------------------------


def _gpu_name(outcome: TaskOutcome) -> str:
    if outcome.runtime == "sim":
        return str(outcome.server_info.get("sim_gpu") or outcome.spec.simulator.gpu)
    return str(outcome.server_info.get("gpu_name", ""))


def gpu_price(outcome: TaskOutcome) -> tuple[float | None, str]:
    """(price of one GPU-hour, what it is) from ``cost.gpu_hour``: the number, or the table's entry whose name
    the GPU's name contains (case-insensitive); (None, why) when no price applies."""
    cost = outcome.spec.cost
    if cost is None:
        return None, "no cost.gpu_hour in the spec"
    if not isinstance(cost.gpu_hour, dict):
        return float(cost.gpu_hour), "per GPU-hour"
    gpu = _gpu_name(outcome)
    key = gpu.lower().replace(" ", "")
    matches = [(n, p) for n, p in cost.gpu_hour.items() if n.lower().replace(" ", "") in key] if key else []
    if not matches:
        names = ", ".join(cost.gpu_hour)
        return None, f"no price for the GPU {gpu or '(unknown)'!r} in cost.gpu_hour (priced: {names})"
    name, price = max(matches, key=lambda m: len(m[0]))  # the most specific name (h100-sxm over h100)
    return float(price), f"per {name} GPU-hour"


def _serving_cost(cell: CellMetrics, gpus: int, price: float) -> dict[str, Any]:
    per_second = gpus * price / 3600
    tokens, requests = cell.output_throughput, cell.request_throughput
    return {
        "cell": cell.label,
        "gpus": gpus,
        "output_tokens_per_s": tokens,
        "requests_per_s": requests,
        "per_million_output_tokens": per_second / tokens * 1e6 if tokens > 0 else None,
        "per_1000_requests": per_second / requests * 1e3 if requests > 0 else None,
    }


def cost_block(outcome: TaskOutcome) -> dict[str, Any] | None:
    """results.json's ``serving_cost``: with ``cost.gpu_hour``, the price and its source, the cost per million
    output tokens and per 1,000 requests at each measured load for the best and the defaults, and the tuning
    run's own cost; None without a price in the spec."""
    cost = outcome.spec.cost
    if cost is None:
        return None
    price, what = gpu_price(outcome)
    block: dict[str, Any] = {"currency": cost.currency, "gpu_hour": price, "price": what, "source": cost.source}
    if price is None:
        return {**block, "note": what}
    sides: dict[str, list[dict[str, Any]]] = {}
    best = outcome.best
    if best is not None:
        sides["best"] = [_serving_cost(c, gpus_needed(best.params), price) for c in measured_cells(best)]
    versus = outcome.defaults
    if versus is not None and versus.confirmation is not None and not versus.defaults_chosen:
        gpus = gpus_needed(versus.trial.params)
        sides["defaults"] = [_serving_cost(c, gpus, price) for c in measured_cells(versus.confirmation)]
    hours = outcome.cost.gpu_seconds / 3600
    extra = {"per_dollar": _per_dollar(outcome, price)} if outcome.spec.optimization.per_dollar else {}
    return {**block, **sides, **extra, "tuning_run": {"gpu_hours": hours, "cost": hours * price}}


def _per_dollar(outcome: TaskOutcome, price: float) -> dict[str, Any] | None:
    """``optimization.per_dollar``: the best's per-GPU objective at the price of a GPU-hour (a rate becomes an
    amount per currency unit: tok/s per GPU -> output tokens per dollar)."""
    from pytest_autotuner.core.measure.scoring import OBJECTIVE_METRICS

    best = outcome.best
    if best is None or best.score.objective is None or not math.isfinite(best.score.objective):
        return None
    spec = outcome.spec
    name = spec.optimization.objective
    unit = OBJECTIVE_METRICS[name][1]
    capacity = spec.benchmark.capacity
    currency = spec.cost.currency if spec.cost else "USD"
    value = float(best.score.objective)
    if capacity is not None and capacity.load == "concurrency":
        return {"objective": name, "value": value / price, "unit": f"concurrent requests per {currency}/hour"}
    what = {"tok/s": "output tokens", "req/s": "requests"}.get(unit)
    if what is None:
        return {"objective": name, "value": value / price, "unit": f"{unit} per GPU per {currency}/hour"}
    return {"objective": name, "value": value * 3600 / price, "unit": f"{what} per {currency}"}


def _money(value: float | None, currency: str) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    symbol = "$" if currency == "USD" else f"{currency} "
    return f"{symbol}{value:,.2f}" if value >= 0.1 else f"{symbol}{value:.3g}"


def _by_load(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Cost rows by the load they were measured at: a fixed cell alone; the ladder steps of every confirmation run
    (each at the load its run found; runs that found the same load share a step) together, as "<scenario> (at the
    capacity found)" or "<scenario> (at the N capacities the runs found)"."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        label = str(row["cell"])
        if label.endswith("(ladder)"):
            label = label.split(" rate=")[0].split(" c=")[0] + " (at {capacities})"
        groups.setdefault(label, []).append(row)
    return [
        (
            label.replace(
                "{capacities}",
                "the capacity found" if len(group) == 1 else f"the {len(group)} capacities the runs found",
            ),
            group,
        )
        for label, group in groups.items()
    ]


def _money_range(values: list[float | None], currency: str) -> str:
    known = sorted(v for v in values if v is not None and math.isfinite(v))
    if not known:
        return "n/a"
    low, high = _money(known[0], currency), _money(known[-1], currency)
    return low if low == high else f"{low}-{high}"


def serving_cost_line(outcome: TaskOutcome) -> str:
    """'serving cost at $2.49 per GPU-hour (source): the best $0.41 per 1M output tokens, ...; this tuning run
    0.2 GPU-hours, $0.50'; "" without ``cost.gpu_hour``."""
    return serving_cost_text(cost_block(outcome))


def serving_cost_text(block: Mapping[str, Any] | None) -> str:
    """``serving_cost_line`` from the ``cost_block`` already computed."""
    if block is None:
        return ""
    currency = block["currency"]
    if block["gpu_hour"] is None:
        return f"serving cost: {block['note']}"
    head = f"serving cost at {_money(block['gpu_hour'], currency)} {block['price']} ({block['source']})"
    parts = []
    for side in ("best", "defaults"):
        who = "the best" if side == "best" else "defaults"
        for label, rows in _by_load(block.get(side, [])):
            tokens = _money_range([r["per_million_output_tokens"] for r in rows], currency)
            requests = _money_range([r["per_1000_requests"] for r in rows], currency)
            parts.append(f"{who} {tokens} per 1M output tokens, {requests} per 1,000 requests at {label}")
    per_dollar = block.get("per_dollar")
    if per_dollar:
        value = per_dollar["value"]
        shown = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
        parts.insert(0, f"{per_dollar['objective']} per dollar: {shown} {per_dollar['unit']}")
    run = block["tuning_run"]
    tail = f"this tuning run {run['gpu_hours']:.2g} GPU-hours, {_money(run['cost'], currency)}"
    return f"{head}: " + "; ".join([*parts, tail])


def explained(outcome: TaskOutcome, importances: dict[str, float] | None) -> dict[str, Any]:
    """The blocks results.json carries for the answer: deploy, importance (``importances``: computed once by the
    view; None when they could not be), time_breakdown, serving_cost."""
    return {
        "deploy": deploy_block(outcome),
        "importance": importance_block(outcome, importances, computed=True),
        "time_breakdown": time_breakdown(outcome),
        "serving_cost": cost_block(outcome),
        "tradeoff": tradeoff_block(outcome),
    }


def tradeoff_block(outcome: TaskOutcome) -> dict[str, Any] | None:
    """results.json's ``tradeoff``: tokens/s per user against tokens/s per GPU for every measured configuration
    and load, and the frontier; None with one load only."""
    from dataclasses import asdict

    from pytest_autotuner.report.tradeoff import has_several_loads, tradeoff_frontier, tradeoff_points

    if not has_several_loads(outcome):
        return None
    points = tradeoff_points(outcome)
    return {"points": [asdict(p) for p in points], "frontier": [asdict(p) for p in tradeoff_frontier(points)]}
