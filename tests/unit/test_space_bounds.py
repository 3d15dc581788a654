"""Collection and search cost nothing per value of a range (issue 28): a property test over random specs.

Ranges of up to 10^12 values, up to 64 parameters, every strategy, with and without a GPU limit and with
``tp-size``/``dp-size``/``pp-size`` as lists or ranges. Loading the spec, building the search (what a run does
before its first trial, the unhostable note included) and each of the first two proposals must each take under
a second of CPU (``time.process_time``, not wall time: other processes on the machine do not count). A correct
path takes milliseconds; one that walks a range's values takes minutes, so the bound is far from both. A CPU
timer (``ITIMER_PROF``) aborts a case after a few CPU seconds, so a regression fails at once instead of hanging.
A grid over more than ``MAX_GRID_POINTS`` points, or over a continuous range, stays a clean collection error.
"""

from __future__ import annotations

import json
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from pytest_autotuner.core.search.space import Categorical, SearchSpace
from pytest_autotuner.core.search.study import Search
from pytest_autotuner.core.spec.spec_model import MAX_GRID_POINTS
from pytest_autotuner.core.spec.spec_text import SpecError
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.inputs import load_spec

T = TypeVar("T")
CPU_BOUND = 1.0  #: CPU seconds for collection, and for each proposal
ABORT_AFTER = 5  #: CPU seconds after which a case is stopped (a path that enumerates would run for minutes)
MAX_WIDTH = 10**12  #: values of the widest range drawn

_LAYOUT = ("tp-size", "dp-size", "pp-size")
_FLAGS = ("max-running-requests", "chunked-prefill-size", "mem-fraction-static", "schedule-conservativeness")


class _CpuTimeout(Exception):
    pass


@contextmanager
def _cpu_limit(seconds: float) -> Iterator[None]:
    def expired(signum: int, frame: FrameType | None) -> None:
        where = "".join(traceback.format_stack(frame, limit=6))
        raise _CpuTimeout(f"over {seconds} s of CPU, in:\n{where}")

    previous = signal.signal(signal.SIGPROF, expired)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def _cpu(what: str, step: Callable[[], T]) -> T:
    """Run ``step``; fail when it takes CPU_BOUND CPU seconds or more (stopped after ABORT_AFTER)."""
    start = time.process_time()
    try:
        with _cpu_limit(ABORT_AFTER):
            result = step()
    except _CpuTimeout as err:
        pytest.fail(f"{what} ran over {ABORT_AFTER} s of CPU (it walks the values of a range?): {err}")
    spent = time.process_time() - start
    assert spent < CPU_BOUND, f"{what} took {spent:.2f} s of CPU"
    return result


@st.composite
def _range(draw: st.DrawFn, *, layout: bool = False) -> dict[str, Any]:
    """An int or float range of up to MAX_WIDTH values (stepped, continuous or log)."""
    low = draw(st.integers(1, 64))
    width = draw(st.sampled_from([1, 7, 1000, 20_000, 10**6, 300_000_000, MAX_WIDTH]))
    kind = draw(st.sampled_from(["int", "int-step", "float-step", "float", "log"] if not layout else ["int"]))
    if kind == "int":
        return {"low": low, "high": low + width - 1}
    if kind == "int-step":
        step = draw(st.sampled_from([1, 3, 1000]))
        return {"low": low, "high": low + (width - 1) * step, "step": step}
    if kind == "float-step":  # `width` points between 0 and 1 (a step down to 1e-12)
        return {"low": 0.0, "high": 1.0, "step": 1.0 / max(1, width - 1) if width > 1 else 1.0}
    if kind == "float":
        return {"low": float(low), "high": float(low + width)}
    return {"low": low, "high": low + width, "log": True}


def _choices(draw: st.DrawFn, *, layout: bool = False) -> list[Any]:
    if layout:
        return draw(st.lists(st.sampled_from([1, 2, 4, 8]), min_size=1, max_size=4, unique=True))
    return draw(st.lists(st.integers(1, 10**6), min_size=1, max_size=3, unique=True))


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    strategy = draw(st.sampled_from(["bayesian", "bayesian-nsga2", "random", "grid"]))
    small = strategy == "grid" and draw(st.booleans())  # a grid that the limit allows, or one that it refuses
    n = draw(st.integers(1, 12 if small else 64))
    names = [name for name in _LAYOUT if draw(st.booleans())][:n]
    names += list(_FLAGS[: max(0, min(len(_FLAGS), n - len(names)))])
    names += [f"p{i}" for i in range(n - len(names))]
    parameters: dict[str, Any] = {}
    for name in names:
        layout = name in _LAYOUT
        if small or draw(st.integers(0, 3)) == 0:
            parameters[name] = _choices(draw, layout=layout)
        else:
            parameters[name] = draw(_range(layout=layout))
    optimization: dict[str, Any] = {
        "strategy": strategy.split("-")[0],
        "max_iterations": 20,
        "n_initial_random": draw(st.sampled_from([None, 0, 1])),
        "start_from_defaults": draw(st.booleans()),
        "seed": draw(st.integers(0, 3)),
    }
    if strategy == "bayesian-nsga2":
        optimization["sampler"] = "nsga2"
    return {
        "task_name": "bounds",
        "parameters": parameters,
        "optimization": optimization,
        "max_gpus": draw(st.sampled_from([None, 1, 2, 8])),
    }


