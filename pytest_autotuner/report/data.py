"""Tables of a tuning item for the report: the trials frame, results.json, environment, Pareto front.

A builder: everything here reads a ``TaskOutcome`` and returns plain data, for the report view (``view.py``),
which runs it once per item; nothing decides pass or fail (that is the outcome's ``verdict``), and writing files
is the job of ``html.py``.

Why one module of about 410 lines: the tables the machine-readable outputs share (results.json, trials.csv, the
JUnit Pareto front), each built here and nowhere else.
"""

from __future__ import annotations

import math
import platform
from typing import TYPE_CHECKING, Any

import pytest_autotuner
from pytest_autotuner.core.measure.capacity import capacity_spread, ladder_resolution
from pytest_autotuner.core.measure.metrics import json_safe
from pytest_autotuner.core.measure.scoring import OBJECTIVE_METRICS
from pytest_autotuner.core.search.gpu_pool import gpus_needed

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd

    from pytest_autotuner.core.measure.scoring import SloCheck
    from pytest_autotuner.core.outcome.outcome import TaskOutcome
    from pytest_autotuner.core.outcome.records import TrialRecord
    from pytest_autotuner.report.view import Lines

__all__ = [
    "CELL_COLUMNS",
    "MIN_IMPORTANCE_TRIALS",
    "environment",
    "importance_trials",
    "param_importances",
    "pareto_block",
    "results_block",
    "results_summary",
    "slo_check_dict",
    "trial_status",
    "trials_frame",
]

#: per-cell metrics flattened into trials.csv: (column suffix, metric, statistic)
CELL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("e2e_mean", "e2e", "mean"),
    ("e2e_p99", "e2e", "p99"),
    ("ttft_mean", "ttft", "mean"),
    ("ttft_p99", "ttft", "p99"),
    ("tpot_mean", "tpot", "mean"),
    ("output_throughput", "output_throughput", ""),
    ("error_rate", "error_rate", ""),
    ("cache_hit_rate", "cache_hit_rate", ""),
)


def trial_status(trial: TrialRecord) -> str:
    """'pruned', 'failed: <class>', 'SLOs met', 'SLOs missed' or 'measured' (no SLOs): the trials table's SLO
    column. A pruned trial is not a failed server: early stopping ended it after part of its cells."""
    if trial.pruned:
        return "pruned"
    if trial.failure:
        return f"failed: {trial.failure}"
    if not trial.cells:
        return "measured"
    if trial.meets_slos:
        return "SLOs met"
    return "SLOs missed (hard)" if not trial.feasible else "SLOs missed"


def _param_columns(outcome: TaskOutcome) -> dict[str, str]:
    reserved = {"number", "objective", "value", "feasible", "meets_slos", "failure", "failure_message", "duration",
                "slo_status", "origin", "repeat_of", "gpu_seconds", "gpu_seconds_saved"}  # fmt: skip
    names = list(outcome.spec.parameters)
    for trial in outcome.trials:
        names += [n for n in trial.params if n not in names]
    return {n: (f"param:{n}" if n in reserved else n) for n in names}


