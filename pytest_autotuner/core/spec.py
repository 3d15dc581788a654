"""Tuning specs: the seed system's JSON task format as pydantic v2 models, loaded from JSON or YAML.

Every validation error names the file, the field path, the bad value and how to fix it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

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

from pytest_autotuner.core.dataset import DatasetError, load_exchanges
from pytest_autotuner.core.runtime_kinds import RUNTIME_KINDS, RuntimeKind
from pytest_autotuner.core.scenarios import ScenarioError, parse_scenario
from pytest_autotuner.core.sglang_args import SHIPPED_VERSIONS

__all__ = [
    "OBJECTIVES",
    "RUNTIME_KINDS",
    "STRATEGIES",
    "Benchmark",
    "DockerSettings",
    "ModelRef",
    "Optimization",
    "RangeParam",
    "RuntimeKind",
    "Slo",
    "SloMetric",
    "SpecError",
    "TaskSpec",
    "load_spec",
    "spec_json_schema",
]

STRATEGIES = ("bayesian", "grid", "random")
OBJECTIVES = ("minimize_latency", "maximize_throughput", "minimize_ttft", "minimize_tpot")
_PARAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_AT = "\x00"  # brackets a parameter name inside a validator message, so the error names its path


class SpecError(ValueError):
    """A spec file that cannot be used; the message is meant for the user as is."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
        if self.high < self.low:
            raise ValueError(f"`high` ({self.high:g}) is below `low` ({self.low:g}); swap them")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"`step` is {self.step:g}; use a positive step or leave it out")
        if self.log and self.low <= 0:
            raise ValueError(f"`log` needs `low` > 0, got {self.low:g}")
        if self.log and self.step is not None:
            raise ValueError("`log` and `step` cannot be combined (Optuna does not support it); drop one")
        return self

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high, self.step) if v is not None)


ParamChoice = bool | int | float | str


