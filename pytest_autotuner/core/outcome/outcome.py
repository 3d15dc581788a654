"""What one tuning item found and decided: ``TaskOutcome`` and its parts (the trials' counts, the GPU time,
SGLang's defaults against the tuned best, a multi-objective search's Pareto front).

``run_task`` (task.py) builds it, once and frozen; every output reads it and never recomputes it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.measure.stats import ALPHA
from pytest_autotuner.core.outcome.pareto import SelectRule, front_indices, select_order
from pytest_autotuner.core.outcome.records import Confirmation, TrialRecord
from pytest_autotuner.core.outcome.verdict import Verdict
from pytest_autotuner.core.search.calibration import Calibration
from pytest_autotuner.core.search.screening import Screening

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.scoring import SloCheck
    from pytest_autotuner.core.outcome.baseline import Baseline, BaselineComparison
    from pytest_autotuner.core.spec.task_spec import TaskSpec


__all__ = ["DefaultsComparison", "ParetoFront", "StudyCost", "TaskOutcome", "TrialCounts", "pareto_front_of"]


@dataclass(frozen=True)
class DefaultsComparison:
    """SGLang's defaults, confirmed like the best, against the tuned best.

    ``gain``: how much better the tuned best's objective is (relative, positive = better; None when either side
    was not measured); ``p_value``: the same one-sided per-run test the baseline gate uses, "the tuned best is
    better than the defaults". When the tuned best is not significantly better, the defaults are the best.
    """

    trial: TrialRecord
    confirmation: Confirmation | None  # the defaults' confirmation runs
    tuned: Confirmation | None  # the best tuned configuration's, which competed with them
    gain: float | None
    p_value: float
    defaults_chosen: bool
    #: False when a multi-objective search's select rule does not admit the defaults (dominated, or outside its
    #: bounds): they are compared, never chosen
    eligible: bool = True

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_value) and self.p_value < ALPHA


@dataclass(frozen=True)
class StudyCost:
    """GPU time the item used: every search trial of the study (also an earlier, resumed run's), this run's
    confirmation runs, and what early stopping saved (pruned trials' skipped cells, cells precision ended)."""

    search_gpu_seconds: float = 0.0
    confirm_gpu_seconds: float = 0.0
    saved_gpu_seconds: float = 0.0
    pruned_trials: int = 0

    @property
    def gpu_seconds(self) -> float:
        return self.search_gpu_seconds + self.confirm_gpu_seconds

    @classmethod
    def of(cls, trials: tuple[TrialRecord, ...] | list[TrialRecord], confirm_gpu_seconds: float) -> StudyCost:
        return cls(
            search_gpu_seconds=sum(t.gpu_seconds for t in trials),
            confirm_gpu_seconds=confirm_gpu_seconds,
            saved_gpu_seconds=sum(t.gpu_seconds_saved for t in trials),
            pruned_trials=sum(t.pruned for t in trials),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpu_seconds": round(self.gpu_seconds, 3),
            "gpu_hours": round(self.gpu_seconds / 3600, 6),
            "search_gpu_seconds": round(self.search_gpu_seconds, 3),
            "confirm_gpu_seconds": round(self.confirm_gpu_seconds, 3),
            "saved_gpu_seconds": round(self.saved_gpu_seconds, 3),
            "saved_gpu_hours": round(self.saved_gpu_seconds / 3600, 6),
            "pruned_trials": self.pruned_trials,
        }


@dataclass(frozen=True)
class ParetoFront:
    """The result of a multi-objective search (``optimization.objectives``) and the select rule's choice on it.

    ``considered``: the measured trials of the best tier (meeting every SLO if any does, else feasible, else all
    measured), whose scores per objective are compared (equal to the objectives when every SLO is met); ``front``:
    those none of them dominates, ordered by the first objective; ``eligible``: the front's trials within the
    rule's bounds, best on the rule's objective first (SGLang's defaults trial included when it is there);
    ``selected``: the trial the rule picks, the first tuned trial of ``eligible`` (the one confirmed).
    """

    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    rule: SelectRule
    rule_given: bool  # the spec's select rule (False: the default, best on the first objective)
    tier: str  # "meets every SLO" | "feasible" | "measured"
    considered: tuple[TrialRecord, ...]
    front: tuple[TrialRecord, ...]
    eligible: tuple[int, ...]
    selected: int | None

    @property
    def dominated(self) -> tuple[TrialRecord, ...]:
        on_front = {t.number for t in self.front}
        return tuple(t for t in self.considered if t.number not in on_front)

    def describe_rule(self) -> str:
        return self.rule.describe() + ("" if self.rule_given else " (default: the first objective)")


def pareto_front_of(spec: TaskSpec, trials: list[TrialRecord] | tuple[TrialRecord, ...]) -> ParetoFront | None:
    """The Pareto front of a multi-objective spec's trials and the select rule's order on it (None: one objective)."""
    opt = spec.optimization
    if not opt.multi_objective:
        return None
    names, directions = opt.objective_names, opt.directions
    rule = SelectRule(opt.select.best, dict(opt.select.within)) if opt.select else SelectRule(names[0])
    measured = [t for t in trials if t.measured and len(t.values) == len(names)]
    tiers = (("meets every SLO", [t for t in measured if t.meets_slos]),
             ("feasible", [t for t in measured if t.feasible]), ("measured", measured))  # fmt: skip
    tier, considered = next(((name, group) for name, group in tiers if group), ("measured", []))
    considered = sorted(considered, key=lambda t: t.number)
    on_front = [considered[i] for i in front_indices([t.values for t in considered], directions)]
    first = -1.0 if directions[0] == "maximize" else 1.0
    on_front.sort(key=lambda t: (first * t.values[0], t.number))
    scores = [dict(zip(names, t.values, strict=True)) for t in on_front]
    eligible = tuple(on_front[i].number for i in select_order(scores, rule, dict(zip(names, directions, strict=True))))
    origins = {t.number: t.origin for t in on_front}
    selected = next((n for n in eligible if origins[n] != "sglang_defaults"), None)
    return ParetoFront(
        names, directions, rule, opt.select is not None, tier, tuple(considered), tuple(on_front), eligible, selected
    )


@dataclass(frozen=True)
class TrialCounts:
    """How the trials of one item ended, counted once for every output (results.json, the report page, the run
    index, the terminal and job summaries): a pruned trial is not a failed one, and only a measured trial can be
    feasible or meet its SLOs."""

    total: int
    measured: int  # produced a measurement (it may still miss an SLO)
    feasible: int  # measured within the hard SLO limits
    meets_slos: int  # measured and meeting every SLO
    failed: int  # ended without a measurement, early stopping aside
    pruned: int  # ended by early stopping after part of its cells
    repeats: int  # repeat runs of an earlier trial's configuration (``optimization.remeasure_best``)
    duplicates_skipped: int  # proposals of an already measured configuration, answered from the record

    @classmethod
    def of(cls, trials: tuple[TrialRecord, ...], duplicates_skipped: int = 0) -> TrialCounts:
        return cls(
            total=len(trials),
            measured=sum(t.measured for t in trials),
            feasible=sum(t.measured and t.feasible for t in trials),
            meets_slos=sum(t.measured and t.meets_slos for t in trials),
            failed=sum(t.failure is not None and not t.pruned for t in trials),
            pruned=sum(t.pruned for t in trials),
            repeats=sum(t.repeat_of is not None for t in trials),
            duplicates_skipped=duplicates_skipped,
        )

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))

    @property
    def text(self) -> str:
        """'12 (2 failed, 1 pruned)': the trials and how many ended without a measurement."""
        pruned = f", {self.pruned} pruned" if self.pruned else ""
        return f"{self.total} ({self.failed} failed{pruned})"


