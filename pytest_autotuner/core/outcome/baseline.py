"""Regression baselines: the recorded reference of a confirmed best, and the comparison of a later run with it.

A metric regressed when it got worse by more than the tolerance (default 10%) AND the change is statistically
significant: both conditions, as asv does. Magnitude alone flags noise; significance alone flags shifts too
small to matter. A baseline is recorded from ``regression.baseline_runs`` (default 5) confirmation runs.

Significance is ``stats.p_worse`` on per-run values (each confirmation run is one server launch), Holm-adjusted
over all (metric, cell) tests of the comparison, at ``ALPHA`` = 0.05. The run is the independent unit: requests
within one run share that launch's conditions, so a rank test over pooled requests would be overconfident (it
called an unchanged rerun a regression with p = 5e-8). The magnitude is measured on the pooled samples. A first
comparison in which any metric is worse beyond the tolerance, significant or not, is *ambiguous*: the caller adds
one confirmation run and compares again, and that answer is final (a regression must show twice, so one unlucky
run does not fail a build).

Compared: the objective's metric and every SLO metric, in every cell (matched on its ``CellKey``).

This module is pure: the document is parsed and built here; reading and writing the file is the plugin's
(``pytest_autotuner.baseline_file``).

Why one module of about 440 lines: the baseline's types, their JSON form and the comparison use the same per-metric
statistics; split apart, each half would reach into the other.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pytest_autotuner import __version__
from pytest_autotuner.core.measure.capacity import ladder_resolution
from pytest_autotuner.core.measure.plan import CellKey
from pytest_autotuner.core.measure.scoring import OBJECTIVE_METRICS, fixed_cells, gpu_divisor, objective_value
from pytest_autotuner.core.measure.stats import ALPHA, holm, p_worse
from pytest_autotuner.core.search.gpu_pool import gpus_needed

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.metrics import BenchResult, CellMetrics
    from pytest_autotuner.core.outcome.records import Confirmation
    from pytest_autotuner.core.spec.task_spec import TaskSpec

__all__ = [
    "ALPHA",
    "FINGERPRINT_KEYS",
    "Baseline",
    "BaselineComparison",
    "MetricChange",
    "capacity_change",
    "compare",
    "fingerprint",
    "make_baseline",
    "parse_baseline",
]

FORMAT_VERSION = 2  # 2 adds cells' request_rate; format 1 files (closed loop only) read the same
_READABLE_FORMATS = (1, FORMAT_VERSION)
#: Fingerprint fields that must match for a comparison to mean something (tool version and date need not).
#: The simulator's speed-up, noise, GPU, performance-model version, pricing (kernel tables or roofline) and token
#: counting change what it measures, so they count.
FINGERPRINT_KEYS = (
    "runtime",
    "image",
    "image_digest",
    "model",
    "gpu",
    "gpu_count",
    "driver",
    "sglang_version",
    "sim_speedup",
    "sim_noise",
    "sim_model_version",
    "sim_pricing",
    "sim_token_counting",
)
_SAMPLE_METRICS = ("ttft", "tpot", "e2e")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunRecord(_Strict):
    """One confirmation run of one cell: raw per-request samples (seconds) and the run's throughput."""

    ttft: list[float]
    tpot: list[float]
    e2e: list[float]
    output_throughput: float


class BaselineCell(_Strict):
    scenario: str
    concurrency: int = Field(ge=0)
    request_rate: float | None = Field(None, gt=0)
    label: str = ""
    runs: list[RunRecord]

    @property
    def key(self) -> CellKey:
        return CellKey(self.scenario, self.concurrency, self.request_rate)


