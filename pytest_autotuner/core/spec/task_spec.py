"""Tuning specs: the seed system's JSON task format as pydantic v2 models, loaded from JSON or YAML.

Every validation error names the file, the field path, the bad value and how to fix it.

Specs are edited by anyone and run unattended, so loading is bounded before anything is validated or printed:
the file's text is read by ``spec_text.py`` (its size, a YAML document's expansion and nesting, duplicate keys;
``preview``, the only way a message shows a value); here, strings are at most ``MAX_STRING`` characters and every
list and mapping has a documented maximum length; numbers are finite; ``additional_params`` is at most
``MAX_ADDITIONAL_PARAMS_BYTES`` of JSON; a grid search covers at most ``MAX_GRID_POINTS`` configurations; token
counts of a traffic scenario are capped (``scenarios.MAX_TOKENS_PER_REQUEST``).

The file and the files a spec names (datasets, a tokenizer, a model folder) are read at the edge
(``pytest_autotuner.inputs``: ``load_spec``) and handed in: ``parse_spec`` takes the file's bytes, and the
validators read through the ``SpecFiles`` the validation context carries.

Flags the runtime sets itself (``RUNTIME_OWNED_FLAGS``: address, port, model) cannot be tuned or passed in
``extra_args``: see ``owned_flags_in``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pytest_autotuner.core.spec.dataset import DatasetError
from pytest_autotuner.core.spec.models import known_model
from pytest_autotuner.core.spec.objectives import OBJECTIVE_DEFS, objective_direction
from pytest_autotuner.core.spec.runtime_kinds import RUNTIME_KINDS, RuntimeKind
from pytest_autotuner.core.spec.scenarios import MAX_CELL_TOKENS, ScenarioError, longest_request, parse_scenario
from pytest_autotuner.core.spec.sglang_args import SHIPPED_VERSIONS
from pytest_autotuner.core.spec.spec_text import AT, SpecError, cut, format_errors, preview, read_document
from pytest_autotuner.core.spec.tokens import TokenizerError

__all__ = [
    "MAX_GRID_POINTS",
    "OBJECTIVES",
    "RUNTIME_KINDS",
    "RUNTIME_OWNED_FLAGS",
    "SAMPLERS",
    "STRATEGIES",
    "Benchmark",
    "CapacitySettings",
    "CostSettings",
    "DeploySettings",
    "DockerSettings",
    "ModelRef",
    "Optimization",
    "RangeParam",
    "RuntimeKind",
    "Select",
    "Slo",
    "SloMetric",
    "SpecFiles",
    "TaskSpec",
    "owned_flags_in",
    "parse_spec",
    "spec_json_schema",
]

STRATEGIES = ("bayesian", "grid", "random")
SAMPLERS = ("tpe", "nsga2")  #: the model behind the bayesian strategy
MIN_OBJECTIVES, MAX_OBJECTIVES = 2, 3  #: of a multi-objective search (``optimization.objectives``)
OBJECTIVES = tuple(OBJECTIVE_DEFS)  #: the names of ``core/spec/objectives.py``'s table
_PARAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

MAX_STRING = 4096  #: characters of any string value
MAX_TASK_NAME = 200  #: characters of a task name
MAX_PARAMETERS = 64  #: tuned parameters
MAX_CHOICES = 10_000  #: values of one listed parameter
MAX_LIST = 64  #: scenarios, concurrencies, request rates
MAX_GPUS = 1024  #: GPU ids in a list (each below MAX_GPU_ID)
MAX_GPU_ID = 4096
MAX_ARGS = 256  #: extra_args items
MAX_INITIAL_CONFIGS = 1000
MAX_ADDITIONAL_PARAMS_BYTES = 16 * 1024  #: ``benchmark.additional_params`` as JSON (sent with every request)
MAX_GRID_POINTS = 1_000_000  #: configurations a grid search may cover; larger: bayesian or random, or coarser steps
MAX_RANGE_POINTS = 10**15  #: steps of one stepped range
MAX_INT = 2**53  #: magnitude of an int range bound (exact as a float, as Optuna handles it)
MAX_FLOAT = 1e15  #: magnitude of a float range bound
MAX_CAPACITY_STEPS = 32  #: load steps of one capacity search (each is a cell per scenario on the trial's server)

#: Flags every runtime sets itself on the server's command line (address, port, model): a parameter or an
#: ``extra_args`` item naming one (or an argparse abbreviation of one) would move the server off the address the
#: tuner talks to, or serve another model. Runtimes add their own (``owned_flags_in(..., extra=...)``).
RUNTIME_OWNED_FLAGS: tuple[str, ...] = ("host", "port", "model-path", "model")
#: The simulator's flags that the sim runtime sets per launch.
SIM_OWNED_FLAGS: tuple[str, ...] = ("sim-seed", "sim-launched-at")


def owned_flags_in(args: Iterable[str], extra: Sequence[str] = ()) -> list[str]:
    """The items of ``args`` (``--flag``, ``--flag=value`` or bare parameter names) that set a runtime-owned flag.

    An unambiguous prefix counts too: SGLang's argparse accepts ``--ho`` for ``--host``.
    """
    owned = (*RUNTIME_OWNED_FLAGS, *extra)
    found = []
    for arg in args:
        if not isinstance(arg, str):
            continue
        name = arg.split("=", 1)[0].lstrip("-").replace("_", "-").lower()
        if name and any(flag == name or flag.startswith(name) for flag in owned):
            found.append(arg)
    return found


class SpecFiles(Protocol):
    """What validating a spec reads from disk, injected through the validation context (``files``) by the edge
    (``pytest_autotuner.inputs.SPEC_FILES``, which ``inputs.load_spec`` passes): validated without it, a spec
    is checked alone (its datasets, tokenizer and model folder unread; context lengths of known ids only)."""

    def read_dataset(self, path: str) -> object:
        """Read the dataset at ``path``; raises DatasetError naming what is wrong."""
        ...

    def read_tokenizer(self, path: str) -> str:
        """The absolute path of the tokenizer.json ``path`` names; raises TokenizerError when unusable."""
        ...

    def context_length(self, model_path: str) -> int | None:
        """The context length of the model (a local folder's config.json or a known id), else None."""
        ...


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_max_length=MAX_STRING)