def trials_frame(outcome: TaskOutcome) -> pd.DataFrame:
    """One row per trial: number, params, objective, value, verdicts, failure and the main per-cell metrics."""
    import pandas as pd

    columns = _param_columns(outcome)
    rows = []
    for trial in outcome.trials:
        row: dict[str, Any] = {"number": trial.number}
        row.update({col: trial.params.get(name, "server" if name in trial.server_chose else None)
                    for name, col in columns.items()})  # fmt: skip
        row.update(
            objective=trial.objective,
            value=trial.value if math.isfinite(trial.value) else None,
            feasible=trial.feasible,
            meets_slos=trial.meets_slos,
            slo_status=trial_status(trial),
            failure=trial.failure or "",
            failure_message=trial.failure_message,
            duration=trial.duration,
            origin=trial.origin,
            repeat_of=trial.repeat_of,
            gpu_seconds=trial.gpu_seconds,
            gpu_seconds_saved=trial.gpu_seconds_saved,
        )
        for cell in trial.cells:
            for suffix, metric, statistic in CELL_COLUMNS:
                row[f"{cell.label} {suffix}"] = cell.value(metric, statistic or "mean")
            row[f"{cell.label} incomplete"] = cell.incomplete
            row[f"{cell.label} censored_wait_max"] = cell.censored_wait[1] if cell.censored_wait else None
            row[f"{cell.label} precision_stop"] = cell.precision_stop
            row[f"{cell.label} half_width"] = cell.half_width
        rows.append(row)
    base = ["number", *columns.values(), "objective", "value", "feasible", "meets_slos", "slo_status", "failure",
            "failure_message", "duration", "origin", "repeat_of", "gpu_seconds", "gpu_seconds_saved"]  # fmt: skip
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
        "censored": check.censored,
    }


def environment(outcome: TaskOutcome) -> dict[str, Any]:
    """Where and with what the session ran: enough to reproduce or to tell two runs apart."""
    import optuna

    spec = outcome.spec
    if outcome.runtime == "sim":
        gpus: str = f"{spec.simulator.num_gpus} x {spec.simulator.gpu} (simulated)"
    else:
        gpus = ", ".join(str(g) for g in spec.gpus) if spec.gpus else "all visible"
    space_fingerprint = outcome.space_fingerprint or "unknown"
    return {
        "runtime": outcome.runtime,
        "image": outcome.fingerprint.get("image") or spec.runtime_image_tag,
        "image_digest": outcome.fingerprint.get("image_digest") or "",
        "model": spec.model.id_or_path if spec.model else "n/a",
        "gpus": gpus,
        "sglang_version": str(
            outcome.server_info.get("version") or outcome.fingerprint.get("sglang_version") or "unknown"
        ),
        **_unmodelled(outcome),
        **_token_counting(outcome),
        **_pricing(outcome),
        "tool_version": pytest_autotuner.__version__,
        "optuna_version": optuna.__version__,
        "python": platform.python_version(),
        "seed": spec.optimization.seed,
        "study_name": outcome.study_name,
        "strategy": spec.optimization.strategy,
        "objective": spec.optimization.objective,
        **({"objectives": ", ".join(spec.optimization.objectives)} if spec.optimization.objectives else {}),
        **({"sampler": spec.optimization.sampler} if spec.optimization.sampler != "tpe" else {}),
        "space_fingerprint": space_fingerprint,
        "fingerprint": dict(outcome.fingerprint),
        "duration_s": round(outcome.duration, 3),
    }


def _unmodelled(outcome: TaskOutcome) -> dict[str, str]:
    """On the simulator: the flags it accepted without modelling them (they had no effect on its figures)."""
    flags = outcome.server_info.get("sim_unmodelled_flags") if outcome.runtime == "sim" else None
    if not flags:
        return {}
    return {"no_effect_in_simulation": ", ".join(str(f) for f in flags) + " (accepted by the simulator, not modelled)"}


def ladder_unit(outcome: TaskOutcome) -> str:
    """The capacity search's load unit (req/s or concurrent requests), 'per GPU' under per_gpu."""
    capacity = outcome.spec.benchmark.capacity
    unit = "concurrent requests" if capacity is not None and capacity.load == "concurrency" else "req/s"
    return unit + (" per GPU" if outcome.spec.optimization.per_gpu else "")


