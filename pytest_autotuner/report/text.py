"""The sentences of a tuning item that every output shares (the answer, the defaults, the cost, the baseline),
built from the outcome once for the report view, and ``safe``, which makes user text safe for a terminal.

User text (task names, parameter values, server messages) is made safe for a terminal here: control characters
are escaped, and long values and lists are abbreviated, so a hostile spec cannot rewrite the screen or flood it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pytest_autotuner.core.measure.capacity import capacity_spread
from pytest_autotuner.core.measure.formatting import (
    format_gain,
    format_limit,
    format_objective,
    format_p,
)
from pytest_autotuner.core.spec.objectives import OBJECTIVE_DEFS

if TYPE_CHECKING:
    from pytest_autotuner.core.outcome.outcome import DefaultsComparison, TaskOutcome
    from pytest_autotuner.core.outcome.records import Confirmation

__all__ = [
    "answer_line",
    "baseline_text",
    "cost_line",
    "defaults_line",
    "objective_label",
    "pareto_line",
    "per_gpu_suffix",
    "runs_text",
    "safe",
    "screening_line",
    "server_choices",
    "significance",
]

_MAX_LINE = 400
_CONTROL = {i: f"\\x{i:02x}" for i in [*range(32), 127]} | {10: "\\n", 13: "\\r", 9: "\\t"}


def safe(text: str, limit: int = _MAX_LINE) -> str:
    """``text`` without control characters (escaped), cut to ``limit`` characters with an ellipsis."""
    cleaned = str(text).translate(_CONTROL)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def significance(versus: DefaultsComparison) -> str:
    """'p = 0.013', or 'p = 0.4, not significant': the defaults comparison's test, in every output's words."""
    return f"p = {format_p(versus.p_value)}" + ("" if versus.significant else ", not significant")


def runs_text(n: int) -> str:
    """'1 run', '3 runs'."""
    return f"{n} run{'s' * (n != 1)}"


def defaults_line(outcome: TaskOutcome) -> str | None:
    """The chosen best against SGLang's defaults, with the significance; None when the study did not run them."""
    versus = outcome.defaults
    if versus is None or outcome.best is None:
        return None
    trial = versus.trial
    where = f"SGLang defaults (trial #{trial.number})"
    objective = outcome.spec.optimization.objective
    if trial.failure is not None:
        first = safe(trial.failure_message.splitlines()[0], 120) if trial.failure_message else ""
        return f"{where} failed: {trial.failure}" + (f" ({first})" if first else "")
    confirmed = versus.confirmation
    if confirmed is None:
        return f"{where}: every confirmation run failed"
    measured = f"{format_objective(confirmed.score.objective, objective)} (confirmed, {runs_text(len(confirmed.runs))})"
    slo = "" if confirmed.score.meets_slos else ", missing the SLOs"
    test = "" if versus.gain is None else f"{format_gain(versus.gain)}, p = {format_p(versus.p_value)}"
    if not versus.significant and versus.gain is not None:
        test += ", not significant"
    if versus.defaults_chosen:
        if versus.gain is None:
            return f"{where}: {measured}{slo}; they are the best configuration found"
        return (
            f"{where}: {measured}{slo}; tuning found nothing significantly better "
            f"(the best tuned configuration, trial #{versus.tuned.source_trial if versus.tuned else '?'}, was {test})"
        )
    rule = "" if versus.eligible else " (the defaults are not eligible under the select rule)"
    return f"{where}: {measured}{slo}; the best is {test}{rule}"


def pareto_line(outcome: TaskOutcome) -> str | None:
    """'Pareto front: 4 of 12 trials meeting every SLO; select: best minimize_ttft among ...; the rule picked
    trial #7' (None for one objective)."""
    pareto = outcome.pareto
    if pareto is None:
        return None
    picked = f"the rule picked trial #{pareto.selected}" if pareto.selected is not None else "no tuned trial on it"
    return (
        f"Pareto front ({', '.join(pareto.objectives)}): {len(pareto.front)} of {len(pareto.considered)} trials "
        f"({pareto.tier}); select: {pareto.describe_rule()}; {picked}"
    )


def per_gpu_suffix(objective: str, per_gpu: bool) -> str:
    """' per GPU' when ``optimization.per_gpu`` divides this objective (throughput, goodput; not a latency)."""
    return " per GPU" if per_gpu and OBJECTIVE_DEFS[objective].per_gpu else ""


def objective_label(outcome: TaskOutcome) -> str:
    """The objective's name, with 'per GPU' when ``optimization.per_gpu`` divides it."""
    opt = outcome.spec.optimization
    return opt.objective + per_gpu_suffix(opt.objective, opt.per_gpu)


_METRIC_NAMES = {"ttft": "TTFT", "tpot": "TPOT", "e2e": "E2E"}


def _capacity_amount(value: float, outcome: TaskOutcome) -> str:
    spec = outcome.spec
    load = spec.benchmark.capacity.load if spec.benchmark.capacity else "rate"
    amount = f"{value:.3g} req/s" if load == "rate" else f"{value:.3g} concurrent requests"
    return amount + (" per GPU" if spec.optimization.per_gpu else "")