class Optimization(_Model):
    strategy: str = "bayesian"
    objective: str = "minimize_latency"
    max_iterations: int = Field(100, ge=1)
    n_initial_random: int | None = Field(
        None,
        ge=0,
        description="bayesian: random trials before TPE. An explicit value is used as given; unset, it is 5, "
        "capped at a tenth of a finite space (at least 2) so a small space is not mostly explored at random.",
    )
    timeout_per_iteration: float = Field(600, gt=0, description="Seconds per trial, launch included.")
    seed: int | None = None
    confirm_runs: int = Field(2, ge=0, description="Repeat runs of the best configurations.")
    confirm_top: int = Field(1, ge=1, description="How many of the best configurations are confirmed.")
    patience: int | None = Field(None, ge=1, description="Stop after this many trials without improvement.")
    start_from_defaults: bool = Field(
        True,
        description="bayesian: evaluate SGLang's default flags (moved to the nearest values in the space) first.",
    )
    early_stopping: bool = Field(
        True,
        description="Stop a search trial after any cell once it cannot become the best (recorded `pruned`): a cell "
        "breaks a hard SLO beyond its fail_ratio while a trial meeting every hard SLO is known, or its partial "
        "score is worse than the best's on the same cells by more than `prune_margin`. Confirmation runs always "
        "run to the end.",
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

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return "maximize" if self.objective.startswith("maximize") else "minimize"


class Benchmark(_Model):
    task: str = "text-to-text"
    model_name: str | None = None
    model_tokenizer: str | None = None
    traffic_scenarios: list[str] = Field(default_factory=lambda: ["D(100,100)"], min_length=1)
    num_concurrency: list[int] = Field(default_factory=lambda: [1], min_length=1)
    request_rates: list[float] = Field(default_factory=list)
    max_time_per_iteration: float = Field(30, gt=0, description="Seconds per (scenario, load) cell.")
    max_requests_per_iteration: int = Field(100, ge=1, description="Requests per (scenario, load) cell.")
    warmup_requests: int = Field(2, ge=0)
    api: Literal["chat", "completions"] = "chat"
    max_error_rate: float = Field(0.1, ge=0, le=1)
    min_completed: int | None = Field(
        None,
        ge=1,
        description=(
            "Fewest requests of a cell that must finish (complete or fail) before its time limit ends; a cell "
            "with fewer fails the trial as `stalled` (the server stopped answering or is far too slow for the "
            "load). Default: half of the requests sent in the cell, at least 1."
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
        "lightest_first",
        description="Order of a trial's cells (closed loop by concurrency, then open loop by rate). Early stopping "
        "decides after each cell: lightest first stops configurations too slow even when idle after the cheapest "
        "cell; heaviest first also stops, after one cell, those that break a hard SLO only under load.",
    )
    additional_params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("traffic_scenarios")
    @classmethod
    def _scenarios(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                parse_scenario(value)
            except ScenarioError as err:
                raise ValueError(str(err)) from None
        return values

    @field_validator("num_concurrency")
    @classmethod
    def _concurrency(cls, values: list[int]) -> list[int]:
        bad = [v for v in values if v < 1]
        if bad:
            raise ValueError(f"concurrency must be at least 1, got {bad[0]}")
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
        for text in self.traffic_scenarios:
            scenario = parse_scenario(text)
            if scenario.dataset is None:
                continue
            try:
                load_exchanges(str(Path(self._spec_dir, scenario.dataset).resolve()))
            except DatasetError as err:
                raise ValueError(f"`traffic_scenarios` has {text!r}: {err}") from None
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
    weight: float = Field(1.0, ge=0)
    hard_fail: bool = False
    fail_ratio: float = Field(0.5, gt=0)

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
    steepness: float = Field(0.1, gt=0)

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

    gpu: Literal["h100", "h200", "a100-80g"] = "h100"
    num_gpus: int = Field(1, ge=1)
    speedup: float = Field(1.0, gt=0, description="Simulated seconds per wall second.")
    startup_scale: float = Field(1.0, gt=0, description="Multiplies the simulated startup time.")
    noise: float | None = Field(None, ge=0)
    extra_args: list[str] = Field(default_factory=list, description="More --sim-* flags, verbatim.")
    sglang_version: str | None = Field(
        None,
        description="The SGLang release whose flags the simulator accepts (a shipped table: "
        f"{', '.join(SHIPPED_VERSIONS)}); default: the version the spec's image tag names, else the newest.",
    )

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
    gpus: Literal["auto", "all", "none"] | int | list[int] = Field(
        "auto", description="auto: tp-size x dp-size GPUs from `gpus` (or 0..n-1); all; none; a count; ids."
    )
    shm_size: str | None = "16g"
    ipc_mode: str | None = "host"
    init: bool = Field(True, description="Run an init process so signals reach the server.")
    volumes: dict[str, str] = Field(default_factory=dict, description="host path -> container_path[:ro|:rw]")
    env: dict[str, str] = Field(default_factory=dict)
    extra_args: list[str] = Field(default_factory=list, description="Appended to the server command line.")
    container_port: int | None = None
    stop_timeout: float = Field(10.0, ge=0)
    hf_cache: str | None = Field(None, description="Host HF cache; default $HF_HOME or ~/.cache/huggingface.")

    @field_validator("volumes")
    @classmethod
    def _volume_modes(cls, value: dict[str, str]) -> dict[str, str]:
        for host, target in value.items():
            _, _, mode = target.partition(":")
            if mode and mode not in ("ro", "rw"):
                raise ValueError(
                    f"`docker.volumes[{host!r}]` is {target!r}; write the mode as `:ro` or `:rw` (or leave it out)"
                )
        return value


class RegressionSettings(_Model):
    """How a run is compared with its committed baseline."""

    tolerance: float = Field(0.10, gt=0, description="Relative change for the worse that counts as a regression.")
    baseline_runs: int = Field(5, ge=2, description="Confirmation runs recorded in a baseline.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description='Per-metric tolerances, e.g. {"e2e p90": 0.2, "output_throughput": 0.05}.'
    )


class TaskSpec(_Model):
    """One tuning task: what to tune, how to search, what traffic to measure and which SLOs to meet."""

    task_name: str = Field("", description="Defaults to the spec file's stem.")
    description: str = ""
    model: ModelRef | None = None
    base_runtime: Literal["sglang", "vllm"] = "sglang"
    runtime_image_tag: str = "latest"
    runtime: RuntimeKind = "docker"
    parameters: dict[str, list[ParamChoice] | RangeParam] = Field(min_length=1)
    optimization: Optimization = Field(default_factory=Optimization)  # type: ignore[arg-type]
    benchmark: Benchmark = Field(default_factory=Benchmark)  # type: ignore[arg-type]
    slo: Slo | None = None
    initial_configs: list[dict[str, ParamChoice]] = Field(default_factory=list)
    gpus: list[int] | None = None
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)  # type: ignore[arg-type]
    docker: DockerSettings = Field(default_factory=DockerSettings)  # type: ignore[arg-type]
    regression: RegressionSettings = Field(default_factory=RegressionSettings)  # type: ignore[arg-type]

    @field_validator("task_name")
    @classmethod
    def _task_name(cls, value: str) -> str:
        if value and not value.strip():
            raise ValueError("task_name is blank; name the task or leave the field out (the file name is used)")
        return value

    @property
    def slug(self) -> str:
        """The task name as one safe path segment: it names the report folder and the study file."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.task_name).strip("._") or "task"
        return slug[:100]

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameters(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        for name, values in value.items():
            if not isinstance(name, str) or not _PARAM_NAME.match(name):
                hint = f"; write {name.lstrip('-')!r}" if isinstance(name, str) and name.startswith("-") else ""
                raise ValueError(
                    f"{_AT}{name}{_AT}parameter name {name!r} is not an SGLang flag name like 'tp-size'{hint}"
                )
            if isinstance(values, list):
                try:
                    _check_choices(name, values)
                except ValueError as err:
                    raise ValueError(f"{_AT}{name}{_AT}{err}") from None
        return value

    @model_validator(mode="after")
    def _initial_configs_in_space(self) -> TaskSpec:
        for i, config in enumerate(self.initial_configs):
            unknown = sorted(set(config) - set(self.parameters))
            missing = sorted(set(self.parameters) - set(config))
            if unknown or missing:
                raise ValueError(
                    f"initial_configs[{i}] must set exactly the tuned parameters; "
                    f"unknown: {unknown or 'none'}, missing: {missing or 'none'}"
                )
        return self


def _check_choices(name: str, values: list[Any]) -> None:
    if not values:
        raise ValueError(f"parameter {name!r} has an empty value list; give at least one value")
    kinds = {_choice_kind(v) for v in values}
    if None in kinds:
        bad = next(v for v in values if _choice_kind(v) is None)
        raise ValueError(f"parameter {name!r}: value {bad!r} is not a number, string or boolean")
    if len(kinds) > 1:
        raise ValueError(
            f"parameter {name!r} mixes value types {sorted(k for k in kinds if k)} in {values!r}; "
            "use one type per parameter"
        )
    if len({json.dumps(v) for v in values}) != len(values):
        raise ValueError(f"parameter {name!r} lists a value twice in {values!r}; list each value once")


def _choice_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid tuning spec ({err.error_count()} problem{'s' * (err.error_count() > 1)})"]
    for item in err.errors():
        # pydantic reports union members as extra path segments: keep the data path only
        members = {"RangeParam", "mean", "percentiles", "bool", "int", "float", "str"}
        loc = [str(p) for p in item["loc"] if str(p) not in members and not str(p).startswith(("list[", "function-"))]
        msg = item["msg"].removeprefix("Value error, ")
        if msg.startswith(_AT):
            name, _, msg = msg[1:].partition(_AT)
            loc.append(name)
        field = ".".join(loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling against the spec format (see the JSON Schema)"
        elif item["type"] == "missing":
            msg = "required field is missing"
        value = item.get("input")
        quiet = item["type"] == "missing" or "got " in msg or loc[:1] == ["parameters"]
        shown = "" if quiet else f" (got {json.dumps(value, default=str)[:120]})"
        lines.append(f"  `{field}`: {msg}{shown}")
    return "\n".join(lines)


def load_spec(path: str | Path) -> TaskSpec:
    """Load and validate a JSON or YAML spec file; raises SpecError with a user-facing message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"{path}: cannot read the spec ({err.strerror})") from None
    raw = _parse_text(path, text)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a tuning spec must be a JSON/YAML object, got {type(raw).__name__}")
    raw.setdefault("task_name", path.name.split(".")[0])
    try:
        return TaskSpec.model_validate(raw, context={"spec_dir": str(path.parent)})
    except ValidationError as err:
        raise SpecError(_format_errors(path, err)) from None


def _parse_text(path: Path, text: str) -> Any:
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SpecError(f"{path}: not valid YAML: {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(f"{path}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}") from None


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of a tuning spec, for editors."""
    schema = TaskSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pytest-autotuner tuning spec"
    return schema
