"""Regression baselines: record the confirmed best next to its spec, compare later runs with it.

A metric regressed when it got worse by more than the tolerance (default 10%) AND the change is statistically
significant: both conditions, as asv does. Magnitude alone flags noise; significance alone flags shifts too
small to matter. A baseline is recorded from ``regression.baseline_runs`` (default 5) confirmation runs.

Significance is a one-sided two-sample t-test on per-run values (each confirmation run is one server launch),
Holm-adjusted over all (metric, cell) tests of the comparison, at ``ALPHA`` = 0.05. The run is the independent
unit: requests within one run share that launch's conditions (the simulator's default run-to-run noise is ~3%,
and real servers vary from launch to launch too), so a rank
test over pooled requests would be overconfident: it called an unchanged rerun a regression with p = 5e-8.
The magnitude is measured on the pooled samples. A first comparison in which any metric is worse beyond the
tolerance, significant or not, is *ambiguous*: the caller adds one confirmation run and compares again, and
that answer is final (a regression must show twice, so one unlucky run does not fail a build).

Compared: the objective's metric and every SLO metric, in every (scenario, load) cell.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_autotuner import __version__

if TYPE_CHECKING:
    from pytest_autotuner.core.metrics import BenchResult, CellMetrics
    from pytest_autotuner.core.session import Confirmation
    from pytest_autotuner.core.spec import TaskSpec

__all__ = [
    "ALPHA",
    "FINGERPRINT_KEYS",
    "BaselineComparison",
    "MetricChange",
    "baseline_path",
    "compare",
    "fingerprint",
    "load_baseline",
    "make_baseline",
    "write_baseline",
]

FORMAT_VERSION = 1
#: Fingerprint fields that must match for a comparison to mean something (tool version and date need not).
FINGERPRINT_KEYS = ("runtime", "image", "image_digest", "model", "gpu", "gpu_count", "driver", "sglang_version")
_SAMPLE_METRICS = ("ttft", "tpot", "e2e")


def baseline_path(spec_path: Path) -> Path:
    """``tuning_specs/<stem>.baseline.json`` next to the spec."""
    stem = spec_path.name.split(".")[0]
    return spec_path.with_name(f"{stem}.baseline.json")


def fingerprint(spec: TaskSpec, runtime: str, server_info: dict[str, Any], *, image_digest: str = "") -> dict[str, Any]:
    """What the numbers depend on besides the flags: where and on what they were measured."""
    if runtime == "sim":
        gpu, count, image = f"sim-{spec.simulator.gpu}", spec.simulator.num_gpus, ""
    else:
        gpu = str(server_info.get("gpu_name", "")) or "unknown"
        count = len(spec.gpus) if spec.gpus else int(server_info.get("gpu_count", 0) or 0)
        image = spec.runtime_image_tag if runtime == "docker" else ""
    return {
        "runtime": runtime,
        "image": image,
        "image_digest": image_digest,
        "model": spec.model.id_or_path if spec.model else "",
        "gpu": gpu,
        "gpu_count": count,
        "driver": str(server_info.get("driver_version", "")),
        "sglang_version": str(server_info.get("version", "")),
        "tool_version": __version__,
    }


def _run_record(cell: CellMetrics) -> dict[str, Any]:
    record: dict[str, Any] = {m: [round(float(v), 6) for v in cell.samples(m)] for m in _SAMPLE_METRICS}
    record["output_throughput"] = round(cell.output_throughput, 3)
    return record


def _cells_by_key(runs: list[BenchResult]) -> dict[tuple[str, int], list[CellMetrics]]:
    by_key: dict[tuple[str, int], list[CellMetrics]] = {}
    for run in runs:
        for cell in run.cells:
            by_key.setdefault((cell.scenario, cell.concurrency), []).append(cell)
    return by_key


def make_baseline(spec: TaskSpec, best: Confirmation, fp: dict[str, Any]) -> dict[str, Any]:
    """The baseline document for a confirmed best configuration."""
    return {
        "format": FORMAT_VERSION,
        "task_name": spec.task_name,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "objective": spec.optimization.objective,
        "objective_value": best.score.objective,
        "best_params": best.params,
        "runs": len(best.runs),
        "fingerprint": fp,
        "cells": [
            {
                "scenario": scenario,
                "concurrency": concurrency,
                "label": cells[0].label,
                "runs": [_run_record(cell) for cell in cells],
            }
            for (scenario, concurrency), cells in _cells_by_key(best.runs).items()
        ],
    }


def write_baseline(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=1) + "\n")
    tmp.replace(path)  # atomic: a crash never leaves half a baseline


def load_baseline(path: Path) -> dict[str, Any] | None:
    """The baseline document, None when there is none; ValueError naming the file when it is unreadable."""
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); fix or delete it") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_VERSION or "cells" not in document:
        raise ValueError(
            f"{path}: not a baseline of format {FORMAT_VERSION}; re-record it with --autotune-update-baseline"
        )
    return document


@dataclass(frozen=True)
class MetricChange:
    """One metric in one cell, baseline against now."""

    metric: str  # e.g. "e2e p90", "output_throughput"
    cell: str
    baseline: float
    now: float
    change: float  # relative, signed: +0.15 = 15% higher
    worse: float  # relative change in the bad direction (negative = better)
    p_value: float  # Holm-adjusted, one-sided "now is worse"
    tolerance: float
    p_value_better: float = math.nan  # Holm-adjusted, one-sided "now is better"

    @property
    def regressed(self) -> bool:
        return self.worse > self.tolerance and self.p_value < ALPHA

    @property
    def improved(self) -> bool:
        return -self.worse > self.tolerance and self.p_value_better < ALPHA

    @property
    def ambiguous(self) -> bool:
        """Worse beyond the tolerance, significant or not: worth one more run before deciding."""
        return self.worse > self.tolerance


ALPHA = 0.05


@dataclass
class BaselineComparison:
    """The verdict of comparing a confirmed best with the recorded baseline."""

    path: str
    changes: list[MetricChange] = field(default_factory=list)
    skipped_reason: str = ""  # fingerprint mismatch or no baseline
    fingerprint_mismatch: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    extra_run: bool = False

    @property
    def compared(self) -> bool:
        return not self.skipped_reason

    @property
    def regressions(self) -> list[MetricChange]:
        return [c for c in self.changes if c.regressed]

    @property
    def improvements(self) -> list[MetricChange]:
        return [c for c in self.changes if c.improved]

    @property
    def ambiguous(self) -> bool:
        return any(c.ambiguous for c in self.changes)

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    @property
    def summary(self) -> str:
        if not self.compared:
            return self.skipped_reason
        if self.regressed:
            return f"{len(self.regressions)} metric(s) regressed against {self.path}"
        if self.improvements:
            return f"no regression; {len(self.improvements)} metric(s) improved against {self.path}"
        return f"no regression against {self.path}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "compared": self.compared,
            "regressed": self.regressed,
            "summary": self.summary,
            "extra_run": self.extra_run,
            "fingerprint_mismatch": {k: list(v) for k, v in self.fingerprint_mismatch.items()},
            "changes": [{**c.__dict__, "regressed": c.regressed, "improved": c.improved} for c in self.changes],
        }


def _p_worse(base: list[float], now: list[float], higher_is_worse: bool) -> float:
    """One-sided Welch t-test p-value for 'now is worse than base' over per-run values (NaN below 2 runs)."""
    from scipy.stats import ttest_ind

    if len(base) < 2 or len(now) < 2:
        return math.nan
    if np.std(base) == 0 and np.std(now) == 0:  # noise-free: the change is certain when there is one
        return 0.0 if (np.mean(now) > np.mean(base)) == higher_is_worse and np.mean(now) != np.mean(base) else 1.0
    alternative = "greater" if higher_is_worse else "less"
    # pooled variance: both sides are launches of one configuration, and df = n1 + n2 - 2 matters at n ~ 3
    return float(ttest_ind(now, base, equal_var=True, alternative=alternative).pvalue)


def _stat(values: list[float], statistic: str) -> float:
    if not values:
        return math.nan
    if statistic == "mean":
        return float(np.mean(values))
    return float(np.percentile(values, float(statistic.removeprefix("p"))))


def _values(runs: list[dict[str, Any]], metric: str, statistic: str) -> tuple[float, list[float]]:
    """(pooled value, per-run values) of a metric from run records."""
    if metric == "output_throughput":
        per_run = [float(r["output_throughput"]) for r in runs]
        return float(np.mean(per_run)), per_run
    pooled = [v for r in runs for v in r[metric]]
    return _stat(pooled, statistic), [_stat(r[metric], statistic) for r in runs]


def compare(
    baseline: dict[str, Any],
    spec: TaskSpec,
    best: Confirmation,
    fp: dict[str, Any],
    *,
    path: str,
    tolerance: float = 0.10,
    tolerances: dict[str, float] | None = None,
) -> BaselineComparison:
    """Compare the confirmed best with the baseline document (pure: no I/O)."""
    recorded = baseline.get("fingerprint", {})
    mismatch = {k: (recorded.get(k), fp.get(k)) for k in FINGERPRINT_KEYS if recorded.get(k) != fp.get(k)}
    if mismatch:
        fields = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in mismatch.items())
        return BaselineComparison(
            path, skipped_reason=f"fingerprint differs from {path} ({fields})", fingerprint_mismatch=mismatch
        )
    tolerances = tolerances or {}
    base_cells = {(c["scenario"], c["concurrency"]): c for c in baseline["cells"]}
    metrics: list[tuple[str, str]] = []  # (metric, statistic)
    if spec.optimization.objective == "maximize_throughput":
        metrics.append(("output_throughput", "run"))
    else:
        objective_metric = {"minimize_latency": "e2e", "minimize_ttft": "ttft", "minimize_tpot": "tpot"}
        metrics.append((objective_metric[spec.optimization.objective], "mean"))
    if spec.slo:
        metrics += [(m, s) for m, s, _limit in spec.slo.checks() if (m, s) not in metrics]
    verdict = BaselineComparison(path)
    for key, cells in _cells_by_key(best.runs).items():
        base = base_cells.get(key)
        if base is None:
            continue
        now_runs = [_run_record(cell) for cell in cells]
        for metric, statistic in metrics:
            name = metric if statistic == "run" else f"{metric} {statistic}"
            tol = tolerances.get(name, tolerances.get(metric, tolerance))
            higher_is_worse = metric != "output_throughput"
            before, before_runs = _values(base["runs"], metric, statistic)
            now, now_per_run = _values(now_runs, metric, statistic)
            change = (now - before) / before if before else 0.0
            worse = change if higher_is_worse else -change
            p = _p_worse(before_runs, now_per_run, higher_is_worse)
            verdict.changes.append(MetricChange(name, cells[0].label, before, now, change, worse, p, tol))
    worse_p = _holm([c.p_value for c in verdict.changes])
    better_p = _holm([1.0 - c.p_value for c in verdict.changes])  # the complementary one-sided tests
    verdict.changes = [
        dataclasses.replace(c, p_value=pw, p_value_better=pb)
        for c, pw, pb in zip(verdict.changes, worse_p, better_p, strict=True)
    ]
    return verdict


def _holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values: every metric in every cell is a test, so the family-wise error stays at ALPHA."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (math.isnan(p_values[i]), p_values[i]))
    adjusted = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(order):
        if math.isnan(p_values[i]):
            continue
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