def answer_line(outcome: TaskOutcome) -> str | None:
    """The answer in operators' words, for the capacity objective: 'holds 7.5 req/s per GPU at p99 TTFT <= 200 ms
    (D(1000,200)), 2.1x SGLang defaults (p = 0.01)'. None for other objectives or without a confirmed best."""
    spec, best = outcome.spec, outcome.best
    goodput = spec.optimization.capacity_objective
    value = _capacity_of(best, goodput)
    if best is None or goodput is None or value is None:
        return None
    slos = ", ".join(
        f"{stat} {_METRIC_NAMES.get(metric, metric)} <= {format_limit(limit.threshold)}"
        for metric, stat, limit in (spec.slo.checks() if spec.slo else [])
    )
    where = ", ".join(spec.benchmark.traffic_scenarios)
    runs = best.runs
    ceiling = any(c.at_ceiling for r in runs for c in r.capacities)
    if value <= 0:
        limits = spec.benchmark.capacity
        lowest = f"{limits.min:g}" if limits else "0.25"
        text = f"holds no load from {lowest} up at {slos} ({where})"
    else:
        text = f"holds {'at least ' if ceiling else ''}{_capacity_amount(value, outcome)} at {slos} ({where})"
    answers = [c.capacity for r in runs for c in r.capacities]
    if len(answers) > 1 and value > 0:  # the confirmed value with its spread over the runs
        spread = capacity_spread(answers)
        scale = value / (sum(answers) / len(answers)) if sum(answers) else 1.0  # per GPU like the value
        text += (
            f" [{len(answers)} runs {min(answers) * scale:.3g}-{max(answers) * scale:.3g}, spread {spread:.1%}]"
            if math.isfinite(spread)
            else f" [{len(answers)} runs, one holding nothing]"
        )
    versus = outcome.defaults
    if versus is None or versus.confirmation is None:
        return safe(text)
    base = _capacity_of(versus.confirmation, goodput)
    # the defaults comparison's test is on the primary objective: quoted when that is the capacity
    primary = spec.optimization.capacity_primary
    p = significance(versus)
    quoted = f" ({p})" if primary else ""
    if versus.defaults_chosen:
        text += "; these are SGLang's defaults"
        if versus.gain is not None and primary:
            text += f" (the best tuned configuration was {format_gain(versus.gain)}, {p})"
    elif base is not None and base > 0:
        text += f", {value / base:.2g}x SGLang defaults{quoted}"
    elif base is not None:
        text += f", SGLang defaults hold no load{quoted}"
    return safe(text)


def _capacity_of(confirmation: Confirmation | None, goodput: str | None) -> float | None:
    """The confirmed capacity (the primary objective's value, or the capacity objective's among several)."""
    if confirmation is None or goodput is None:
        return None
    score = confirmation.score
    value = score.objectives.get(goodput) if score.objectives else score.objective
    return value if value is not None and math.isfinite(value) else None


def server_choices(outcome: TaskOutcome) -> dict[str, str]:
    """Flags the defaults trial left to SGLang, with the value the server reported choosing (``/server_info``)."""
    versus = outcome.defaults
    if versus is None:
        return {}
    info = versus.confirmation.server_info if versus.confirmation else {}
    chosen = {}
    for name in versus.trial.server_chose:
        value = info.get(name.replace("-", "_"))
        chosen[name] = f"{value} (chosen by the server)" if value is not None else "chosen by the server"
    return chosen


def screening_line(outcome: TaskOutcome) -> str:
    """'screening: 80 configurations scored, 3 trials seeded; the server against the simulator ...'."""
    screening = outcome.screening
    if screening is None:
        return ""
    seeded = sum(t.origin == "screen" for t in outcome.trials)
    text = f"screening: {screening.scored:,} configurations scored on the simulator, {seeded} trials seeded"
    return text + (f"; {outcome.calibration.text}" if outcome.calibration is not None else "")


def _gpu_time(seconds: float, hours: bool) -> str:
    value = seconds / 3600 if hours else seconds
    return f"{value:.1f}" if value >= 10 or (hours and value >= 0.1) or value == 0 else f"{value:.2g}"


def cost_line(outcome: TaskOutcome) -> str:
    """'cost: 1.3 GPU-hours; early stopping saved 0.4 (5 trials pruned)': GPU-hours from 0.1 on, else GPU-seconds."""
    cost = outcome.cost
    hours = cost.gpu_seconds >= 360
    unit = "GPU-hours" if hours else "GPU-seconds"
    text = f"cost: {_gpu_time(cost.gpu_seconds, hours)} {unit}"
    if cost.confirm_gpu_seconds > 0:
        text += f" ({_gpu_time(cost.confirm_gpu_seconds, hours)} of them confirming)"
    if cost.saved_gpu_seconds > 0 or cost.pruned_trials:
        text += f"; early stopping saved {_gpu_time(cost.saved_gpu_seconds, hours)}"
        if cost.pruned_trials:
            text += f" ({cost.pruned_trials} trial{'s' * (cost.pruned_trials != 1)} pruned)"
    return text


def baseline_text(outcome: TaskOutcome) -> str:
    """What happened with the baseline, in one line (the same words in every output)."""
    if outcome.new_baseline is not None:
        return f"recorded from {outcome.new_baseline.runs} runs (--autotune-update-baseline)"
    parts = []
    if outcome.baseline is not None:
        parts.append(outcome.baseline.summary)
    else:
        parts.append("none recorded (record one with --autotune-update-baseline)")
    if outcome.baseline_note:
        parts.append(outcome.baseline_note)
    return "; ".join(parts)
