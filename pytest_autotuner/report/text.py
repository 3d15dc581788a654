"""Readable text for a session's outcome: the failure explanation, progress lines and the summary."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pytest_autotuner.core.baseline import ALPHA
from pytest_autotuner.core.scoring import OBJECTIVE_METRICS

if TYPE_CHECKING:
    from pytest_autotuner.core.baseline import BaselineComparison
    from pytest_autotuner.core.scoring import SloCheck
    from pytest_autotuner.core.session import SessionResult, TrialEvent
    from pytest_autotuner.core.trial import Params

__all__ = [
    "defaults_line",
    "describe_params",
    "explain_baseline",
    "explain_failure",
    "format_gain",
    "format_objective",
    "progress_line",
    "summary_lines",
]


def describe_params(params: Params) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def format_objective(value: float | None, objective: str) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    _metric, unit = OBJECTIVE_METRICS[objective]
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.3f} s"
    return f"{value:,.0f} {unit}"


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "no samples"
    return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:.3f} s"


def progress_line(event: TrialEvent, objective: str) -> str:
    """One line per trial: position, params, result, time."""
    score = event.score
    if score.failure is not None:
        result = f"FAILED {score.failure.value}"
        if score.failure_message:
            result += f" ({score.failure_message.splitlines()[0][:100]})"
    else:
        result = f"{objective}={format_objective(score.objective, objective)}"
        violated = [c for c in score.slo_checks if not c.passed]
        result += f" SLO miss x{len(violated)}" if violated else (" SLO ok" if score.slo_checks else "")
    tag = "trial" if event.phase == "search" else "confirm"
    width = len(str(event.total))
    if event.devices:
        result += f" on gpu {','.join(map(str, event.devices))}"
    return (
        f"  {tag} {event.index:>{width}}/{event.total} {describe_params(event.params)} -> {result} "
        f"[{event.duration:.1f}s]"
    )


def slo_table(checks: list[SloCheck]) -> list[str]:
    rows = [("cell", "metric", "value", "threshold", "margin", "")]
    for c in checks:
        over = "" if c.passed or not math.isfinite(c.ratio) else f"{c.ratio:+.1%}"
        status = "ok" if c.passed else f"FAIL {over}".strip()
        rows.append((c.cell, c.name, _seconds(c.value), _seconds(c.threshold), _seconds(c.margin), status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def explain_failure(result: SessionResult) -> str:
    """Why the item failed, in terms a user can act on."""
    spec = result.spec
    if result.best is None:
        counts = result.failure_counts
        lines = [f"no configuration of {spec.task_name!r} could be measured: all {len(result.trials)} trials failed"]
        for failure, count in counts.most_common():
            example = next(t for t in result.trials if t.failure == failure)
            lines.append(
                f"  {failure} x{count}: e.g. {describe_params(example.params)}: {example.failure_message[:200]}"
            )
        lines.append("Check the failing trials' log tails in the report, or widen the parameter ranges.")
        return "\n".join(lines)
    best = result.best
    failed = [c for c in best.score.slo_checks if not c.passed]
    runs = len(best.runs)
    lines = [
        f"the best configuration of {spec.task_name!r} misses {len(failed)} SLO check(s) "
        f"(confirmed over {runs} run{'s' * (runs != 1)}):",
        f"  config: {describe_params(best.params)}",
        *slo_table(list(best.score.slo_checks)),
    ]
    if not any(t.meets_slos for t in result.trials):
        lines.append(
            f"No trial out of {len(result.trials)} met every SLO; the SLOs may be out of reach for this "
            "model and hardware, or the space lacks a configuration that meets them."
        )
    else:
        lines.append(
            "A trial met the SLOs during the search but not in the confirmation runs: "
            "the margin is within run-to-run noise."
        )
    return "\n".join(lines)


def explain_baseline(comparison: BaselineComparison) -> str:
    """The regression table (or the strict fingerprint mismatch), and what to do next."""
    if not comparison.compared:
        return (
            f"baseline comparison refused under --autotune-strict-baseline: {comparison.skipped_reason}\n"
            "Re-record the baseline on this runner with --autotune-update-baseline."
        )
    rows = [("metric", "cell", "baseline", "now", "change", "p-value", "")]
    for c in comparison.changes:
        unit = (lambda v: f"{v:,.0f} tok/s") if c.metric == "output_throughput" else _seconds
        flag = "REGRESSION" if c.regressed else ("improved" if c.improved else "")
        rows.append(
            (
                c.metric,
                c.cell,
                unit(c.baseline),
                unit(c.now),
                f"{c.change:+.1%}",
                "n/a" if math.isnan(c.p_value) else f"{c.p_value:.2g}",
                flag,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    tolerance = max((c.tolerance for c in comparison.changes), default=0.1)
    extra = " after one extra confirmation run" if comparison.extra_run else ""
    return "\n".join(
        [
            f"performance regressed against the baseline {comparison.path}{extra} "
            f"(worse by more than the tolerance, {tolerance:.0%}, and significant at p < {ALPHA}):",
            *table,
            "If the slowdown is expected, accept the new numbers with --autotune-update-baseline.",
        ]
    )


def defaults_line(result: SessionResult) -> str | None:
    """The best configuration against SGLang's defaults, in one line; None when the study did not measure them."""
    defaults = result.defaults_trial
    if defaults is None or result.best is None:
        return None
    where = f"SGLang defaults (trial #{defaults.number})"
    if result.best.source_trial == defaults.number:
        return f"{where} are the best configuration found"
    if defaults.failure is not None:
        first = defaults.failure_message.splitlines()[0][:120] if defaults.failure_message else ""
        return f"{where} failed: {defaults.failure}" + (f" ({first})" if first else "")
    measured = format_objective(defaults.objective, result.spec.optimization.objective)
    slo = "" if defaults.meets_slos else ", missing the SLOs"
    gain = result.gain_over_defaults
    if gain is None:
        return f"{where}: {measured} in one run{slo}"
    return f"{where}: {measured} in one run{slo}; the best is {format_gain(gain)}"


