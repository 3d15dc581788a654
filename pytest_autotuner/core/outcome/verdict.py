"""The one verdict of a tuning item: passed or failed, with every reason, computed once.

The pytest outcome, the exit status, the terminal summary, results.json, the HTML banner, the run index, the
GitHub job summary and the JUnit properties all print this object; none of them decides pass or fail itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.measure.formatting import describe_params, format_p, format_seconds, text_table
from pytest_autotuner.core.measure.stats import ALPHA

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.scoring import SloCheck
    from pytest_autotuner.core.outcome.baseline import BaselineComparison
    from pytest_autotuner.core.outcome.records import Confirmation, TrialRecord

__all__ = ["Reason", "ReasonKind", "Verdict", "decide", "no_baseline", "slo_table"]


class ReasonKind(str, Enum):
    """Why an item fails."""

    NO_MEASUREMENT = "no_measurement"  # no configuration could be measured (or confirmed)
    SLO_MISS = "slo_miss"  # the confirmed best misses an SLO
    REGRESSION = "regression"  # worse than the committed baseline
    FINGERPRINT_MISMATCH = (
        "fingerprint_mismatch"  # baseline from other hardware/image, under --autotune-strict-baseline
    )
    NO_BASELINE = "no_baseline"  # check mode (--autotune-check) without a recorded baseline to check against


@dataclass(frozen=True)
class Reason:
    kind: ReasonKind
    summary: str  # one line, in an operator's words
    details: tuple[str, ...] = ()  # the table and what to do next

    @property
    def text(self) -> str:
        return "\n".join((self.summary, *self.details))

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "summary": self.summary, "details": list(self.details)}


@dataclass(frozen=True)
class Verdict:
    """PASS when there is no reason to fail; ``notes`` are what an operator should know that did not fail it."""

    reasons: tuple[Reason, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"

    @property
    def headline(self) -> str:
        """'PASS' or 'FAIL: <every reason's summary>', one line."""
        if self.passed:
            return "PASS"
        return "FAIL: " + "; ".join(r.summary.rstrip(":") for r in self.reasons)

    def explanation(self) -> str:
        """Every reason with its details: the pytest failure text."""
        return "\n\n".join(r.text for r in self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "passed": self.passed,
            "headline": self.headline,
            "reasons": [r.as_dict() for r in self.reasons],
            "notes": list(self.notes),
        }


def slo_table(checks: Sequence[SloCheck]) -> list[str]:
    rows = [("cell", "metric", "value", "threshold", "margin", "")]
    for c in checks:
        over = "" if c.passed or not math.isfinite(c.ratio) else f"{c.ratio:+.1%}"
        status = "ok" if c.passed else f"FAIL {over}".strip()
        value = format_seconds(c.value) + ("*" if c.censored else "")
        rows.append((c.cell, c.name, value, format_seconds(c.threshold), format_seconds(c.margin), status))
    lines = text_table(rows)
    censored = max((c.censored for c in checks), default=0)
    if censored:
        lines.append(
            f"  * includes up to {censored} request(s) still running when the cell ended, each counted at the time "
            "it had waited (its latency was at least that)"
        )
    return lines


def _no_measurement(
    task: str, trials: Sequence[TrialRecord], best_failures: Sequence[str], check: bool = False
) -> Reason:
    if check:
        return Reason(
            ReasonKind.NO_MEASUREMENT,
            f"check mode: the baseline's configuration of {task!r} could not be measured: every run failed",
            (*[f"  {f}" for f in best_failures[:5]], "See the check runs' failures above and in the report."),
        )
    failed = [t for t in trials if t.failure]
    if trials and len(failed) < len(trials):
        details = [f"  {f}" for f in best_failures[:5]]
        return Reason(
            ReasonKind.NO_MEASUREMENT,
            f"the best configuration of {task!r} could not be confirmed: every confirmation run failed",
            (*details, "The configuration worked once in the search; check the confirmation runs' failures above."),
        )
    counts: dict[str, int] = {}
    for t in failed:
        counts[t.failure or ""] = counts.get(t.failure or "", 0) + 1
    lines = []
    for failure, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        example = next(t for t in failed if t.failure == failure)
        lines.append(f"  {failure} x{count}: e.g. {describe_params(example.params)}: {example.failure_message[:200]}")
    what = f"all {len(trials)} trials failed" if trials else "no trial was run"
    return Reason(
        ReasonKind.NO_MEASUREMENT,
        f"no configuration of {task!r} could be measured: {what}",
        (*lines, "Check the failing trials' log tails in the report, or widen the parameter ranges."),
    )