Count = Annotated[int, Field(ge=0, le=1_000_000)]
GpuId = Annotated[int, Field(ge=0, lt=MAX_GPU_ID)]


class ModelRef(_Model):
    id_or_path: str = Field(min_length=1, description="Hub id or local directory of the model.")
    namespace: str = "autotuner"


class RangeParam(_Model):
    """A numeric range: integers when low, high and step are all integers, else floats."""

    low: int | float
    high: int | float
    step: int | float | None = None
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> RangeParam:
        for name in ("low", "high", "step"):
            value = getattr(self, name)
            limit = MAX_INT if isinstance(value, int) else MAX_FLOAT
            if value is not None and abs(value) > limit:
                raise ValueError(f"`{name}` is {preview(value, 40)}; keep bounds within +-{limit:.0e}")
        if self.high < self.low:
            raise ValueError(f"`high` ({self.high:g}) is below `low` ({self.low:g}); swap them")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"`step` is {self.step:g}; use a positive step or leave it out")
        if self.log and self.low <= 0:
            raise ValueError(f"`log` needs `low` > 0, got {self.low:g}")
        if self.log and self.step is not None:
            raise ValueError("`log` and `step` cannot be combined (Optuna does not support it); drop one")
        if self.step is not None and (self.high - self.low) / self.step > MAX_RANGE_POINTS:
            raise ValueError(
                f"`step` {self.step:g} splits {self.low:g}..{self.high:g} into more than {MAX_RANGE_POINTS:.0e} "
                "points; use a larger step or leave it out"
            )
        return self

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high, self.step) if v is not None)

    @property
    def count(self) -> int | None:
        """Grid points of the range (arithmetic), or None for a float range without a step (continuous)."""
        if self.is_int:
            return int(self.high - self.low) // int(self.step or 1) + 1
        if self.step is None:
            return None
        steps = (self.high - self.low) / self.step
        return math.floor(steps + max(1e-9, abs(steps) * 1e-12)) + 1  # as space.stepped_count


ParamChoice = bool | int | float | str


class Select(_Model):
    """Which configuration of a multi-objective search's Pareto front is confirmed, asserted and kept."""

    best: str = Field(description="The objective to be best on (one of `objectives`): the primary objective.")
    within: dict[str, Annotated[float, Field(ge=0, le=10)]] = Field(
        default_factory=dict,
        max_length=MAX_OBJECTIVES,
        description="Other objectives of `objectives` -> relative tolerance: only configurations within it of the "
        "front's best on that objective are eligible (0.05: within 5%).",
    )


class Optimization(_Model):
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


class CapacitySettings(_Model):
    """The capacity search of ``maximize_goodput`` (core/measure/capacity.py): a ladder of load steps on one server."""

    load: Literal["rate", "concurrency"] = Field(
        "rate",
        description="rate: open loop, Poisson arrivals at a request rate (req/s); concurrency: closed loop, that "
        "many requests in flight.",
    )
    min: float = Field(
        0.25,
        description="Lowest load searched (req/s, or concurrency); a configuration that breaks an SLO here scores 0.",
    )
    max: float = Field(64.0, description="Highest load searched; the first step runs here.")
    max_steps: int = Field(8, description=f"Load steps per trial (2..{MAX_CAPACITY_STEPS}).")
    tolerance: float = Field(
        0.05,
        gt=0,
        le=1,
        description=(
            "Rates are tried on a grid about this far apart (relative; `max x 2^(-k/m)`, m the fewest points to a "
            "halving within it); the bisection stops when no grid point is left in the bracket."
        ),
    )
    step_seconds: float = Field(
        30.0,
        gt=0,
        le=86400,
        description="rate load: each step sends Poisson arrivals for this long (load x step_seconds requests, at "
        "least 20), so a queue the server cannot drain has time to build; `max_time_per_iteration` (at least "
        "this) bounds the step. concurrency load: each step sends `max_requests_per_iteration` requests.",
    )
    min_step_requests: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="rate load: requests a step sends at least (it then lasts longer than step_seconds); default: "
        "sized from the SLO's tightest percentile so that it can hold with `confidence` (P99: 368, P95: 72, "
        "P90: 36 at 95%).",
    )
    confidence: float = Field(
        0.95,
        ge=0.5,
        lt=1,
        description="Two-sided confidence of each SLO statistic's interval: a step holds when every interval is "
        "within its threshold, breaks when one is wholly above, and is measured again when one straddles.",
    )
    max_repeats: int = Field(
        3,
        ge=1,
        le=10,
        description="Measurements of one step at most (each from a drained server with an empty cache, on its own "
        "arrivals, pooled) while an interval straddles its threshold; then the point estimate decides.",
    )

    @model_validator(mode="after")
    def _check(self) -> CapacitySettings:
        for name in ("min", "max"):
            value = getattr(self, name)
            if not value > 0 or value > 1e6:
                raise ValueError(f"{AT}{name}{AT}`{name}` is {value:g}; use a positive load up to 1e6")
            if self.load == "concurrency" and not float(value).is_integer():
                raise ValueError(f"{AT}{name}{AT}`{name}` is {value:g} but `load` is concurrency; use a whole number")
        if self.min > self.max:
            raise ValueError(f"{AT}min{AT}`min` ({self.min:g}) is above `max` ({self.max:g}); swap them")
        if not 2 <= self.max_steps <= MAX_CAPACITY_STEPS:
            raise ValueError(
                f"{AT}max_steps{AT}`max_steps` is {self.max_steps}; use 2 to {MAX_CAPACITY_STEPS} (each step is a "
                "cell per scenario on the trial's server; 8 find the load within a few percent)"
            )
        return self