class Baseline(_Strict):
    """The committed record of a confirmed best: ``tuning_specs/<stem>.baseline.json``."""

    format: int = FORMAT_VERSION
    task_name: str
    created: str
    objective: str
    objective_value: float | None
    best_params: dict[str, bool | int | float | str]
    runs: int = Field(ge=1)
    fingerprint: dict[str, Any]
    cells: list[BaselineCell]
    #: maximize_goodput: each confirmation run's capacity (the objective, per GPU under per_gpu)
    capacity_runs: list[float] | None = None
    #: maximize_goodput: the relative step two correct answers may differ by (``capacity.ladder_resolution``)
    capacity_resolution: float | None = None

    def cell(self, key: CellKey) -> BaselineCell | None:
        return next((c for c in self.cells if c.key == key), None)


def parse_baseline(document: Any, where: str) -> Baseline:
    """The baseline in ``document`` (parsed JSON); ValueError naming ``where``, the field and the value."""
    if not isinstance(document, dict) or document.get("format") not in _READABLE_FORMATS:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ValueError(
            f"{where}: not a baseline this version reads (format {found!r}; readable: "
            f"{', '.join(map(str, _READABLE_FORMATS))}); re-record it with --autotune-update-baseline"
        )
    try:
        return Baseline.model_validate(document)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(document)"
        value = repr(first.get("input"))[:80]
        raise ValueError(
            f"{where}: `{field}` = {value}: {first['msg']} ({err.error_count()} problem(s)); "
            "fix the file or re-record it with --autotune-update-baseline"
        ) from None


def fingerprint(spec: TaskSpec, runtime: Mapping[str, str], server_info: Mapping[str, Any]) -> dict[str, Any]:
    """What the numbers depend on besides the flags: where and on what they were measured.

    ``runtime``: the runtime's own facts (``runtime``, ``image``, ``image_digest``); ``server_info``: what the
    server said about itself (``/server_info``) in the confirmation runs.
    """
    kind = runtime.get("runtime", spec.runtime)
    sim = kind == "sim"
    if sim:
        gpu, count = f"sim-{server_info.get('sim_gpu') or spec.simulator.gpu}", spec.simulator.num_gpus
    else:
        gpu = str(server_info.get("gpu_name", "")) or "unknown"
        count = len(spec.gpus) if spec.gpus else int(server_info.get("gpu_count", 0) or 0)
    return {
        "runtime": kind,
        "image": runtime.get("image", ""),
        "image_digest": runtime.get("image_digest", ""),
        "model": spec.model.id_or_path if spec.model else "",
        "gpu": gpu,
        "gpu_count": count,
        "driver": str(server_info.get("driver_version", "")),
        "sglang_version": str(server_info.get("version", "")) or runtime.get("sglang_version", ""),
        "sim_speedup": _text(server_info.get("sim_speedup")) if sim else "",
        "sim_noise": _text(server_info.get("sim_noise")) if sim else "",
        "sim_model_version": _text(server_info.get("sim_model_version")) if sim else "",
        **(_sim_facts(server_info) if sim else {}),
        "tool_version": __version__,
    }


def _sim_facts(server_info: Mapping[str, Any]) -> dict[str, str]:
    return {"sim_pricing": _text(server_info.get("sim_pricing")), "sim_token_counting": _token_counting(server_info)}


def _token_counting(server_info: Mapping[str, Any]) -> str:
    """How the simulator counted prompt tokens: the word rule, or a tokenizer by its content (not its path)."""
    digest = server_info.get("sim_tokenizer_sha256")
    return f"tokenizer sha256:{digest}" if digest else str(server_info.get("sim_token_counting") or "word rule")


