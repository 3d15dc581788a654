"""The ``benchmark`` and ``slo`` sections of a tuning spec: traffic scenarios and loads, the capacity ladder,
limits per cell, and the service-level objectives a configuration is held to.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pytest_autotuner.core.spec.dataset import DatasetError
from pytest_autotuner.core.spec.scenarios import ScenarioError, parse_scenario
from pytest_autotuner.core.spec.spec_model import (
    MAX_ADDITIONAL_PARAMS_BYTES,
    MAX_CAPACITY_STEPS,
    MAX_LIST,
    SpecFiles,
    SpecModel,
)
from pytest_autotuner.core.spec.spec_text import AT

__all__ = ["Benchmark", "CapacitySettings", "MeanOrPercentiles", "PercentileSlo", "Slo", "SloMetric"]


class CapacitySettings(SpecModel):
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
    min_repeats: int = Field(
        1,
        ge=1,
        le=10,
        description="Measurements of every step at least, pooled, however clearly the first held or broke: more "
        "arrival samples per step, so repeat runs of one configuration agree more closely (about 3x the time at "
        "3; see docs/capacity.md). At most `max_repeats`.",
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
        if self.min_repeats > self.max_repeats:
            raise ValueError(
                f"{AT}min_repeats{AT}`min_repeats` ({self.min_repeats}) is above `max_repeats` ({self.max_repeats}); "
                "raise max_repeats or lower min_repeats"
            )
        if not 2 <= self.max_steps <= MAX_CAPACITY_STEPS:
            raise ValueError(
                f"{AT}max_steps{AT}`max_steps` is {self.max_steps}; use 2 to {MAX_CAPACITY_STEPS} (each step is a "
                "cell per scenario on the trial's server; 8 find the load within a few percent)"
            )
        return self


class Benchmark(SpecModel):
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


class SloMetric(SpecModel):
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


class PercentileSlo(SpecModel):
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


class Slo(SpecModel):
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
