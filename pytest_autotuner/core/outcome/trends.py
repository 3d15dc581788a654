"""The history of a spec's runs as data: one ``HistoryEntry`` per run, and the ``Trend`` of each metric over runs.

A history entry is what one run found and decided, in the words of its ``TaskOutcome``: where it ran (commit,
branch, date, image digest, SGLang version, GPU, fingerprint), the confirmed value of the objective and of every
compared metric (the objective's metric and every SLO metric, per cell, with the baseline's value and whether it
regressed), and the verdict. Trends read entries back and never recompute a verdict.

Pure: the edge ``pytest_autotuner.history`` reads and writes the files (one JSON file per run), and the report
draws the trends.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from pytest_autotuner.core.measure.scoring import fixed_cells
from pytest_autotuner.core.outcome.baseline import FINGERPRINT_KEYS, compared_metrics
from pytest_autotuner.core.outcome.verdict import ReasonKind

if TYPE_CHECKING:
    from pytest_autotuner.core.outcome.outcome import TaskOutcome

__all__ = [
    "HISTORY_FORMAT",
    "HistoryEntry",
    "MetricPoint",
    "RunInfo",
    "Trend",
    "fingerprint_changes",
    "fingerprint_id",
    "history_entry",
    "parse_history_entry",
    "trends",
]

HISTORY_FORMAT = 1
OBJECTIVE = "objective"


@dataclass(frozen=True)
class RunInfo:
    """Where a run came from: the commit and branch under test and when it ran (ISO 8601, UTC)."""

    commit: str
    branch: str
    date: str


class _Record(BaseModel):
    # a newer writer may add fields: an older reader keeps reading what it knows
    model_config = ConfigDict(extra="ignore", frozen=True)


class MetricPoint(_Record):
    """One metric of one run: ``metric`` is "objective" or a compared metric ("e2e p90"), ``cell`` its cell."""

    metric: str
    cell: str = ""
    value: float | None
    baseline: float | None = None  # the compared baseline's value (None: not compared)
    threshold: float | None = None  # the SLO's threshold, when the metric is an SLO's
    regressed: bool = False

    @property
    def series(self) -> str:
        return f"{self.metric} · {self.cell}" if self.cell else self.metric


class HistoryEntry(_Record):
    """One run of one spec, as the history keeps it."""

    format: int = HISTORY_FORMAT
    task: str
    slug: str
    mode: str  # "tune" or "check"
    date: str
    commit: str
    branch: str
    runtime: str
    image: str = ""
    image_digest: str = ""
    sglang_version: str = ""
    gpu: str = ""
    gpu_count: int = 0
    fingerprint: dict[str, Any]
    fingerprint_id: str
    objective_name: str
    direction: str
    objective: float | None
    params: dict[str, bool | int | float | str] = {}
    status: str  # the verdict's: PASS or FAIL
    headline: str
    reasons: list[str] = []  # the verdict's reason kinds
    regressed: bool = False
    baseline_compared: bool = False
    points: list[MetricPoint] = []


def parse_history_entry(document: Any, where: str) -> HistoryEntry:
    """The entry in ``document`` (parsed JSON); ValueError naming ``where`` and the first bad field."""
    if not isinstance(document, dict) or document.get("format") != HISTORY_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ValueError(f"{where}: not a history entry this version reads (format {found!r}, expected 1)")
    try:
        return HistoryEntry.model_validate(document)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise ValueError(f"{where}: `{field}`: {first['msg']}") from None


def fingerprint_id(fingerprint: Mapping[str, Any]) -> str:
    """A short hash of the fingerprint fields a baseline comparison needs to match: equal ids, comparable runs."""
    comparable = {k: fingerprint.get(k) for k in FINGERPRINT_KEYS}
    return hashlib.sha256(json.dumps(comparable, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def history_entry(outcome: TaskOutcome, run: RunInfo) -> HistoryEntry:
    """What the history keeps of ``outcome`` (its confirmed metrics, baseline comparison and verdict)."""
    spec = outcome.spec
    opt = spec.optimization
    best = outcome.best
    comparison = outcome.baseline
    compared = comparison is not None and comparison.compared
    changes = {(c.metric, c.cell.label): c for c in comparison.changes} if compared and comparison else {}
    thresholds = {(c.name, c.cell): c.threshold for c in outcome.slo_checks}
    regressed = any(r.kind is ReasonKind.REGRESSION for r in outcome.verdict.reasons)
    points = [
        MetricPoint(
            metric=OBJECTIVE,
            value=_finite(best.score.objective) if best else None,
            baseline=_finite(outcome.baseline_objective) if compared else None,
            regressed=regressed,
        )
    ]
    if best is not None:  # the fixed cells (a ladder's differ run to run: no per-cell trends)
        for cell in fixed_cells(best.merged):
            for metric, statistic in compared_metrics(spec):
                name = metric if statistic == "run" else f"{metric} {statistic}"
                change = changes.get((name, cell.label))
                if change is not None:
                    value: float | None = change.now
                elif metric == "output_throughput":
                    value = cell.output_throughput
                else:
                    value = cell.summary(metric).stat(statistic)
                points.append(
                    MetricPoint(
                        metric=name,
                        cell=cell.label,
                        value=_finite(value),
                        baseline=_finite(change.baseline) if change else None,
                        threshold=thresholds.get((name, cell.label)),
                        regressed=bool(change and change.regressed),
                    )
                )
    fp = dict(outcome.fingerprint)
    return HistoryEntry(
        task=spec.task_name,
        slug=spec.slug,
        mode=outcome.mode,
        date=run.date,
        commit=run.commit,
        branch=run.branch,
        runtime=outcome.runtime,
        image=str(fp.get("image", "")),
        image_digest=str(fp.get("image_digest", "")),
        sglang_version=str(fp.get("sglang_version", "")),
        gpu=str(fp.get("gpu", "")),
        gpu_count=int(fp.get("gpu_count", 0) or 0),
        fingerprint=fp,
        fingerprint_id=fingerprint_id(fp),
        objective_name=opt.objective,
        direction=opt.direction,
        objective=points[0].value,
        params=dict(best.params) if best else {},
        status=outcome.verdict.status,
        headline=outcome.verdict.headline,
        reasons=[r.kind.value for r in outcome.verdict.reasons],
        regressed=regressed,
        baseline_compared=compared,
        points=points,
    )


@dataclass(frozen=True)
class Trend:
    """One metric over runs, oldest first; ``runs`` are 1-based positions in the history shown."""

    metric: str
    cell: str
    runs: tuple[int, ...]
    values: tuple[float | None, ...]
    baselines: tuple[float | None, ...]
    thresholds: tuple[float | None, ...]
    regressed: tuple[bool, ...]
    objective_name: str = ""  # for the objective's trend: which objective (e.g. "maximize_throughput")

    @property
    def title(self) -> str:
        if self.metric == OBJECTIVE and self.objective_name:
            return f"{OBJECTIVE} ({self.objective_name})"
        return f"{self.metric} · {self.cell}" if self.cell else self.metric

    @property
    def regressed_runs(self) -> tuple[int, ...]:
        return tuple(r for r, bad in zip(self.runs, self.regressed, strict=True) if bad)


def _ordered(entries: Sequence[HistoryEntry]) -> list[HistoryEntry]:
    return sorted(entries, key=lambda e: e.date)


def trends(entries: Sequence[HistoryEntry]) -> list[Trend]:
    """Every metric's trend over ``entries`` (sorted by date): the objective first, then metrics as first seen.

    A run that did not measure a metric has None there, so every trend has one position per run.
    """
    ordered = _ordered(entries)
    keys: list[tuple[str, str]] = [(OBJECTIVE, "")]
    for entry in ordered:
        keys += [(p.metric, p.cell) for p in entry.points if (p.metric, p.cell) not in keys]
    result = []
    for metric, cell in keys:
        found = [next((p for p in e.points if (p.metric, p.cell) == (metric, cell)), None) for e in ordered]
        result.append(
            Trend(
                metric=metric,
                cell=cell,
                runs=tuple(range(1, len(ordered) + 1)),
                values=tuple(p.value if p else None for p in found),
                baselines=tuple(p.baseline if p else None for p in found),
                thresholds=tuple(p.threshold if p else None for p in found),
                regressed=tuple(bool(p and p.regressed) for p in found),
                objective_name=ordered[-1].objective_name if ordered and metric == OBJECTIVE else "",
            )
        )
    return result


def fingerprint_changes(entries: Sequence[HistoryEntry]) -> list[int]:
    """1-based positions of runs measured on another fingerprint than the run before them."""
    ordered = _ordered(entries)
    return [i + 1 for i in range(1, len(ordered)) if ordered[i].fingerprint_id != ordered[i - 1].fingerprint_id]