def _text(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _run_record(cell: CellMetrics) -> RunRecord:
    samples = {m: [round(float(v), 6) for v in cell.samples(m)] for m in _SAMPLE_METRICS}
    return RunRecord(**samples, output_throughput=round(cell.output_throughput, 3))


def _cells_by_key(runs: Sequence[BenchResult]) -> dict[CellKey, list[CellMetrics]]:
    """The runs' fixed-load cells by key; a capacity ladder's steps are not kept or compared: each run bisects to
    its own loads, so their keys do not line up (its capacity is, ``_capacity_change``)."""
    by_key: dict[CellKey, list[CellMetrics]] = {}
    for run in runs:
        for cell in fixed_cells(run):
            by_key.setdefault(cell.key, []).append(cell)
    return by_key


def _capacity_runs(spec: TaskSpec, best: Confirmation) -> list[float]:
    """Each run's capacity as the objective counts it (per GPU under ``per_gpu``)."""
    name = spec.optimization.capacity_objective or spec.optimization.objective
    divisor = gpu_divisor(spec.optimization, gpus_needed(best.params), name)
    return [round(objective_value(run, name, divisor), 6) for run in best.runs]


def _capacity_resolution(spec: TaskSpec, best: Confirmation) -> float:
    tolerance = spec.benchmark.capacity.tolerance if spec.benchmark.capacity is not None else 0.05
    return round(ladder_resolution([c for run in best.runs for c in run.capacities], tolerance), 6)


def capacity_change(
    name: str,
    key: CellKey,
    before_runs: Sequence[float],
    now_runs: Sequence[float],
    tolerance: float,
    resolution: float,
) -> MetricChange:
    """The runs' capacities against the baseline's (lower = a regression). A ladder answers the held end of a
    bracket up to ``resolution`` wide (``ladder_resolution``), so two runs of one server may differ by that much
    with nothing changed: the change must pass the tolerance plus the resolution, and the runs' spread (the
    t-test over runs, as for other metrics)."""
    before, now = float(np.mean(before_runs)), float(np.mean(now_runs))
    change = (now - before) / before if before else 0.0
    p = p_worse(before_runs, now_runs, higher_is_worse=False)
    return MetricChange(name, key, before, now, change, -change, p, tolerance + resolution)


def _capacity_change(baseline: Baseline, spec: TaskSpec, best: Confirmation) -> MetricChange | None:
    """maximize_goodput: ``capacity_change`` of the confirmed runs against the baseline's. The ladder's cells are
    not compared: each run bisects to its own loads, so their keys do not line up."""
    if not baseline.capacity_runs:
        return None
    name = "capacity" + (" per GPU" if spec.optimization.per_gpu else "")
    tol = spec.regression.metrics.get(name, spec.regression.metrics.get("capacity", spec.regression.tolerance))
    resolution = max(baseline.capacity_resolution or 0.0, _capacity_resolution(spec, best))
    key = CellKey(" + ".join(spec.benchmark.traffic_scenarios), 0)
    return capacity_change(name, key, baseline.capacity_runs, _capacity_runs(spec, best), tol, resolution)


def make_baseline(spec: TaskSpec, best: Confirmation, fp: dict[str, Any]) -> Baseline:
    """The baseline of a confirmed best configuration."""
    return Baseline(
        task_name=spec.task_name,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        objective=spec.optimization.objective,
        objective_value=best.score.objective,
        best_params=dict(best.params),
        runs=len(best.runs),
        fingerprint=fp,
        capacity_runs=_capacity_runs(spec, best) if spec.optimization.uses_capacity else None,
        capacity_resolution=_capacity_resolution(spec, best) if spec.optimization.uses_capacity else None,
        cells=[
            BaselineCell(
                scenario=key.scenario,
                concurrency=key.concurrency,
                request_rate=key.rate,
                label=key.label,
                runs=[_run_record(cell) for cell in cells],
            )
            for key, cells in _cells_by_key(best.runs).items()
        ],
    )


@dataclass(frozen=True)
class MetricChange:
    """One metric in one cell, baseline against now."""

    metric: str  # e.g. "e2e p90", "output_throughput"
    cell: CellKey
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

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "cell": self.cell.label,
            "baseline": self.baseline,
            "now": self.now,
            "change": self.change,
            "worse": self.worse,
            "p_value": self.p_value,
            "p_value_better": self.p_value_better,
            "tolerance": self.tolerance,
            "regressed": self.regressed,
            "improved": self.improved,
        }