class Benchmark(_Model):
    task: str = "text-to-text"
    model_name: str | None = None
    model_tokenizer: str | None = None
    traffic_scenarios: list[str] = Field(default_factory=lambda: ["D(100,100)"], min_length=1, max_length=MAX_LIST)
    num_concurrency: list[int] = Field(default_factory=lambda: [1], min_length=1, max_length=MAX_LIST)
    request_rates: list[Annotated[float, Field(gt=0, le=1e6)]] = Field(
        default_factory=list, max_length=MAX_LIST, description="Requests per second (each > 0)."
    )
    max_time_per_iteration: float = Field(30, gt=0, le=86400, description="Seconds per (scenario, load) cell.")
    max_requests_per_iteration: int = Field(100, ge=1, le=1_000_000, description="Requests per (scenario, load) cell.")
    warmup_requests: int = Field(2, ge=0, le=10_000)
    api: Literal["chat", "completions"] = "chat"
    max_error_rate: float = Field(0.1, ge=0, le=1)
    min_completed: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description=(
            "Fewest requests of a cell that must finish (complete or fail) before its time limit ends; a cell "
            "with fewer fails the trial as `stalled` (the server stopped answering or is far too slow for the "
            "load). Default: half of the requests sent in the cell, at least 1."
        ),
    )
    stall_timeout: float | None = Field(
        None,
        gt=0,
        le=86400,
        description=(
            "Seconds without a byte from the server while requests wait on it that fail the trial as `stalled`, "
            "however many requests finished before. Default: 5 s plus the longest request's tokens at 2,000 "
            "tokens/s, at most half of `max_time_per_iteration`."
        ),
    )
    precision: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Stop a cell once the 95% confidence interval of the objective's metric (mean E2E, TTFT or "
        "TPOT per request; for throughput the ratio of output tokens to E2E) is within this relative half-width "
        "(e.g. 0.02), after `min_requests_for_precision` completed requests and at least one per concurrent "
        "stream; the cell's request and time limits still hold. Requests still running then are incomplete. "
        "Unset: every cell runs to its limits.",
    )
    min_requests_for_precision: int = Field(
        20, ge=2, description="Completed requests a cell needs before `precision` may stop it."
    )
    cell_order: Literal["lightest_first", "heaviest_first"] = Field(
        "heaviest_first",
        description="Order of a trial's cells (open loop by falling rate, then closed loop by falling concurrency; "
        "lightest_first reverses it). Early stopping decides after each cell: heaviest first stops, after one cell, "
        "configurations that break a hard SLO under load (the usual way to fail one), and a heavy cell of a fixed "
        "request count is the shortest; lightest first stops only those too slow even when idle "
        "(benchmarks/RESULTS.md, issue 19).",
    )
    capacity: CapacitySettings | None = Field(
        None,
        description="maximize_goodput: how the highest load meeting every SLO is searched (default: rate 0.25..64 "
        "req/s, 8 steps). Each step is a cell per scenario of `max_requests_per_iteration` requests, at most "
        "`max_time_per_iteration` seconds.",
    )
    additional_params: dict[str, Any] = Field(
        default_factory=dict,
        description=f"Sent with every request; JSON of at most {MAX_ADDITIONAL_PARAMS_BYTES} bytes, finite numbers.",
    )

    @field_validator("additional_params")
    @classmethod
    def _additional_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(json.dumps(value, allow_nan=False))
        except ValueError:
            raise ValueError("holds NaN or infinity; JSON numbers must be finite") from None
        except (TypeError, RecursionError):
            raise ValueError("is not plain JSON (strings, numbers, booleans, null, lists, objects)") from None
        if size > MAX_ADDITIONAL_PARAMS_BYTES:
            raise ValueError(
                f"is {size} bytes of JSON, over the limit of {MAX_ADDITIONAL_PARAMS_BYTES} (it is sent with every "
                "request); keep it small"
            )
        return value

    @field_validator("traffic_scenarios")
    @classmethod
    def _scenarios(cls, values: list[str]) -> list[str]:
        for i, value in enumerate(values):
            try:
                parse_scenario(value)
            except ScenarioError as err:
                raise ValueError(f"{AT}{i}{AT}{err}") from None
        return values

    @field_validator("num_concurrency")
    @classmethod
    def _concurrency(cls, values: list[int]) -> list[int]:
        bad = [v for v in values if not 1 <= v <= 100_000]
        if bad:
            raise ValueError(f"concurrency must be between 1 and 100000, got {bad[0]}")
        return values

    _spec_dir: str = PrivateAttr(default=".")

    @property
    def dataset_root(self) -> str:
        """The folder ``dataset(...)`` paths are relative to: the spec file's."""
        return self._spec_dir

    @model_validator(mode="after")
    def _datasets_readable(self, info: ValidationInfo) -> Benchmark:
        context = info.context if isinstance(info.context, dict) else {}
        self._spec_dir = str(context.get("spec_dir", "."))
        files: SpecFiles | None = context.get("files")
        for i, text in enumerate(self.traffic_scenarios):
            scenario = parse_scenario(text)
            if scenario.dataset is None or files is None:
                continue
            try:
                files.read_dataset(str(Path(self._spec_dir, scenario.dataset).resolve()))
            except DatasetError as err:
                raise ValueError(f"{AT}traffic_scenarios.{i}{AT}{text!r}: {err}") from None
        return self

    @model_validator(mode="after")
    def _sessions_run_closed_loop(self) -> Benchmark:
        chats = [s for s in self.traffic_scenarios if parse_scenario(s).chat is not None]
        if chats and self.request_rates:
            raise ValueError(
                f"`traffic_scenarios` has the multi-turn scenario {chats[0]!r} and `request_rates` is "
                f"{self.request_rates}; a session's turns follow its replies, so multi-turn chats run closed loop "
                "only: drop `request_rates` or move the chats to a spec of their own"
            )
        return self

    @model_validator(mode="after")
    def _min_completed_reachable(self) -> Benchmark:
        if self.min_completed is not None and self.min_completed > self.max_requests_per_iteration:
            raise ValueError(
                f"`min_completed` is {self.min_completed} but `max_requests_per_iteration` is "
                f"{self.max_requests_per_iteration}; use a value at most max_requests_per_iteration"
            )
        return self