def pareto_block(outcome: TaskOutcome) -> dict[str, Any] | None:
    """A multi-objective search's Pareto front and the select rule's choice (None for one objective): what
    results.json, the report's table and JUnit carry. ``objectives`` per trial are unpenalized; ``scores`` are
    what the front was computed on (equal to them when every SLO is met)."""
    pareto = outcome.pareto
    if pareto is None:
        return None
    eligible = set(pareto.eligible)
    chosen = outcome.best.source_trial if outcome.best is not None else None
    return {
        "objectives": [
            {"name": name, "direction": direction, "unit": OBJECTIVE_METRICS[name][1]}
            for name, direction in zip(pareto.objectives, pareto.directions, strict=True)
        ],
        "select": {
            "best": pareto.rule.best,
            "within": dict(pareto.rule.within),
            "from_spec": pareto.rule_given,
            "text": pareto.describe_rule(),
        },
        "compared": pareto.tier,
        "considered": len(pareto.considered),
        "selected_trial": pareto.selected,
        "chosen_trial": chosen,
        "front": [
            {
                "trial": t.number,
                "params": t.params,
                "objectives": {name: t.objectives.get(name) for name in pareto.objectives},
                "scores": dict(zip(pareto.objectives, t.values, strict=True)),
                "eligible": t.number in eligible,
                "selected": t.number == pareto.selected,
                "chosen": t.number == chosen,
                "origin": t.origin,
            }
            for t in pareto.front
        ],
        "dominated_trials": [t.number for t in pareto.dominated],
    }


def _pricing(outcome: TaskOutcome) -> dict[str, str]:
    """On the simulator: what priced its steps (aiconfigurator-core's kernel tables, or the roofline and why)."""
    how = outcome.server_info.get("sim_pricing") if outcome.runtime == "sim" else None
    return {"sim_pricing": str(how)} if how else {}


def _token_counting(outcome: TaskOutcome) -> dict[str, str]:
    """On the simulator: how it counted prompt tokens (a tokenizer.json, or the word rule as the fallback)."""
    how = outcome.server_info.get("sim_token_counting") if outcome.runtime == "sim" else None
    if not how:
        return {}
    path = outcome.server_info.get("sim_tokenizer")
    if how == "tokenizer" and path:
        return {"token_counting": f"tokenizer {path} (the simulator counts and caches prompts by its ids)"}
    return {"token_counting": "word rule: one token per whitespace-separated word (no tokenizer.json given)"}


def screening_block(outcome: TaskOutcome, text: str) -> dict[str, Any] | None:
    """``optimization.screening``: what the screen scored, the trials it seeded, and the calibration (the real
    trials against the simulator: fitted TTFT and TPOT factors, rank agreement); None when it did not run."""
    screening = outcome.screening
    if screening is None:
        return None
    seeded = [t.number for t in outcome.trials if t.origin == "screen"]
    return {
        "screened": screening.scored,
        "not_scorable": screening.unscored,
        "seconds": screening.seconds,
        "seeds": [
            {"params": dict(p), "predicted_score": v} for p, v in zip(screening.seeds, screening.predicted, strict=True)
        ],
        "seeded_trials": seeded,
        "calibration": outcome.calibration.as_dict() if outcome.calibration is not None else None,
        "text": text,
    }


def results_summary(outcome: TaskOutcome) -> dict[str, Any]:
    """The machine-readable summary written as results.json (the report view's, built for this outcome)."""
    from pytest_autotuner.report.view import report_view

    return dict(report_view(outcome).results)


