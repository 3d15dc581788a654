"""What every section of a tuning spec is built from: the frozen pydantic base (``SpecModel``), the bounds every
list, string and number is held to, the parameter value and range types, the flags a runtime owns, and the
``SpecFiles`` the validators read through. The sections are ``optimization.py``, ``benchmark_settings.py`` and
``runtime_settings.py``; the whole spec is ``task_spec.py``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from pytest_autotuner.core.spec.objectives import OBJECTIVE_DEFS
from pytest_autotuner.core.spec.spec_text import preview

__all__ = [
    "MAX_ADDITIONAL_PARAMS_BYTES",
    "MAX_ARGS",
    "MAX_CAPACITY_STEPS",
    "MAX_CHOICES",
    "MAX_FLOAT",
    "MAX_GPUS",
    "MAX_GPU_ID",
    "MAX_GRID_POINTS",
    "MAX_INITIAL_CONFIGS",
    "MAX_INT",
    "MAX_LIST",
    "MAX_OBJECTIVES",
    "MAX_PARAMETERS",
    "MAX_RANGE_POINTS",
    "MAX_STRING",
    "MAX_TASK_NAME",
    "MIN_OBJECTIVES",
    "OBJECTIVES",
    "PARAM_NAME",
    "RUNTIME_OWNED_FLAGS",
    "SAMPLERS",
    "SIM_OWNED_FLAGS",
    "STRATEGIES",
    "Count",
    "GpuId",
    "ModelRef",
    "ParamChoice",
    "RangeParam",
    "SpecFiles",
    "SpecModel",
    "check_choices",
    "choice_key",
    "choice_kind",
    "outside",
    "owned_flags_in",
    "refuse_owned",
    "same_choice",
    "unique_gpus",
]


STRATEGIES = ("bayesian", "grid", "random")
SAMPLERS = ("tpe", "nsga2")  #: the model behind the bayesian strategy
MIN_OBJECTIVES, MAX_OBJECTIVES = 2, 3  #: of a multi-objective search (``optimization.objectives``)
OBJECTIVES = tuple(OBJECTIVE_DEFS)  #: the names of ``core/spec/objectives.py``'s table
PARAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

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


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_max_length=MAX_STRING)


Count = Annotated[int, Field(ge=0, le=1_000_000)]
GpuId = Annotated[int, Field(ge=0, lt=MAX_GPU_ID)]


class ModelRef(SpecModel):
    id_or_path: str = Field(min_length=1, description="Hub id or local directory of the model.")
    namespace: str = "autotuner"


class RangeParam(SpecModel):
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


def outside(raw: list[ParamChoice] | RangeParam, value: ParamChoice) -> str:
    """Why ``value`` is not a point of the parameter's space ('' when it is)."""
    if isinstance(raw, list):
        if any(same_choice(value, choice) for choice in raw):
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


def same_choice(a: object, b: object) -> bool:
    return choice_key(a) == choice_key(b)


def choice_key(value: object) -> object:
    """Equal for values that launch the same server: 1024 and 1024.0 are one value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return (type(value).__name__, value)
    if isinstance(value, float) and value.is_integer():
        return ("number", int(value))
    return ("number", value)


def unique_gpus(value: list[int]) -> list[int]:
    if len(set(value)) != len(value):
        twice = next(v for v in value if value.count(v) > 1)
        raise ValueError(f"GPU {twice} is listed twice; list each GPU id once")
    return value


def refuse_owned(args: list[str], extra: Sequence[str] = ()) -> list[str]:
    owned = owned_flags_in(args, extra)
    if owned:
        raise ValueError(
            f"{preview(owned[0], 80)} sets a flag the runtime sets itself (address, port, model"
            f"{', ' + ', '.join(extra) if extra else ''}); remove it"
        )
    return args


def check_choices(name: str, values: list[Any]) -> None:
    if not values:
        raise ValueError(f"parameter {name!r} has an empty value list; give at least one value")
    kinds = {choice_kind(v) for v in values}
    if None in kinds:
        bad = next(v for v in values if choice_kind(v) is None)
        raise ValueError(f"parameter {name!r}: value {preview(bad, 60)} is not a number, string or boolean")
    if len(kinds) > 1:
        raise ValueError(
            f"parameter {name!r} mixes value types {sorted(k for k in kinds if k)} in {preview(values, 120)}; "
            "use one type per parameter"
        )
    if len({choice_key(v) for v in values}) != len(values):
        seen: set[object] = set()
        twice = next(v for v in values if choice_key(v) in seen or seen.add(choice_key(v)))  # type: ignore[func-returns-value]
        raise ValueError(
            f"parameter {name!r} lists the value {preview(twice, 40)} twice (1024 and 1024.0 are one value) "
            f"in {preview(values, 120)}; list each value once"
        )


def choice_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None