class SloMetric(_Model):
    threshold: float = Field(description="Seconds.")
    weight: float = Field(1.0, ge=0, le=1e6)
    hard_fail: bool = False
    fail_ratio: float = Field(0.5, gt=0, le=1e6)

    @field_validator("threshold")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not value > 0 or math.isinf(value):
            raise ValueError(f"threshold must be a positive number of seconds, got {value}")
        return value


class PercentileSlo(_Model):
    p50: SloMetric | None = None
    p90: SloMetric | None = None
    p95: SloMetric | None = None
    p99: SloMetric | None = None

    def items(self) -> list[tuple[str, SloMetric]]:
        return [(k, v) for k in ("p50", "p90", "p95", "p99") if (v := getattr(self, k)) is not None]


def _slo_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "mean" if "threshold" in value else "percentiles"
    return "percentiles" if isinstance(value, PercentileSlo) else "mean"


#: ``{"threshold": ...}`` limits the mean; ``{"p90": {"threshold": ...}}`` limits percentiles.
MeanOrPercentiles = Annotated[
    Annotated[SloMetric, Tag("mean")] | Annotated[PercentileSlo, Tag("percentiles")],
    Discriminator(_slo_kind),
]


class Slo(_Model):
    latency: PercentileSlo | None = None
    ttft: MeanOrPercentiles | None = None
    tpot: MeanOrPercentiles | None = None
    steepness: float = Field(0.1, gt=0, le=1e6)

    def checks(self) -> list[tuple[str, str, SloMetric]]:
        """(metric, statistic, limit) for every SLO: metric in e2e|ttft|tpot, statistic mean|p50|..."""
        out: list[tuple[str, str, SloMetric]] = []
        for field_name, metric in (("latency", "e2e"), ("ttft", "ttft"), ("tpot", "tpot")):
            value = getattr(self, field_name)
            if isinstance(value, SloMetric):
                out.append((metric, "mean", value))
            elif isinstance(value, PercentileSlo):
                out += [(metric, stat, limit) for stat, limit in value.items()]
        return out


class SimulatorSettings(_Model):
    """Options of the built-in simulator runtime (``--sim-*`` flags)."""

    gpu: Literal["h100", "h200", "a100-80g", "b200", "b300", "gb200", "gb300", "l40s", "rtx-pro-6000"] = "h100"
    num_gpus: int = Field(1, ge=1, le=MAX_GPUS)
    speedup: float = Field(1.0, gt=0, le=1e6, description="Simulated seconds per wall second.")
    startup_scale: float = Field(1.0, gt=0, le=1e6, description="Multiplies the simulated startup time.")
    noise: float | None = Field(None, ge=0, le=10)
    speculative_acceptance: list[Annotated[float, Field(gt=0, le=1)]] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Speculative decoding: the probability that draft position i is accepted given that every "
        "position before it was, one rate per position (the last repeats), e.g. [0.8, 0.7, 0.6]; measure it on a "
        "real server (sglang:spec_accept_length). Default: by algorithm (docs/runtimes.md).",
    )
    extra_args: list[str] = Field(
        default_factory=list,
        max_length=MAX_ARGS,
        description="More --sim-* flags, verbatim (not the address, port, model, seed or launch time).",
    )

    @field_validator("extra_args")
    @classmethod
    def _not_owned(cls, value: list[str]) -> list[str]:
        return _refuse_owned(value, SIM_OWNED_FLAGS)

    sglang_version: str | None = Field(
        None,
        description="The SGLang release whose flags the simulator accepts (a shipped table: "
        f"{', '.join(SHIPPED_VERSIONS)}); default: the version the spec's image tag names, else the newest.",
    )

    tokenizer: str | None = Field(
        None,
        description="A tokenizer.json, or a folder holding one (relative to the spec file), that the simulator "
        "counts and caches prompt tokens with, as SGLang does with the model's tokenizer; the client then builds "
        "prompts of the requested length by its count. Default: the model folder's tokenizer.json when the model "
        "is a local folder holding one, else the word rule (one token per whitespace-separated word).",
    )
    _tokenizer_path: str | None = PrivateAttr(default=None)

    @property
    def tokenizer_path(self) -> str | None:
        """The absolute path of the tokenizer.json that ``tokenizer`` names, or None."""
        return self._tokenizer_path

    @model_validator(mode="after")
    def _tokenizer_readable(self, info: ValidationInfo) -> SimulatorSettings:
        if self.tokenizer is None:
            return self
        context = info.context if isinstance(info.context, dict) else {}
        path = Path(str(context.get("spec_dir", ".")), self.tokenizer).resolve()
        files: SpecFiles | None = context.get("files")
        try:
            self._tokenizer_path = str(path) if files is None else files.read_tokenizer(str(path))
        except TokenizerError as err:
            raise ValueError(f"`simulator.tokenizer` is {preview(self.tokenizer, 200)}: {err}") from None
        return self

    @field_validator("sglang_version")
    @classmethod
    def _shipped_version(cls, value: str | None) -> str | None:
        if value is not None and value not in SHIPPED_VERSIONS:
            raise ValueError(
                f"`simulator.sglang_version` is {value!r}; the simulator imitates one of: {', '.join(SHIPPED_VERSIONS)}"
            )
        return value