def format_gain(gain: float) -> str:
    """'24% better', '0.3% worse': a relative change in the objective's favour (positive) or against it."""
    size = f"{abs(gain):.0%}" if abs(gain) >= 0.095 else f"{abs(gain):.1%}"
    return f"{size} {'better' if gain >= 0 else 'worse'}"


def summary_lines(result: SessionResult, report_path: str | None) -> list[str]:
    spec = result.spec
    objective = spec.optimization.objective
    status = "PASS" if result.passed else "FAIL"
    lines = [f"{spec.task_name}: {status}  ({len(result.trials)} trials, {result.duration:.0f}s)"]
    if result.best is not None:
        lines.append(f"  best: {describe_params(result.best.params)}")
        lines.append(
            f"  {objective}: {format_objective(result.best.score.objective, objective)} "
            f"(confirmed, {len(result.best.runs)} runs)"
        )
        versus = defaults_line(result)
        if versus:
            lines.append(f"  {versus}")
        checks = result.best.score.slo_checks
        if checks:
            passed = sum(c.passed for c in checks)
            lines.append(f"  SLO checks: {passed}/{len(checks)} met")
    if result.failure_counts:
        lines.append("  failed trials: " + ", ".join(f"{k} x{v}" for k, v in result.failure_counts.most_common()))
    if result.baseline is None:
        lines.append("  baseline: none recorded (record one with --autotune-update-baseline)")
    else:
        lines.append(f"  baseline: {result.baseline.summary}")
        for change in result.baseline.improvements:
            lines.append(f"    improved: {change.metric} {change.cell} {change.change:+.1%}")
    if result.stopped_early:
        lines.append(f"  stopped early: {result.stopped_early}")
    if report_path:
        lines.append(f"  report: {report_path}")
    return lines