@dataclass(frozen=True)
class TaskOutcome:
    """Everything one tuning item found and decided; every output reads this and never recomputes it."""

    spec: TaskSpec
    runtime: str
    study_name: str
    trials: tuple[TrialRecord, ...]
    best: Confirmation | None
    defaults: DefaultsComparison | None
    baseline: BaselineComparison | None
    new_baseline: Baseline | None
    baseline_note: str  # why no baseline was recorded although asked ('' otherwise)
    fingerprint: Mapping[str, Any]
    verdict: Verdict
    duration: float
    stopped_early: str = ""
    duplicates_skipped: int = 0
    cost: StudyCost = field(default_factory=StudyCost)
    mode: str = "tune"  # "check": no search, the baseline's configuration was measured (--autotune-check)
    baseline_objective: float | None = None  # the compared baseline's objective value (None: no baseline)
    pareto: ParetoFront | None = None  # a multi-objective search's front and the select rule's choice
    # what the search knew about its space, recorded for the outputs (which rebuild nothing): the space's
    # fingerprint, the random trials TPE started with (0 for other strategies) and the parameters' distributions
    space_fingerprint: str = ""
    startup_trials: int = 0
    distributions: Mapping[str, Any] = field(default_factory=dict)
    # optimization.screening: what the screen scored and seeded, and how the real trials compared with its model
    screening: Screening | None = None
    calibration: Calibration | None = None

    @property
    def is_check(self) -> bool:
        return self.mode == "check"

    @property
    def slo_checks(self) -> tuple[SloCheck, ...]:
        return self.best.score.slo_checks if self.best else ()

    @property
    def counts(self) -> TrialCounts:
        return TrialCounts.of(self.trials, self.duplicates_skipped)

    @property
    def failure_counts(self) -> Counter[str]:
        return Counter(t.failure for t in self.trials if t.failure)

    @property
    def server_info(self) -> dict[str, Any]:
        return self.best.server_info if self.best else {}

    @property
    def defaults_trial(self) -> TrialRecord | None:
        return self.defaults.trial if self.defaults else None
