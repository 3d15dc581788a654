"""The ``optimization`` section of a tuning spec: strategy and sampler, objectives and their select rule, budget,
patience, confirmation, early stopping and screening.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from pytest_autotuner.core.spec.objectives import OBJECTIVE_DEFS, objective_direction
from pytest_autotuner.core.spec.spec_model import (
    MAX_OBJECTIVES,
    MIN_OBJECTIVES,
    OBJECTIVES,
    SAMPLERS,
    STRATEGIES,
    SpecModel,
)
from pytest_autotuner.core.spec.spec_text import AT, preview

__all__ = ["Optimization", "Select"]


class Select(SpecModel):
    """Which configuration of a multi-objective search's Pareto front is confirmed, asserted and kept."""

    best: str = Field(description="The objective to be best on (one of `objectives`): the primary objective.")
    within: dict[str, Annotated[float, Field(ge=0, le=10)]] = Field(
        default_factory=dict,
        max_length=MAX_OBJECTIVES,
        description="Other objectives of `objectives` -> relative tolerance: only configurations within it of the "
        "front's best on that objective are eligible (0.05: within 5%).",
    )


class Optimization(SpecModel):
    strategy: str = "bayesian"
    objective: str = Field(
        "minimize_latency",
        description="The objective; with `objectives`, the primary one (default: `select.best`, else the first).",
    )
    objectives: list[str] | None = Field(
        None,
        min_length=MIN_OBJECTIVES,
        max_length=MAX_OBJECTIVES,
        description="Two or three objectives (names as `objective` accepts): a multi-objective search whose result "
        "is the Pareto front; `select` picks the configuration that is confirmed.",
    )
    select: Select | None = Field(
        None,
        description='With `objectives`: the configuration of the front to confirm, e.g. {"best": "minimize_ttft", '
        '"within": {"maximize_throughput": 0.05}}. Default: the best on the first objective.',
    )
    sampler: str = Field("tpe", description="The bayesian strategy's model: tpe (Optuna's TPE) | nsga2 (NSGA-II).")
    max_iterations: int = Field(100, ge=1, le=100_000)
    n_initial_random: int | None = Field(
        None,
        ge=0,
        le=100_000,
        description="bayesian: random trials before TPE. An explicit value is used as given; unset, it is 5, "
        "capped at a tenth of a finite space (at least 2) so a small space is not mostly explored at random.",
    )
    timeout_per_iteration: float = Field(600, gt=0, le=7 * 86400, description="Seconds per trial, launch included.")
    seed: int | None = Field(None, ge=0, lt=2**32)
    confirm_runs: int = Field(2, ge=0, le=100, description="Repeat runs of the best configurations.")
    confirm_top: int = Field(1, ge=1, le=100, description="How many of the best configurations are confirmed.")
    patience: int | None = Field(None, ge=1, le=100_000, description="Stop after this many trials without improvement.")
    remeasure_best: bool = Field(
        True,
        description="bayesian and random: a trial that becomes the best so far is measured once more as the next "
        "trial (counted in max_iterations), and a configuration measured twice ranks by the mean of its runs, so "
        "one lucky run does not hold the best for the rest of the search. One objective only; grid measures each "
        "point once.",
    )
    start_from_defaults: bool = Field(
        True,
        description="bayesian: evaluate SGLang's default flags (moved to the nearest values in the space) first.",
    )
    screening: bool = Field(
        False,
        description="Before the first real trial, score up to `screen_size` configurations on the in-process "
        "simulator (the spec's model, traffic and SLOs; `simulator.gpu`) and give the first trials to its "
        "`screen_seeds` best, apart from each other; then refit the simulator to the real trials every 4 of them, "
        "rescreen on the fitted model for the next trials while its ranks agree with the measured ones (else drop "
        "it, saying so), and stop when nothing unmeasured is predicted to beat the best (docs/search.md).",
    )
    screen_size: int = Field(500, ge=1, le=100_000, description="Configurations the screen scores at most.")
    screen_seeds: int = Field(4, ge=1, le=64, description="Real trials given to the screen's best configurations.")
    early_stopping: bool = Field(
        True,
        description="Stop a search trial after any cell once it cannot become the best (recorded `pruned`): a cell "
        "breaks a hard SLO beyond its fail_ratio while a trial meeting every hard SLO is known, or its partial "
        "score is worse than the best's on the same cells by more than `prune_margin`. Confirmation runs always "
        "run to the end.",
    )
    per_gpu: bool = Field(
        False,
        description="Divide throughput and goodput by the GPUs a configuration uses (tp-size x dp-size x pp-size): "
        "the tuner then answers 'best per GPU', the number a fleet is sized by. Only for maximize_throughput and "
        "maximize_goodput.",
    )
    per_dollar: bool = Field(
        False,
        description="With per_gpu and `cost.gpu_hour`: state the per-GPU objective per dollar too (requests or "
        "output tokens per dollar at the price of the spec's GPU). The ranking is the per-GPU one: one price per "
        "GPU-hour divides every configuration alike.",
    )
    prune_margin: float | None = Field(
        0.5,
        gt=0,
        description="Early stopping: how much worse (relative; 0.5 = 50%) a trial's partial score may be than the "
        "best feasible trial's score over the same cells before it is pruned; null: prune only on hard SLOs.",
    )

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; use one of: {', '.join(STRATEGIES)}")
        return value

    @field_validator("objective")
    @classmethod
    def _objective(cls, value: str) -> str:
        if value not in OBJECTIVES:
            raise ValueError(f"unknown objective {value!r}; use one of: {', '.join(OBJECTIVES)}")
        return value

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        for index, name in enumerate(value):
            if name not in OBJECTIVES:
                raise ValueError(
                    f"{AT}{index}{AT}unknown objective {preview(name, 60)}; use one of: {', '.join(OBJECTIVES)}"
                )
            if name in value[:index]:
                raise ValueError(f"{AT}{index}{AT}objective {name!r} is listed twice; list each objective once")
        return value

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, value: str) -> str:
        if value not in SAMPLERS:
            raise ValueError(f"unknown sampler {value!r}; use one of: {', '.join(SAMPLERS)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _primary_objective(cls, data: Any) -> Any:
        """With ``objectives`` and no ``objective``, the primary objective is ``select.best``, else the first."""
        if not isinstance(data, dict) or "objective" in data or not isinstance(data.get("objectives"), list):
            return data
        listed = data["objectives"]
        select = data.get("select")
        primary = select.get("best") if isinstance(select, dict) else None
        if primary not in listed and listed:  # a select rule naming another objective is reported on its own
            primary = listed[0]
        return {**data, "objective": primary} if primary in OBJECTIVES else data

    @model_validator(mode="after")
    def _multi_objective(self) -> Optimization:
        if self.objectives is None:
            if self.select is not None:
                raise ValueError(
                    f"{AT}select{AT}a select rule needs `objectives` (two or three); with one `objective` the best "
                    "configuration is simply the best on it"
                )
            return self
        listed = ", ".join(self.objectives)
        if self.select is not None:
            names = [("select.best", self.select.best)] + [(f"select.within.{n}", n) for n in self.select.within]
            for where, name in names:
                if name not in OBJECTIVES:
                    raise ValueError(
                        f"{AT}{where}{AT}unknown objective {preview(name, 60)}; use one of `objectives`: {listed}"
                    )
                if name not in self.objectives:
                    raise ValueError(
                        f"{AT}{where}{AT}objective {name!r} is not one of `objectives` ({listed}); add it there or "
                        "select on one of them"
                    )
            if self.select.best in self.select.within:
                raise ValueError(
                    f"{AT}select.within.{self.select.best}{AT}{self.select.best!r} is `select.best`; `within` bounds "
                    "the other objectives"
                )
        primary = self.select.best if self.select is not None else self.objectives[0]
        if self.objective != primary:
            where = "select.best" if self.select is not None else "the first of `objectives`"
            raise ValueError(
                f"{AT}objective{AT}`objective` is {self.objective!r} but {where} is {primary!r}; with `objectives` "
                f"the primary objective is {where}: leave `objective` out or make them agree"
            )
        if self.strategy == "grid" and len(self.objectives) > 2:
            raise ValueError(
                f"{AT}objectives{AT}three objectives ({listed}) with the grid strategy: a grid is an exhaustive "
                "sweep whose front over three objectives is rarely small enough to read; use the bayesian strategy, "
                "or two objectives"
            )
        return self

    @model_validator(mode="after")
    def _sampler_strategy(self) -> Optimization:
        if self.sampler != "tpe" and self.strategy != "bayesian":
            raise ValueError(
                f"{AT}sampler{AT}sampler {self.sampler!r} is the model of the bayesian strategy, but `strategy` is "
                f"{self.strategy!r}; use strategy bayesian or leave `sampler` out"
            )
        return self

    @model_validator(mode="after")
    def _initial_below_max(self) -> Optimization:
        if (
            self.strategy == "bayesian"
            and self.n_initial_random is not None
            and (self.n_initial_random >= self.max_iterations)
        ):
            raise ValueError(
                f"`n_initial_random` is {self.n_initial_random} but `max_iterations` is "
                f"{self.max_iterations}; use a value below max_iterations"
            )
        return self

    @model_validator(mode="after")
    def _per_gpu_divides(self) -> Optimization:
        if self.per_gpu and not any(OBJECTIVE_DEFS[name].per_gpu for name in self.objective_names):
            names = " and ".join(repr(n) for n in self.objective_names)
            raise ValueError(
                f"{AT}per_gpu{AT}`per_gpu` is true but the objective {names} is not a capacity a GPU provides "
                "(per_gpu divides throughput and goodput); use maximize_throughput or maximize_goodput, or drop "
                "per_gpu"
            )
        return self

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return objective_direction(self.objective)

    @property
    def multi_objective(self) -> bool:
        return self.objectives is not None

    @property
    def objective_names(self) -> tuple[str, ...]:
        """Every objective the search optimizes: ``objectives``, or the one ``objective``."""
        return tuple(self.objectives) if self.objectives is not None else (self.objective,)

    @property
    def directions(self) -> tuple[Literal["minimize", "maximize"], ...]:
        return tuple(objective_direction(name) for name in self.objective_names)

    @property
    def capacity_objective(self) -> str | None:
        """The objective measured by the capacity search (``maximize_goodput``), the only one or one of several."""
        return next((name for name in self.objective_names if OBJECTIVE_DEFS[name].capacity), None)

    @property
    def uses_capacity(self) -> bool:
        """A trial runs the capacity search (``benchmark.capacity``, core/measure/capacity.py): an objective needs it.

        With other objectives beside it, a trial also runs the spec's own cells (``num_concurrency``,
        ``request_rates``), on which those are measured (``ladder_only`` False)."""
        return self.capacity_objective is not None

    @property
    def capacity_primary(self) -> bool:
        """The primary objective is the capacity search's (its per-run capacities are what the gate compares)."""
        return OBJECTIVE_DEFS[self.objective].capacity

    @property
    def ladder_only(self) -> bool:
        """Every objective is the capacity search's: a trial runs its ladder and no fixed-load cells."""
        return all(OBJECTIVE_DEFS[name].capacity for name in self.objective_names)
