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
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pytest_autotuner.core.spec.benchmark_settings import (
    Benchmark,
    CapacitySettings,
    Slo,
)
from pytest_autotuner.core.spec.models import known_model
from pytest_autotuner.core.spec.optimization import (
    Optimization,
)
from pytest_autotuner.core.spec.runtime_kinds import RuntimeKind
from pytest_autotuner.core.spec.runtime_settings import (
    CostSettings,
    DeploySettings,
    DockerSettings,
    RegressionSettings,
    SimulatorSettings,
)
from pytest_autotuner.core.spec.scenarios import MAX_CELL_TOKENS, longest_request, parse_scenario
from pytest_autotuner.core.spec.spec_model import (
    MAX_CHOICES,
    MAX_GPUS,
    MAX_GRID_POINTS,
    MAX_INITIAL_CONFIGS,
    MAX_PARAMETERS,
    MAX_TASK_NAME,
    PARAM_NAME,
    GpuId,
    ModelRef,
    ParamChoice,
    RangeParam,
    SpecFiles,
    SpecModel,
    check_choices,
    outside,
    owned_flags_in,
    unique_gpus,
)
from pytest_autotuner.core.spec.spec_text import AT, SpecError, cut, format_errors, preview, read_document

__all__ = ["TaskSpec", "parse_spec", "spec_json_schema"]


class TaskSpec(SpecModel):
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
        return None if value is None else unique_gpus(value)

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
            if not isinstance(name, str) or len(name) > 100 or not PARAM_NAME.match(name):
                shown = repr(cut(name, 60)) if isinstance(name, str) else preview(name, 60)
                hint = f"; write {cut(name.lstrip('-'), 60)!r}" if isinstance(name, str) and name[:1] == "-" else ""
                raise ValueError(
                    f"{AT}{cut(str(name), 60)}{AT}parameter name {shown} is not an SGLang flag name like "
                    f"'tp-size'{hint}"
                )
            if isinstance(values, list):
                try:
                    check_choices(name, values)
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
                problem = outside(self.parameters[name], value)
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