@dataclass(frozen=True)
class BaselineComparison:
    """The confirmed best against the recorded baseline (or why they were not compared)."""

    path: str
    changes: tuple[MetricChange, ...] = ()
    skipped_reason: str = ""  # fingerprint mismatch
    fingerprint_mismatch: tuple[tuple[str, Any, Any], ...] = ()  # (field, recorded, now)
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
            "fingerprint_mismatch": {k: [a, b] for k, a, b in self.fingerprint_mismatch},
            "changes": [c.as_dict() for c in self.changes],
        }


def _stat(values: list[float], statistic: str) -> float:
    if not values:
        return math.nan
    if statistic == "mean":
        return float(np.mean(values))
    return float(np.percentile(values, float(statistic.removeprefix("p"))))


def _values(runs: list[RunRecord], metric: str, statistic: str) -> tuple[float, list[float]]:
    """(pooled value, per-run values) of a metric from run records."""
    if metric == "output_throughput":
        per_run = [r.output_throughput for r in runs]
        return float(np.mean(per_run)), per_run
    pooled = [v for r in runs for v in getattr(r, metric)]
    return _stat(pooled, statistic), [_stat(getattr(r, metric), statistic) for r in runs]


def compared_metrics(spec: TaskSpec) -> list[tuple[str, str]]:
    """(metric, statistic) pairs a comparison covers: the objective's, then every SLO's."""
    metric = OBJECTIVE_METRICS[spec.optimization.objective][0]
    # a capacity is not a cell metric: it is compared over runs (``_capacity_change``), not per cell
    metrics = (
        [] if spec.optimization.capacity_primary else [(metric, "run" if metric == "output_throughput" else "mean")]
    )
    if spec.slo:
        metrics += [(m, s) for m, s, _limit in spec.slo.checks() if (m, s) not in metrics]
    return metrics


def compare(
    baseline: Baseline,
    spec: TaskSpec,
    best: Confirmation,
    fp: Mapping[str, Any],
    *,
    path: str,
    extra_run: bool = False,
) -> BaselineComparison:
    """Compare the confirmed best with the baseline (pure: no I/O)."""
    recorded = baseline.fingerprint
    mismatch = tuple((k, recorded.get(k), fp.get(k)) for k in FINGERPRINT_KEYS if recorded.get(k) != fp.get(k))
    if mismatch:
        fields = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in mismatch)
        return BaselineComparison(
            path, skipped_reason=f"fingerprint differs from {path} ({fields})", fingerprint_mismatch=mismatch
        )
    tolerance, tolerances = spec.regression.tolerance, spec.regression.metrics
    changes: list[MetricChange] = []
    if spec.optimization.uses_capacity:
        capacity = _capacity_change(baseline, spec, best)
        changes += [capacity] if capacity is not None else []
    # the fixed cells (with goodput among several objectives, beside the capacity; none with goodput alone)
    for key, cells in _cells_by_key(best.runs).items():
        base = baseline.cell(key)
        if base is None:
            continue
        now_runs = [_run_record(cell) for cell in cells]
        for metric, statistic in compared_metrics(spec):
            name = metric if statistic == "run" else f"{metric} {statistic}"
            tol = tolerances.get(name, tolerances.get(metric, tolerance))
            higher_is_worse = metric != "output_throughput"
            before, before_runs = _values(base.runs, metric, statistic)
            now, now_per_run = _values(now_runs, metric, statistic)
            change = (now - before) / before if before else 0.0
            worse = change if higher_is_worse else -change
            p = p_worse(before_runs, now_per_run, higher_is_worse=higher_is_worse)
            changes.append(MetricChange(name, key, before, now, change, worse, p, tol))
    worse_p = holm([c.p_value for c in changes])
    better_p = holm([1.0 - c.p_value for c in changes])  # the complementary one-sided tests
    adjusted = tuple(
        MetricChange(c.metric, c.cell, c.baseline, c.now, c.change, c.worse, pw, c.tolerance, pb)
        for c, pw, pb in zip(changes, worse_p, better_p, strict=True)
    )
    return BaselineComparison(path, adjusted, extra_run=extra_run)