class DockerSettings(_Model):
    """Options of the docker runtime."""

    image: str | None = Field(None, description="Full image reference; default lmsysorg/sglang:<runtime_image_tag>.")
    pull: Literal["missing", "always", "never"] = "missing"
    gpus: Literal["auto", "all", "none"] | Annotated[int, Field(ge=0, le=MAX_GPUS)] | list[GpuId] = Field(
        "auto",
        description="auto: tp-size x dp-size GPUs from `gpus` (or 0..n-1); all; none; a count; ids.",
    )
    shm_size: str | None = "16g"
    ipc_mode: str | None = "host"
    init: bool = Field(True, description="Run an init process so signals reach the server.")
    volumes: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_ARGS, description="host path -> container_path[:ro|:rw]"
    )
    env: dict[str, str] = Field(default_factory=dict, max_length=MAX_ARGS)
    extra_args: list[str] = Field(
        default_factory=list,
        max_length=MAX_ARGS,
        description="Appended to the server command line (not the address, port or model: the runtime sets them).",
    )
    container_port: int | None = Field(None, ge=1, le=65535)
    stop_timeout: float = Field(10.0, ge=0, le=3600)
    hf_cache: str | None = Field(None, description="Host HF cache; default $HF_HOME or ~/.cache/huggingface.")

    @field_validator("volumes")
    @classmethod
    def _volume_modes(cls, value: dict[str, str]) -> dict[str, str]:
        for host, target in value.items():
            _, _, mode = target.partition(":")
            if mode and mode not in ("ro", "rw"):
                raise ValueError(
                    f"`docker.volumes[{preview(host, 80)}]` is {preview(target, 80)}; write the mode as `:ro` or "
                    "`:rw` (or leave it out)"
                )
        return value

    @field_validator("gpus")
    @classmethod
    def _gpu_ids(cls, value: Any) -> Any:
        return _unique_gpus(value) if isinstance(value, list) else value

    @field_validator("extra_args")
    @classmethod
    def _not_owned(cls, value: list[str]) -> list[str]:
        return _refuse_owned(value)


_K8S_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class DeploySettings(_Model):
    """How the deploy files of the confirmed best are written (``pytest_autotuner/deploy``)."""

    name: str | None = Field(
        None,
        pattern=_K8S_NAME,
        description="Name of the Kubernetes Deployment, Service and Compose service (a DNS-1123 label); default: "
        "the task name made one.",
    )
    namespace: str | None = Field(None, pattern=_K8S_NAME, description="Kubernetes namespace; default: none set.")
    gpu_resource: str = Field(
        "nvidia.com/gpu",
        pattern=r"^[a-z0-9.-]+/[a-z0-9._-]+$",
        description="The extended resource a pod requests GPUs by (tp-size x dp-size x pp-size of them).",
    )
    model_cache_claim: str | None = Field(
        None,
        pattern=_K8S_NAME,
        description="PersistentVolumeClaim mounted as the model cache (the HF cache, or /model for a local model); "
        "default: an emptyDir, downloaded again by every pod.",
    )
    hf_token_secret: str = Field(
        "hf-token",
        pattern=_K8S_NAME,
        description="Kubernetes Secret whose `token` key becomes HF_TOKEN (optional: a public model needs none).",
    )
    folder: str | None = Field(
        None,
        description="The committed deploy files that --autotune-check compares with the baseline's configuration, "
        "relative to the spec file, a folder named *.deploy (never collected as specs); default: <spec "
        "stem>.deploy next to it (written with the baseline).",
    )

    @field_validator("folder")
    @classmethod
    def _deploy_suffix(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).name.endswith(".deploy"):
            raise ValueError(
                f"`deploy.folder` is {preview(value, 200)}; name a folder ending in .deploy (e.g. "
                f"{preview(str(Path(value).with_name(Path(value).name + '.deploy')), 200)}): the plugin never "
                "collects files in such folders as specs"
            )
        return value


