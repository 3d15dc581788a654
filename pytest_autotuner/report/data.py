"""Tables and summaries of a session for the report: the trials frame, results.json, environment, Pareto front.

Everything here computes and returns; writing files is the job of ``html.py``.
"""

from __future__ import annotations

import math
import platform
from dataclasses import asdict, dataclass, is_dataclass
from typing import TYPE_CHECKING, Any

import pytest_autotuner
from pytest_autotuner.core.space import SearchSpace
from pytest_autotuner.report.text import defaults_line

if TYPE_CHECKING:
    import pandas as pd

    from pytest_autotuner.core.scoring import SloCheck
    from pytest_autotuner.core.session import SessionResult, TrialRecord

__all__ = [
    "CELL_COLUMNS",
    "BaselineView",
    "baseline_view",
    "cell_label",
    "environment",
    "format_seconds",
    "json_safe",
    "measured",
    "param_importances",
    "pareto_front",
    "results_summary",
    "slo_check_dict",
    "trial_latency_throughput",
    "trials_frame",
]

#: per-cell metrics flattened into trials.csv: (column suffix, metric, statistic or None for a plain value)
CELL_COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("e2e_mean", "e2e", "mean"),
    ("e2e_p99", "e2e", "p99"),
    ("ttft_mean", "ttft", "mean"),
    ("ttft_p99", "ttft", "p99"),
    ("tpot_mean", "tpot", "mean"),
    ("output_throughput", "output_throughput", None),
    ("error_rate", "error_rate", None),
)


def json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON: they become None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def format_seconds(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:.3f} s"


def cell_label(cell: dict[str, Any]) -> str:
    """The same label as ``CellMetrics.label``, from the stored dict of a cell."""
    rate = cell.get("request_rate")
    load = f"rate={rate:g}/s" if rate else f"c={cell.get('concurrency')}"
    return f"{cell.get('scenario')} {load}"


def _cell_value(cell: dict[str, Any], metric: str, statistic: str | None) -> float:
    raw = cell.get(metric)
    if statistic is not None:
        raw = raw.get(statistic) if isinstance(raw, dict) else None
    return float(raw) if isinstance(raw, int | float) else math.nan


def measured(trial: TrialRecord) -> bool:
    """A trial that produced a measurement (it may still miss an SLO or be infeasible)."""
    return trial.failure is None and trial.objective is not None


def trial_latency_throughput(trial: TrialRecord) -> tuple[float, float]:
    """(mean E2E over the trial's cells, mean output throughput over its cells); NaN when unknown."""
    e2e = [_cell_value(c, "e2e", "mean") for c in trial.cells]
    tput = [_cell_value(c, "output_throughput", None) for c in trial.cells]
    e2e = [v for v in e2e if math.isfinite(v)]
    tput = [v for v in tput if math.isfinite(v)]
    return (sum(e2e) / len(e2e) if e2e else math.nan, sum(tput) / len(tput) if tput else math.nan)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated for (lower latency, higher throughput), sorted by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best_tput = -math.inf
    for i in order:
        if points[i][1] > best_tput:
            front.append(i)
            best_tput = points[i][1]
    return front


def _param_columns(result: SessionResult) -> dict[str, str]:
    reserved = {"number", "objective", "value", "feasible", "meets_slos", "failure", "failure_message", "duration"}
    names = list(result.spec.parameters)
    for trial in result.trials:
        names += [n for n in trial.params if n not in names]
    return {n: (f"param:{n}" if n in reserved else n) for n in names}


def trials_frame(result: SessionResult) -> pd.DataFrame:
    """One row per trial: number, params, objective, value, verdicts, failure and the main per-cell metrics."""
    import pandas as pd

    columns = _param_columns(result)
    rows = []
    for trial in result.trials:
        row: dict[str, Any] = {"number": trial.number}
        row.update({col: trial.params.get(name) for name, col in columns.items()})
        row.update(
            objective=trial.objective,
            value=trial.value if math.isfinite(trial.value) else None,
            feasible=trial.feasible,
            meets_slos=trial.meets_slos,
            failure=trial.failure or "",
            failure_message=trial.failure_message,
            duration=trial.duration,
        )
        for cell in trial.cells:
            label = cell_label(cell)
            for suffix, metric, statistic in CELL_COLUMNS:
                row[f"{label} {suffix}"] = _cell_value(cell, metric, statistic)
        rows.append(row)
    base = ["number", *columns.values(), "objective", "value", "feasible", "meets_slos", "failure",
            "failure_message", "duration"]  # fmt: skip
    ordered = list(dict.fromkeys(base + [c for r in rows for c in r]))
    return pd.DataFrame(rows, columns=ordered)


def slo_check_dict(check: SloCheck) -> dict[str, Any]:
    return {
        "cell": check.cell,
        "slo": check.name,
        "metric": check.metric,
        "statistic": check.statistic,
        "value": check.value,
        "threshold": check.threshold,
        "margin": check.margin,
        "ratio": check.ratio,
        "passed": check.passed,
        "hard_fail": check.hard_fail,
    }


@dataclass(frozen=True)
class BaselineView:
    """What the report shows about the baseline comparison, whatever shape the comparison object has."""

    verdict: str  # "regression" | "no regression" | "not compared"
    text: str
    details: dict[str, Any] | list[Any] | None

    @property
    def regressed(self) -> bool:
        return self.verdict == "regression"