def _slo_miss(task: str, best: Confirmation, trials: Sequence[TrialRecord], check: bool = False) -> Reason:
    checks = best.score.slo_checks
    failed = [c for c in checks if not c.passed]
    runs = len(best.runs)
    if check:
        hint = (
            "Check mode measured the baseline's configuration only; a full tuning run (pytest --autotune) may "
            "find one that meets the SLOs again."
        )
    elif not any(t.meets_slos for t in trials):
        hint = (
            f"No trial out of {len(trials)} met every SLO; the SLOs may be out of reach for this model and "
            "hardware, or the space lacks a configuration that meets them."
        )
    else:
        hint = "A trial met the SLOs during the search but not in the confirmation runs: the margin is within noise."
    return Reason(
        ReasonKind.SLO_MISS,
        f"the best configuration of {task!r} misses {len(failed)} SLO check(s) "
        f"(confirmed over {runs} run{'s' * (runs != 1)}):",
        (f"  config: {describe_params(best.params)}", *slo_table(checks), hint),
    )


def regression_table(comparison: BaselineComparison) -> list[str]:
    rows = [("metric", "cell", "baseline", "now", "change", "p-value", "")]
    for c in comparison.changes:
        unit = (lambda v: f"{v:,.0f} tok/s") if c.metric == "output_throughput" else format_seconds
        flag = "REGRESSION" if c.regressed else ("improved" if c.improved else "")
        rows.append((c.metric, c.cell.label, unit(c.baseline), unit(c.now), f"{c.change:+.1%}", format_p(c.p_value),
                     flag))  # fmt: skip
    return text_table(rows)


def _regression(comparison: BaselineComparison) -> Reason:
    tolerance = max((c.tolerance for c in comparison.changes), default=0.1)
    extra = " after one extra confirmation run" if comparison.extra_run else ""
    return Reason(
        ReasonKind.REGRESSION,
        f"performance regressed against the baseline {comparison.path}{extra} "
        f"(worse by more than the tolerance, {tolerance:.0%}, and significant at p < {ALPHA}):",
        (
            *regression_table(comparison),
            "If the slowdown is expected, accept the new numbers with --autotune-update-baseline.",
        ),
    )


def _mismatch(comparison: BaselineComparison) -> Reason:
    return Reason(
        ReasonKind.FINGERPRINT_MISMATCH,
        f"baseline comparison refused under --autotune-strict-baseline: {comparison.skipped_reason}",
        ("Re-record the baseline on this runner with --autotune-update-baseline.",),
    )


def no_baseline(task: str, baseline_path: str) -> Reason:
    """Check mode has nothing to check without a baseline: say how to record one."""
    where = baseline_path or "tuning_specs/<spec>.baseline.json"
    return Reason(
        ReasonKind.NO_BASELINE,
        f"check mode: {task!r} has no baseline to check ({where} does not exist)",
        (
            "Check mode (--autotune-check) launches the baseline's best configuration instead of searching;",
            "record a baseline first with a full tuning run, and commit the file it writes:",
            f"  pytest --autotune --autotune-update-baseline  (writes {where})",
        ),
    )


def decide(
    *,
    task: str,
    trials: Sequence[TrialRecord],
    best: Confirmation | None,
    best_failures: Sequence[str] = (),
    baseline: BaselineComparison | None,
    strict_baseline: bool,
    baseline_accepted: bool,
    check: bool = False,
) -> Verdict:
    """The verdict from the confirmed best and the baseline comparison.

    ``baseline_accepted``: a new baseline was recorded in this run (--autotune-update-baseline), so a regression
    or a fingerprint change against the old one is the accepted new state, reported as a note. ``check``: the
    best is the baseline's configuration, measured without a search (--autotune-check).
    """
    reasons: list[Reason] = []
    notes: list[str] = []
    if best is None:
        reasons.append(_no_measurement(task, trials, best_failures, check))
    elif not best.score.meets_slos:
        reasons.append(_slo_miss(task, best, trials, check))
    if baseline is not None:
        if baseline.regressed:
            if baseline_accepted:
                notes.append(f"{baseline.summary}; accepted: the baseline was re-recorded")
            else:
                reasons.append(_regression(baseline))
        elif not baseline.compared:
            if strict_baseline and not baseline_accepted:
                reasons.append(_mismatch(baseline))
            else:
                notes.append(f"baseline not compared: {baseline.skipped_reason}")
    return Verdict(tuple(reasons), tuple(notes))