class CostSettings(_Model):
    """What a GPU-hour costs: the cost of serving the best and of the tuning run, in the summary and report."""

    gpu_hour: Annotated[float, Field(gt=0, le=1e6)] | dict[str, Annotated[float, Field(gt=0, le=1e6)]] = Field(
        description='Price of one GPU-hour, or a table per GPU name (e.g. {"h100": 2.49, "a100-80g": 1.29}).',
    )
    currency: str = Field("USD", min_length=1, max_length=8)
    source: str = Field(
        "the spec's cost.gpu_hour", max_length=400, description="Where the price comes from (shown with it)."
    )

    @field_validator("gpu_hour")
    @classmethod
    def _table(cls, value: Any) -> Any:
        if isinstance(value, dict) and not value:
            raise ValueError("`cost.gpu_hour` is an empty table; give a price per GPU name or one number")
        return value


class RegressionSettings(_Model):
    """How a run is compared with its committed baseline."""

    tolerance: float = Field(
        0.10, gt=0, le=100, description="Relative change for the worse that counts as a regression."
    )
    baseline_runs: int = Field(5, ge=2, le=100, description="Confirmation runs recorded in a baseline.")
    metrics: dict[str, float] = Field(
        default_factory=dict,
        max_length=MAX_LIST,
        description='Per-metric tolerances, e.g. {"e2e p90": 0.2, "output_throughput": 0.05}.',
    )