def baseline_view(result: SessionResult) -> BaselineView:
    baseline = getattr(result, "baseline", None)
    if baseline is None:
        return BaselineView("not compared", "no baseline recorded", None)
    regressed = getattr(baseline, "regressed", None)
    if regressed is None and getattr(baseline, "passed", None) is not None:
        regressed = not baseline.passed
    if hasattr(baseline, "as_dict"):
        details = baseline.as_dict()
    elif is_dataclass(baseline) and not isinstance(baseline, type):
        details = asdict(baseline)
    elif isinstance(baseline, dict | list):
        details = baseline
    else:
        details = {"repr": repr(baseline)}
    text = str(getattr(baseline, "summary", "") or "")
    if regressed is None:
        return BaselineView("not compared", text or "baseline comparison without a verdict", details)
    verdict = "regression" if regressed else "no regression"
    return BaselineView(verdict, text or f"{verdict} against the committed baseline", details)


def environment(result: SessionResult, runtime: str) -> dict[str, Any]:
    """Where and with what the session ran: enough to reproduce or to tell two runs apart."""
    import optuna

    spec = result.spec
    if runtime == "sim":
        gpus: str = f"{spec.simulator.num_gpus} x {spec.simulator.gpu} (simulated)"
    else:
        gpus = ", ".join(str(g) for g in spec.gpus) if spec.gpus else "all visible"
    try:
        fingerprint = SearchSpace.from_spec(spec).fingerprint()
    except Exception:  # a report must not fail on a space it cannot rebuild
        fingerprint = "unknown"
    return {
        "runtime": runtime,
        "image": spec.runtime_image_tag,
        "model": spec.model.id_or_path if spec.model else "n/a",
        "gpus": gpus,
        "sglang_version": str(result.server_info.get("version") or "unknown"),
        "tool_version": pytest_autotuner.__version__,
        "optuna_version": optuna.__version__,
        "python": platform.python_version(),
        "seed": spec.optimization.seed,
        "study_name": result.study_name,
        "strategy": spec.optimization.strategy,
        "objective": spec.optimization.objective,
        "space_fingerprint": fingerprint,
        "duration_s": round(result.duration, 3),
    }


def results_summary(result: SessionResult, runtime: str) -> dict[str, Any]:
    """The machine-readable summary written as results.json."""
    spec = result.spec
    best = result.best
    baseline = baseline_view(result)
    trials = result.trials
    best_block: dict[str, Any] | None = None
    if best is not None:
        best_block = {
            "params": best.params,
            "source_trial": best.source_trial,
            "objective": best.score.objective,
            "score": best.score.value,
            "meets_slos": best.score.meets_slos,
            "confirmation_runs": len(best.runs),
            "confirmation_failures": list(best.failures),
            "cells": {cell.label: cell.as_dict() for cell in best.merged.cells},
        }
    return json_safe(
        {
            "task": spec.task_name,
            "description": spec.description,
            "passed": result.passed,
            "objective": {"name": spec.optimization.objective, "direction": spec.optimization.direction},
            "best": best_block,
            "slo_checks": [slo_check_dict(c) for c in result.slo_checks],
            "vs_defaults": _defaults_block(result),
            "trials": {
                "total": len(trials),
                "measured": sum(measured(t) for t in trials),
                "feasible": sum(t.feasible for t in trials),
                "meets_slos": sum(t.meets_slos for t in trials),
                "failed": sum(t.failure is not None for t in trials),
                "duplicates_skipped": result.duplicates_skipped,
            },
            "failure_counts": dict(result.failure_counts),
            "baseline": {"verdict": baseline.verdict, "text": baseline.text, "details": baseline.details},
            "stopped_early": result.stopped_early,
            "environment": environment(result, runtime),
        }
    )


def _defaults_block(result: SessionResult) -> dict[str, Any] | None:
    """SGLang's defaults as the search measured them (one run), and how much better the confirmed best is."""
    defaults = result.defaults_trial
    if defaults is None:
        return None
    return {
        "trial": defaults.number,
        "params": defaults.params,
        "objective": defaults.objective,
        "meets_slos": defaults.meets_slos,
        "failure": defaults.failure,
        "gain": result.gain_over_defaults,
        "text": defaults_line(result),
    }


def param_importances(result: SessionResult, *, min_trials: int = 6) -> dict[str, float] | None:
    """fANOVA importances over the feasible measured trials; None when there are too few to say anything."""
    import optuna

    try:
        distributions = SearchSpace.from_spec(result.spec).distributions()
    except Exception:
        return None
    trials = []
    for record in result.trials:
        if not (measured(record) and record.feasible and math.isfinite(record.value)):
            continue
        if set(record.params) != set(distributions):
            continue  # measured under another space (a resumed study): not comparable
        try:
            trials.append(
                optuna.trial.create_trial(params=record.params, distributions=distributions, value=record.value)
            )
        except ValueError:
            continue
    varied = [n for n in distributions if len({repr(t.params[n]) for t in trials}) > 1]
    if len(trials) < min_trials or not varied:
        return None
    study = optuna.create_study(direction=result.spec.optimization.direction)
    study.add_trials(trials)
    try:
        importances = optuna.importance.get_param_importances(study, params=varied, normalize=True)
    except (RuntimeError, ValueError):  # e.g. every value equal
        return None
    return {name: float(value) for name, value in importances.items()}