def _case(parameters: dict[str, Any], strategy: str, max_gpus: int | None) -> dict[str, Any]:
    optimization = {"strategy": strategy, "max_iterations": 20, "n_initial_random": 1}
    return {"task_name": "bounds", "parameters": parameters, "optimization": optimization, "max_gpus": max_gpus}


_WIDEST = {"low": 1, "high": MAX_WIDTH}


def _grid_refused(parameters: dict[str, Any]) -> bool:
    size = 1
    for raw in parameters.values():
        if isinstance(raw, list):
            size *= len(raw)
            continue
        if "step" not in raw and isinstance(raw["low"], float):
            return True  # continuous: no grid
        step = raw.get("step", 1)
        size *= round((raw["high"] - raw["low"]) / step) + 1
    return size > MAX_GRID_POINTS


def _inside(space: SearchSpace, params: dict[str, Any]) -> bool:
    """Every parameter proposed, within its range or among its choices. (Not ``space.contains``: Optuna's own
    step check fails for steps finer than about 1e-8 of a range, a float-precision limit, not a wrong value.)"""
    if set(params) != set(space.names):
        return False
    for dim in space.dimensions:
        value = params[dim.name]
        if isinstance(dim, Categorical):
            if value not in dim.choices:
                return False
        elif not dim.low <= value <= dim.high:
            return False
    return True


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure in CI reproduces
    phases=(Phase.explicit, Phase.generate),  # no shrinking: a slow case found is reported as drawn
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(case=specs())
@example(case=_case({"max-running-requests": {"low": 1, "high": 300_000_000}}, "random", 2))  # the report
@example(case=_case({"max-running-requests": {"low": 1, "high": 300_000_000}}, "bayesian", 2))
@example(case=_case({"schedule-conservativeness": {"low": 0.0, "high": 1.0, "step": 1e-12}}, "random", 1))
@example(case=_case({"tp-size": _WIDEST, "dp-size": _WIDEST}, "bayesian", 2))
@example(case=_case({"tp-size": _WIDEST, "dp-size": _WIDEST}, "random", 2))
@example(case=_case({"tp-size": [1, 2], "dp-size": _WIDEST}, "bayesian", None))
@example(case=_case({"tp-size": [1, 2], "dp-size": list(range(1, 10_001))}, "bayesian", None))  # the longest list
@example(case=_case({"tp-size": {"low": 3, "high": MAX_WIDTH}, "dp-size": [1, 2]}, "bayesian", 2))  # none fits
@example(case=_case({"tp-size": {"low": 1, "high": 999_999}}, "grid", 1))  # one fits of a grid at the limit
def test_collection_and_first_proposals_cost_nothing_per_value(case: dict[str, Any], tmp_path: Path) -> None:
    max_gpus = case.pop("max_gpus")
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(case))
    if case["optimization"]["strategy"] == "grid" and _grid_refused(case["parameters"]):
        with pytest.raises(SpecError, match=r"optimization\.strategy|no grid") as err:
            _cpu("collection", lambda: load_spec(path))
        assert str(path) in str(err.value)
        return

    def collect() -> tuple[TaskSpec, Search]:
        spec = load_spec(path)
        space = SearchSpace.from_spec(spec)
        assert space.grid_size is None or space.grid_size >= 1  # the run's first note prints it
        search = Search(spec=spec, space=space, storage=None, study_name="s", seed=1, max_gpus=max_gpus)
        search.unhostable_note()
        return spec, search

    _spec, search = _cpu("collection", collect)
    for attempt in range(2):
        proposal = _cpu(f"proposal {attempt + 1}", search.propose)
        if proposal is None:  # nothing (more) the runner can host
            size = search.space.grid_size
            assert max_gpus is not None or (size is not None and attempt >= size)
            return
        assert _inside(search.space, proposal.trial.params)  # params: less those left to the server
        search.study.tell(proposal.trial, float(attempt))
