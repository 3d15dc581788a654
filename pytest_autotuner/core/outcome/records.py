"""What a tuning session records: each trial as the report and the verdict read it (``TrialRecord``, from the
study), its cost (``TrialCost``: GPU-seconds held, and what early stopping saved), the progress event the plugin
prints (``TrialEvent``), a configuration's confirmation runs (``Confirmation``), and the ranking of measured
configurations (``by_configuration``: a configuration measured more than once by the mean of its runs).

Plain data, built by the session (``session.py``) and read by ``run_task`` and the renderers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.measure.metrics import BenchResult, CellSummary, json_safe
from pytest_autotuner.core.measure.scoring import TrialScore, rank_key
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, Params

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = [
    "Confirmation",
    "TrialCost",
    "TrialEvent",
    "TrialRecord",
    "best_so_far",
    "by_configuration",
    "trial_attrs",
    "trial_cost",
]


@dataclass(frozen=True)
class TrialCost:
    """What one trial cost on the GPUs it held, and what early stopping saved it (GPU-seconds)."""

    gpus: int = 0  # GPUs held (0: never launched)
    launch_s: float = 0.0  # wall seconds from the trial's start to its benchmark's
    benchmark_s: float = 0.0  # wall seconds from the benchmark's start to the end of the evaluate (teardown too)
    cells_run: int = 0
    cells_skipped: int = 0  # cells a pruned trial did not run
    saved_pruning: float = 0.0  # GPU-seconds: skipped cells at this trial's own seconds per cell
    saved_precision: float = 0.0  # GPU-seconds: cells the precision rule ended before their limits

    @property
    def gpu_seconds(self) -> float:
        return (self.launch_s + self.benchmark_s) * self.gpus

    @property
    def saved(self) -> float:
        return self.saved_pruning + self.saved_precision

    def as_attrs(self) -> dict[str, Any]:
        return {
            "gpus": self.gpus,
            "gpu_seconds": round(self.gpu_seconds, 3),
            "gpu_seconds_saved": round(self.saved, 3),
            "launch_s": round(self.launch_s, 3),
            "benchmark_s": round(self.benchmark_s, 3),
            "cells_run": self.cells_run,
            "cells_skipped": self.cells_skipped,
            "saved_pruning": round(self.saved_pruning, 3),
            "saved_precision": round(self.saved_precision, 3),
        }


def trial_cost(
    deadline: Deadline,
    ended: float,
    *,
    gpus: int,
    total_cells: int,
    pruned: bool,
    max_requests: int,
    max_time: float,
) -> TrialCost:
    """The cost of the trial ``deadline`` belonged to, ended at ``ended`` (``time.monotonic()``).

    Launch: from the deadline's start to ``Deadline.start_benchmark`` (the whole trial when the evaluate never
    marked it, e.g. a launch failure). Saved by pruning: the cells it skipped, each at the trial's own wall
    seconds per measured cell (the cells run at full length, or as long as precision let them, as the skipped
    ones would have). Saved by precision: for a cell that stopped early, its wall seconds times the share of its
    full length it did not run (full length: ``max_requests`` at the cell's own request rate, capped at
    ``max_time``; both in the cell's server seconds).
    """
    bench_start = deadline.benchmark_started
    cells = deadline.cells
    if bench_start is None:
        return TrialCost(gpus=gpus, launch_s=max(0.0, ended - deadline.started), cells_run=len(cells))
    launch = max(0.0, bench_start - deadline.started)
    benchmark = max(0.0, ended - bench_start)  # to the end of the evaluate: the teardown holds the GPUs too
    walls = [b - a for a, b in zip([bench_start, *deadline.cell_times], deadline.cell_times, strict=False)]
    skipped = max(0, total_cells - len(cells)) if pruned else 0
    per_cell = sum(walls) / len(walls) if walls else 0.0
    saved_precision = 0.0
    for cell, wall in zip(cells, walls, strict=True):
        if not cell.precision_stop or not (cell.duration > 0) or cell.requests <= 0:
            continue
        full = min(max_time, cell.duration * max_requests / cell.requests)
        saved_precision += wall * max(0.0, full / cell.duration - 1.0)
    return TrialCost(
        gpus=gpus,
        launch_s=launch,
        benchmark_s=benchmark,
        cells_run=len(cells),
        cells_skipped=skipped,
        saved_pruning=skipped * per_cell * gpus,
        saved_precision=saved_precision * gpus,
    )


@dataclass(frozen=True)
class TrialRecord:
    """One evaluated configuration as the study remembers it (also for trials of an earlier, resumed run)."""

    number: int
    params: Params
    value: float
    objective: float | None
    feasible: bool
    meets_slos: bool
    failure: str | None
    failure_message: str
    log_tail: str
    duration: float
    cells: tuple[CellSummary, ...]
    origin: str = ""  # "sglang_defaults" for the trial that measured SGLang's defaults
    server_chose: tuple[str, ...] = ()  # flags this trial left to the server (not passed at launch)
    gpu_seconds: float = 0.0  # GPUs held x wall seconds (``TrialCost``; 0 when the study did not record it)
    gpu_seconds_saved: float = 0.0  # by early stopping (pruning and precision)
    #: multi-objective: the score per objective of ``optimization.objectives`` (in that order) and the
    #: unpenalized objectives by name (None: not measured); empty for a single objective
    values: tuple[float, ...] = ()
    objectives: Mapping[str, float | None] = dataclasses.field(default_factory=dict)
    repeat_of: int | None = None  # a repeat run of this trial's configuration (``optimization.remeasure_best``)
    #: for a configuration measured more than once (``by_configuration``): the trials that measured it
    runs: tuple[int, ...] = ()

    @property
    def pruned(self) -> bool:
        """Stopped by early stopping after part of its cells (``core/measure/pruning.py``)."""
        return self.failure == FailureClass.PRUNED.value

    @property
    def measured(self) -> bool:
        """The trial produced a measurement (it may still miss an SLO or be infeasible)."""
        return self.failure is None and self.objective is not None

    @classmethod
    def from_trial(cls, trial: FrozenTrial, primary: int = 0) -> TrialRecord:
        """``primary``: the index of the primary objective among a multi-objective study's values."""
        attrs = trial.user_attrs
        values = tuple(float(v) for v in trial.values) if trial.values is not None else ()
        multi = len(values) > 1
        objectives = attrs.get("objectives")
        record = cls(
            number=trial.number,
            params=dict(trial.params),
            value=values[primary if multi else 0] if values else math.nan,
            objective=attrs.get("objective"),
            feasible=all(v <= 0 for v in trial.constraints.values()) if trial.constraints else True,
            meets_slos=bool(attrs.get("meets_slos", False)),
            failure=attrs.get("failure"),
            failure_message=attrs.get("failure_message", ""),
            log_tail=attrs.get("log_tail", ""),
            duration=float(attrs.get("duration", math.nan)),
            cells=tuple(CellSummary.from_dict(c) for c in attrs.get("cells", []) if isinstance(c, dict)),
            origin=str(attrs.get("origin", "")),
            server_chose=tuple(str(n) for n in attrs.get("server_chooses", ())),
            gpu_seconds=float(attrs.get("gpu_seconds") or 0.0),
            gpu_seconds_saved=float(attrs.get("gpu_seconds_saved") or 0.0),
            values=values if multi else (),
            objectives=dict(objectives) if multi and isinstance(objectives, dict) else {},
            repeat_of=int(attrs["repeat_of"]) if attrs.get("repeat_of") is not None else None,
        )
        left = set(record.server_chose)
        return dataclasses.replace(record, params={k: v for k, v in record.params.items() if k not in left})


@dataclass(frozen=True)
class TrialEvent:
    """Progress of one trial, for the terminal."""

    phase: str  # "search" or "confirm"
    index: int  # 1-based position in the phase
    total: int
    params: Params
    score: TrialScore
    duration: float
    number: int | None = None
    devices: tuple[int, ...] = ()
    new_best: bool = False  # the best trial so far (search phase)
    repeat_of: int | None = None  # a repeat run of a new best (``optimization.remeasure_best``)
    #: after a repeat: the configuration's mean objective over its runs, how many, and whether it is still the best
    repeat_mean: float | None = None
    repeat_runs: int = 0
    still_best: bool = True


@dataclass(frozen=True)
class Confirmation:
    """Repeat runs of one configuration; the verdict comes from these samples, not the search's lucky run."""

    params: Params
    source_trial: int
    runs: tuple[BenchResult, ...]
    score: TrialScore
    failures: tuple[str, ...] = ()

    @property
    def merged(self) -> BenchResult:
        return BenchResult.merge(self.runs)

    @property
    def server_info(self) -> dict[str, Any]:
        return self.runs[0].server_info if self.runs else {}


def by_configuration(records: list[TrialRecord], maximize: bool) -> list[TrialRecord]:
    """Measured configurations, best first (``rank_key``; the lower trial number on a tie).

    A configuration measured more than once (a new best's repeat run, ``optimization.remeasure_best``) is one
    record: its first trial's, with the mean score and objective of its measured runs, meeting the SLOs and
    feasible only if every run did (a failed run did not), and ``runs`` naming its trials. The ranking of "best"
    that the search's new-best marks, early stopping and the choice of candidates to confirm all use.
    """
    groups: dict[int, list[TrialRecord]] = {}
    for record in sorted(records, key=lambda r: r.number):
        groups.setdefault(record.repeat_of if record.repeat_of is not None else record.number, []).append(record)
    out = []
    for number, runs in groups.items():
        first = runs[0]
        if first.number != number or first.failure is not None:  # only configurations whose first run measured
            continue
        if len(runs) > 1:
            measured = [r for r in runs if r.failure is None]
            objectives = [r.objective for r in measured]
            first = dataclasses.replace(
                first,
                value=sum(r.value for r in measured) / len(measured),
                objective=None if None in objectives else sum(o for o in objectives if o is not None) / len(measured),
                feasible=all(r.feasible for r in runs),
                meets_slos=all(r.meets_slos for r in runs),
                runs=tuple(r.number for r in runs),
            )
        out.append(first)
    return sorted(out, key=lambda r: (*rank_key(r.meets_slos, r.feasible, r.value, maximize), r.number))


def best_so_far(records: list[TrialRecord] | tuple[TrialRecord, ...], maximize: bool) -> list[TrialRecord | None]:
    """For each record in trial-number order, the measured trial ranking best up to it (``rank_key``: meets the
    SLOs, then feasible, then the score; the earlier trial on a tie), None before the first measured one: the line
    the session's choice follows, which the convergence and strategy plots draw."""
    leader: TrialRecord | None = None
    out: list[TrialRecord | None] = []
    for record in sorted(records, key=lambda r: r.number):
        if record.measured and (
            leader is None
            or rank_key(record.meets_slos, record.feasible, record.value, maximize)
            < rank_key(leader.meets_slos, leader.feasible, leader.value, maximize)
        ):
            leader = record
        out.append(leader)
    return out


def trial_attrs(
    score: TrialScore,
    result: BenchResult | None,
    log_tail: str,
    duration: float,
    devices: tuple[int, ...] = (),
    cost: TrialCost | None = None,
    partial_cells: tuple[CellSummary, ...] = (),
) -> dict[str, Any]:
    """The user attrs a finished trial is recorded with: what ``TrialRecord.from_trial`` reads back."""
    attrs: dict[str, Any] = {
        "objective": score.objective,
        "penalty": score.penalty if math.isfinite(score.penalty) else None,
        "meets_slos": score.meets_slos,
        "failure": score.failure.value if score.failure else None,
        "failure_message": score.failure_message[:2000],
        "log_tail": log_tail[-4000:],
        "duration": round(duration, 3),
        "devices": list(devices),
        **(cost or TrialCost()).as_attrs(),
    }
    if score.objectives:  # multi-objective: every objective, unpenalized
        attrs["objectives"] = {name: value for name, value in score.objectives.items()}
    if result is not None:
        attrs["cells"] = [json_safe(cell.as_dict()) for cell in result.cells]
        if result.capacities:
            attrs["capacity"] = json_safe(result.capacities[0].as_dict())
        attrs["server_version"] = str(result.server_info.get("version", ""))
    elif partial_cells:  # what a pruned trial measured before it was stopped (the report's trials table)
        attrs["cells"] = [json_safe(cell.as_dict()) for cell in partial_cells]
    return attrs