def results_block(
    outcome: TaskOutcome,
    lines: Lines,
    explained: Mapping[str, Any],
    pareto: Mapping[str, Any] | None,
    environment: Mapping[str, Any],
) -> dict[str, Any]:
    """results.json, from the outcome and the view's lines and blocks (each computed once, in ``view.py``)."""
    spec = outcome.spec
    best = outcome.best
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
            "cells": [cell.as_dict() for cell in best.merged.cells],
            "gpus": gpus_needed(best.params),
            "answer": lines.answer,
        }
        ladders = [c.as_dict() for run in best.runs for c in run.capacities]
        if ladders:  # maximize_goodput: each confirmation run's load ladder (its steps are cells above)
            answers = [c.capacity for run in best.runs for c in run.capacities]
            best_block["capacity"] = {
                "unit": ladder_unit(outcome),
                "runs": ladders,
                # the confirmed capacity's spread over the runs (max / min - 1) and the ladder's resolution
                "run_capacities": answers,
                "spread": capacity_spread(answers),
                "resolution": ladder_resolution(
                    [c for run in best.runs for c in run.capacities],
                    spec.benchmark.capacity.tolerance if spec.benchmark.capacity else 0.05,
                ),
            }
    baseline = outcome.baseline
    return json_safe(
        {
            "task": spec.task_name,
            "mode": outcome.mode,  # "check": the baseline's configuration measured without a search
            "description": spec.description,
            "verdict": outcome.verdict.as_dict(),
            "passed": outcome.verdict.passed,
            "objective": {
                "name": spec.optimization.objective,
                "direction": spec.optimization.direction,
                "per_gpu": spec.optimization.per_gpu,
            },
            "pareto": pareto,
            "best": best_block,
            "slo_checks": [slo_check_dict(c) for c in outcome.slo_checks],
            "vs_defaults": _defaults_block(outcome, lines.versus_defaults),
            "trials": outcome.counts.as_dict(),
            "screening": screening_block(outcome, lines.screening),
            "cost": {**outcome.cost.as_dict(), "text": lines.cost},
            "failure_counts": dict(outcome.failure_counts),
            "baseline": {
                "text": lines.baseline,
                "comparison": baseline.as_dict() if baseline is not None else None,
                "recorded": outcome.new_baseline is not None,
            },
            "stopped_early": outcome.stopped_early,
            "environment": environment,
            **explained,
        }
    )


def _defaults_block(outcome: TaskOutcome, text: str | None) -> dict[str, Any] | None:
    """SGLang's defaults, confirmed like the best, and how the chosen best compares (with the p-value)."""
    versus = outcome.defaults
    if versus is None:
        return None
    confirmed = versus.confirmation
    return {
        "trial": versus.trial.number,
        "params": versus.trial.params,
        "left_to_server": list(versus.trial.server_chose),
        "failure": versus.trial.failure,
        "objective": confirmed.score.objective if confirmed else None,
        "meets_slos": confirmed.score.meets_slos if confirmed else None,
        "confirmation_runs": len(confirmed.runs) if confirmed else 0,
        "gain": versus.gain,
        "p_value": versus.p_value,
        "significant": versus.significant,
        "defaults_chosen": versus.defaults_chosen,
        "eligible": versus.eligible,
        "text": text,
    }


#: The fewest feasible measured trials the fANOVA importance is computed from; below it the report says so.
MIN_IMPORTANCE_TRIALS = 6


def importance_trials(outcome: TaskOutcome) -> tuple[list[Any], list[str]]:
    """(the feasible measured trials as Optuna trials of the spec's space, the parameters that varied among
    them): what the fANOVA importance rests on."""
    import optuna

    distributions = dict(outcome.distributions)
    if not distributions:
        return [], []
    trials = []
    for record in outcome.trials:
        if not (record.measured and record.feasible and math.isfinite(record.value)):
            continue
        if set(record.params) != set(distributions):
            continue  # measured under another space (a resumed study) or left to the server: not comparable
        try:
            trials.append(
                optuna.trial.create_trial(params=record.params, distributions=distributions, value=record.value)
            )
        except ValueError:
            continue
    varied = [n for n in distributions if len({repr(t.params[n]) for t in trials}) > 1]
    return trials, varied


def param_importances(outcome: TaskOutcome, *, min_trials: int = MIN_IMPORTANCE_TRIALS) -> dict[str, float] | None:
    """fANOVA importances over the feasible measured trials; None when there are too few to say anything."""
    import optuna

    trials, varied = importance_trials(outcome)
    if len(trials) < min_trials or not varied:
        return None
    study = optuna.create_study(direction=outcome.spec.optimization.direction)
    study.add_trials(trials)
    try:
        importances = optuna.importance.get_param_importances(study, params=varied, normalize=True)
    except (RuntimeError, ValueError):  # e.g. every value equal
        return None
    return {name: float(value) for name, value in importances.items()}