class TaskSpec(_Model):
    """One tuning task: what to tune, how to search, what traffic to measure and which SLOs to meet."""

    task_name: str = Field("", max_length=MAX_TASK_NAME, description="Defaults to the spec file's stem.")
    description: str = ""
    model: ModelRef | None = None
    base_runtime: Literal["sglang", "vllm"] = "sglang"
    runtime_image_tag: str = "latest"
    runtime: RuntimeKind = "docker"
    parameters: dict[str, Annotated[list[ParamChoice], Field(max_length=MAX_CHOICES)] | RangeParam] = Field(
        min_length=1, max_length=MAX_PARAMETERS
    )
    optimization: Optimization = Field(default_factory=Optimization)  # type: ignore[arg-type]
    benchmark: Benchmark = Field(default_factory=Benchmark)  # type: ignore[arg-type]
    slo: Slo | None = None
    initial_configs: list[dict[str, ParamChoice]] = Field(default_factory=list, max_length=MAX_INITIAL_CONFIGS)
    gpus: list[GpuId] | None = Field(None, max_length=MAX_GPUS)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)  # type: ignore[arg-type]
    docker: DockerSettings = Field(default_factory=DockerSettings)  # type: ignore[arg-type]
    regression: RegressionSettings = Field(default_factory=RegressionSettings)  # type: ignore[arg-type]
    deploy: DeploySettings = Field(default_factory=DeploySettings)  # type: ignore[arg-type]
    cost: CostSettings | None = None

    @field_validator("task_name")
    @classmethod
    def _task_name(cls, value: str) -> str:
        if value and not value.strip():
            raise ValueError("task_name is blank; name the task or leave the field out (the file name is used)")
        control = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
        if control is not None:
            raise ValueError(
                f"task_name {preview(value, 80)} holds the control character {control!r}; use printable text"
            )
        return value

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: list[int] | None) -> list[int] | None:
        return None if value is None else _unique_gpus(value)

    @property
    def slug(self) -> str:
        """The task name as one safe path segment: it names the report folder and the study file.

        A name that is not already a safe segment gets a short hash of the full name, so distinct names
        (``team/a``, ``team_a``, ``team a``) never share a folder.
        """
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.task_name).strip("._")[:80] or "task"
        if safe == self.task_name:
            return safe
        return f"{safe}-{hashlib.sha256(self.task_name.encode()).hexdigest()[:8]}"

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameters(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        for name, values in value.items():
            if not isinstance(name, str) or len(name) > 100 or not _PARAM_NAME.match(name):
                shown = repr(cut(name, 60)) if isinstance(name, str) else preview(name, 60)
                hint = f"; write {cut(name.lstrip('-'), 60)!r}" if isinstance(name, str) and name[:1] == "-" else ""
                raise ValueError(
                    f"{AT}{cut(str(name), 60)}{AT}parameter name {shown} is not an SGLang flag name like "
                    f"'tp-size'{hint}"
                )
            if isinstance(values, list):
                try:
                    _check_choices(name, values)
                except ValueError as err:
                    raise ValueError(f"{AT}{name}{AT}{err}") from None
        return value

    @model_validator(mode="after")
    def _initial_configs_in_space(self) -> TaskSpec:
        for i, config in enumerate(self.initial_configs):
            unknown = sorted(set(config) - set(self.parameters))
            missing = sorted(set(self.parameters) - set(config))
            if unknown or missing:
                raise ValueError(
                    f"initial_configs[{i}] must set exactly the tuned parameters; "
                    f"unknown: {cut(repr(unknown), 200) if unknown else 'none'}, "
                    f"missing: {cut(repr(missing), 200) if missing else 'none'}"
                )
            for name, value in config.items():
                problem = _outside(self.parameters[name], value)
                if problem:
                    raise ValueError(f"{AT}initial_configs.{i}.{name}{AT}value {preview(value, 60)} {problem}")
        return self

    @model_validator(mode="after")
    def _traffic_fits_the_context(self, info: ValidationInfo) -> TaskSpec:
        """Requests of a scenario must fit the model's context (SGLang answers HTTP 400 to longer ones); a
        dataset's are cut to fit by the client, so only generated traffic is checked."""
        if self.model is None:
            return self
        files: SpecFiles | None = info.context.get("files") if isinstance(info.context, dict) else None
        if files is not None:
            context = files.context_length(self.model.id_or_path)
        else:
            known = known_model(self.model.id_or_path)
            context = known.context_length if known is not None else None
        tuned = self.parameters.get("context-length")
        if isinstance(tuned, list) and tuned and all(isinstance(v, int) and not isinstance(v, bool) for v in tuned):
            context = max(int(v) for v in tuned)  # the largest a trial may run with
        if context is None:
            return self
        for i, text in enumerate(self.benchmark.traffic_scenarios):
            scenario = parse_scenario(text)
            if scenario.dataset is None and scenario.max_total_tokens > context:
                raise ValueError(
                    f"{AT}benchmark.traffic_scenarios.{i}{AT}{text!r}: a request needs up to "
                    f"{longest_request(scenario)} tokens, over the context length of {context:,} tokens of "
                    f"{preview(self.model.id_or_path, 80)}; use shorter lengths"
                )
        return self

    @model_validator(mode="after")
    def _cells_are_bounded(self) -> TaskSpec:
        """The client builds a cell's prompts before the cell starts: the tokens of a cell's requests (requests x
        lengths, arithmetic) are bounded (``scenarios.MAX_CELL_TOKENS``)."""
        bench = self.benchmark
        measured, how = bench.max_requests_per_iteration, "`max_requests_per_iteration`"
        if self.optimization.uses_capacity:
            from pytest_autotuner.core.spec.capacity_limits import CapacityLimits

            limits = CapacityLimits(**bench.capacity.model_dump()) if bench.capacity else CapacityLimits()
            step = limits.step_requests(limits.max, measured)
            if step > measured:
                measured, how = step, "a capacity step at `benchmark.capacity.max`"
        for i, text in enumerate(bench.traffic_scenarios):
            scenario = parse_scenario(text)
            tokens = scenario.cell_tokens(measured, bench.warmup_requests)
            if tokens is not None and tokens > MAX_CELL_TOKENS:
                raise ValueError(
                    f"{AT}benchmark.traffic_scenarios.{i}{AT}{text!r}: a cell sends {measured:,} requests ({how}) "
                    f"+ {bench.warmup_requests:,} warm-ups of up to {longest_request(scenario)} tokens: "
                    f"{tokens:,} tokens in all, over the limit of {MAX_CELL_TOKENS:,} per cell (the client builds a "
                    "cell's prompts in memory); use fewer requests per cell or shorter lengths"
                )
        return self

    @model_validator(mode="after")
    def _grid_is_bounded(self) -> TaskSpec:
        if self.optimization.strategy != "grid":
            return self
        size = 1
        for name, raw in self.parameters.items():
            count = raw.count if isinstance(raw, RangeParam) else len(raw)
            if count is None:
                raise ValueError(
                    f"{AT}parameters.{name}{AT}a float range without `step` has no grid; add a step or use "
                    "the bayesian or random strategy"
                )
            size *= count
        if size > MAX_GRID_POINTS:
            raise ValueError(
                f"{AT}optimization.strategy{AT}the grid has {size:.3g} configurations, over the limit of "
                f"{MAX_GRID_POINTS:,}; use the bayesian or random strategy, or fewer values or larger steps"
            )
        return self

    @model_validator(mode="after")
    def _capacity_search(self) -> TaskSpec:
        opt, bench = self.optimization, self.benchmark
        if not opt.uses_capacity:
            if bench.capacity is not None:
                names = " and ".join(repr(n) for n in opt.objective_names)
                raise ValueError(
                    f"{AT}benchmark.capacity{AT}`benchmark.capacity` is set but the objective is {names}; the "
                    "capacity search runs only for maximize_goodput: drop it or change the objective"
                )
            return self
        goodput = opt.capacity_objective
        if self.slo is None or not self.slo.checks():
            raise ValueError(
                f"{AT}slo{AT}the objective is {goodput!r} but `slo` is "
                f"{'empty' if self.slo is not None else 'missing'}: goodput is the load at which every SLO holds; "
                'declare at least one, e.g. "slo": {"ttft": {"p99": {"threshold": 0.2}}}'
            )
        if bench.precision is not None:
            raise ValueError(
                f"{AT}benchmark.precision{AT}`benchmark.precision` is {bench.precision:g} but the objective is "
                f"{goodput!r}: a load step must run its whole length (a queue that outgrows the server shows "
                "only late, and tail percentiles need every request), so drop precision"
            )
        if not opt.ladder_only and not {"num_concurrency", "request_rates"} & bench.model_fields_set:
            others = ", ".join(n for n in opt.objective_names if n != goodput)
            raise ValueError(
                f"{AT}benchmark.num_concurrency{AT}{goodput!r} is one of several `objectives`: the others "
                f"({others}) are measured on the spec's own cells at fixed loads, the same for every configuration "
                "(the ladder's loads differ per configuration), but neither `benchmark.num_concurrency` nor "
                "`benchmark.request_rates` is set; declare the loads to measure them at, e.g. "
                '"num_concurrency": [16] or "request_rates": [4]'
            )
        capacity = bench.capacity or CapacitySettings()  # type: ignore[call-arg]
        if capacity.load == "rate" and bench.max_time_per_iteration < capacity.step_seconds:
            raise ValueError(
                f"{AT}benchmark.max_time_per_iteration{AT}`benchmark.max_time_per_iteration` is "
                f"{bench.max_time_per_iteration:g} s, shorter than `benchmark.capacity.step_seconds` "
                f"({capacity.step_seconds:g} s) of arrivals per load step; raise it (or shorten the steps)"
            )
        chats = [s for s in bench.traffic_scenarios if parse_scenario(s).chat is not None]
        if chats and capacity.load == "rate":
            raise ValueError(
                f"{AT}benchmark.capacity.load{AT}`benchmark.capacity.load` is 'rate' but `traffic_scenarios` has "
                f"the multi-turn scenario {chats[0]!r}, which runs closed loop only; use load 'concurrency'"
            )
        return self

    @model_validator(mode="after")
    def _per_dollar_needs_a_price(self) -> TaskSpec:
        opt = self.optimization
        if opt.per_dollar and not (opt.per_gpu and self.cost is not None):
            missing = " and ".join(
                what for what, absent in (("`optimization.per_gpu`: true", not opt.per_gpu),
                                          ("a `cost.gpu_hour` price", self.cost is None)) if absent
            )  # fmt: skip
            raise ValueError(
                f"{AT}optimization.per_dollar{AT}`optimization.per_dollar` is true but the spec lacks {missing}; "
                "per dollar is the per-GPU objective divided by the price of a GPU-hour"
            )
        return self

    @model_validator(mode="after")
    def _no_owned_parameters(self) -> TaskSpec:
        owned = owned_flags_in(self.parameters)
        if owned:
            raise ValueError(
                f"{AT}parameters.{owned[0]}{AT}`--{owned[0]}` is set by the runtime itself (address, port and "
                "model of the server the tuner talks to); remove the parameter"
            )
        return self


def _outside(raw: list[ParamChoice] | RangeParam, value: ParamChoice) -> str:
    """Why ``value`` is not a point of the parameter's space ('' when it is)."""
    if isinstance(raw, list):
        if any(_same_choice(value, choice) for choice in raw):
            return ""
        return f"is not one of the listed values {preview(raw, 120)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"is not a number (the range is {raw.low:g}..{raw.high:g})"
    if not raw.low <= value <= raw.high:
        return f"is outside the range {raw.low:g}..{raw.high:g}"
    if raw.is_int and not float(value).is_integer():
        return "is not an integer (the range is of integers)"
    if raw.step is not None:
        steps = (value - raw.low) / raw.step
        if abs(steps - round(steps)) > 1e-6:
            return f"is not on the range's steps ({raw.low:g} + k x {raw.step:g})"
    return ""


def _same_choice(a: object, b: object) -> bool:
    return _choice_key(a) == _choice_key(b)


def _choice_key(value: object) -> object:
    """Equal for values that launch the same server: 1024 and 1024.0 are one value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return (type(value).__name__, value)
    if isinstance(value, float) and value.is_integer():
        return ("number", int(value))
    return ("number", value)


def _unique_gpus(value: list[int]) -> list[int]:
    if len(set(value)) != len(value):
        twice = next(v for v in value if value.count(v) > 1)
        raise ValueError(f"GPU {twice} is listed twice; list each GPU id once")
    return value


def _refuse_owned(args: list[str], extra: Sequence[str] = ()) -> list[str]:
    owned = owned_flags_in(args, extra)
    if owned:
        raise ValueError(
            f"{preview(owned[0], 80)} sets a flag the runtime sets itself (address, port, model"
            f"{', ' + ', '.join(extra) if extra else ''}); remove it"
        )
    return args


def _check_choices(name: str, values: list[Any]) -> None:
    if not values:
        raise ValueError(f"parameter {name!r} has an empty value list; give at least one value")
    kinds = {_choice_kind(v) for v in values}
    if None in kinds:
        bad = next(v for v in values if _choice_kind(v) is None)
        raise ValueError(f"parameter {name!r}: value {preview(bad, 60)} is not a number, string or boolean")
    if len(kinds) > 1:
        raise ValueError(
            f"parameter {name!r} mixes value types {sorted(k for k in kinds if k)} in {preview(values, 120)}; "
            "use one type per parameter"
        )
    if len({_choice_key(v) for v in values}) != len(values):
        seen: set[object] = set()
        twice = next(v for v in values if _choice_key(v) in seen or seen.add(_choice_key(v)))  # type: ignore[func-returns-value]
        raise ValueError(
            f"parameter {name!r} lists the value {preview(twice, 40)} twice (1024 and 1024.0 are one value) "
            f"in {preview(values, 120)}; list each value once"
        )


def _choice_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def parse_spec(path: Path, data: bytes, files: SpecFiles | None = None) -> TaskSpec:
    """Validate the bytes of a JSON or YAML spec file (read at the edge, ``inputs.load_spec``, at most
    ``MAX_SPEC_BYTES``); ``path`` names it in errors and its folder is what its relative paths are relative to.
    ``files`` reads the files the spec names (datasets, a tokenizer, a model folder); None checks the spec alone.
    Raises SpecError with a user-facing message; bounded in time and memory whatever the bytes hold (see the
    module docstring)."""
    raw = read_document(path, data)
    raw.setdefault("task_name", path.name.split(".")[0])
    try:
        return TaskSpec.model_validate(raw, context={"spec_dir": str(path.parent), "files": files})
    except ValidationError as err:
        raise SpecError(format_errors(path, err)) from None
    except RecursionError:
        raise SpecError(f"{path}: the spec is nested too deeply") from None


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of a tuning spec, for editors."""
    schema = TaskSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pytest-autotuner tuning spec"
    return schema
