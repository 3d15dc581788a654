"""Search: strategies, seeding, grid order, dedup through the study's storage, warm start."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import spec, synthetic_evaluate

from pytest_autotuner.core.measure.trial import Params
from pytest_autotuner.core.outcome.session import TuningSession
from pytest_autotuner.core.search.space import SearchSpace
from pytest_autotuner.core.search.study import Search, study_name_for
from pytest_autotuner.study_storage import default_storage_url, open_storage


def make_search(s, storage: str | None = None, seed: int = 1) -> Search:
    return Search(
        spec=s,
        space=SearchSpace.from_spec(s),
        storage=open_storage(storage) if storage else None,
        study_name=study_name_for(s, "sim"),
        seed=seed,
    )


def run(s, storage: str | None = None, seed: int = 1) -> list[Params]:
    calls: list[Params] = []
    TuningSession(spec=s, search=make_search(s, storage, seed), evaluate=synthetic_evaluate(calls)).search()
    return calls


@pytest.mark.parametrize("strategy", ["bayesian", "grid", "random"])
def test_no_configuration_is_evaluated_twice(strategy: str) -> None:
    s = spec(optimization={"strategy": strategy, "max_iterations": 40, "confirm_runs": 0, "remeasure_best": False})
    calls = run(s)
    space = SearchSpace.from_spec(s)
    assert len(calls) == 40
    assert len({space.key(c) for c in calls}) == 40


@pytest.mark.parametrize("strategy", ["bayesian", "random"])
def test_a_new_best_is_measured_again_at_once_and_nothing_else_twice(strategy: str) -> None:
    from pytest_autotuner.core.outcome.records import TrialEvent

    s = spec(optimization={"strategy": strategy, "max_iterations": 40, "confirm_runs": 0})
    calls: list[Params] = []
    events: list[TrialEvent] = []
    search = make_search(s)
    session = TuningSession(spec=s, search=search, evaluate=synthetic_evaluate(calls), on_trial=events.append)
    session.search()
    space = SearchSpace.from_spec(s)
    assert len(calls) == 40  # repeats count in the budget
    bests = [i for i, e in enumerate(events) if e.new_best]
    repeats = [i for i, e in enumerate(events) if e.repeat_of is not None]
    assert bests and repeats == [i + 1 for i in bests if i + 1 < 40]
    for i in repeats:
        assert events[i].repeat_of == events[i - 1].number and calls[i] == calls[i - 1]
        assert events[i].repeat_runs == 2 and events[i].repeat_mean is not None
    assert len({space.key(c) for c in calls}) == 40 - len(repeats)
    # a configuration measured twice is one candidate, at the mean of its runs
    by_number = {r.number: r for r in session.records()[0]}
    for candidate in session.ranked_candidates():
        if candidate.runs:
            values = [by_number[n].value for n in candidate.runs]
            assert candidate.value == pytest.approx(sum(values) / len(values))


def test_grid_measures_each_point_once_even_with_remeasure_best() -> None:
    s = spec(optimization={"strategy": "grid", "max_iterations": 200, "confirm_runs": 0, "remeasure_best": True})
    calls = run(s)
    assert len(calls) == len({SearchSpace.from_spec(s).key(c) for c in calls}) == 80


def test_grid_visits_every_point_once_in_a_seeded_shuffled_order() -> None:
    s = spec(optimization={"strategy": "grid", "max_iterations": 200, "confirm_runs": 0})
    first = run(s, seed=3)
    again = run(s, seed=3)
    other = run(s, seed=4)
    space = SearchSpace.from_spec(s)
    assert len(first) == 80  # the whole grid, then the session stops
    assert first == again
    assert first != other
    assert first != list(space.grid())  # not biased toward the first values
    tp_in_first_ten = {p["tp-size"] for p in first[:10]}
    assert tp_in_first_ten == {1, 2}


def test_seeded_strategies_reproduce() -> None:
    for strategy in ("bayesian", "random"):
        s = spec(optimization={"strategy": strategy, "max_iterations": 12, "confirm_runs": 0})
        assert run(s, seed=5) == run(s, seed=5)
        assert run(s, seed=5) != run(s, seed=6)


def test_random_on_a_finite_space_has_no_repeats_until_exhausted() -> None:
    s = spec(
        parameters={"tp-size": [1, 2], "schedule-policy": ["lpm", "fcfs"]},
        optimization={"strategy": "random", "max_iterations": 10, "n_initial_random": 1, "confirm_runs": 0},
    )
    calls = run(s)
    assert len(calls) == 4
    assert len({tuple(c.values()) for c in calls}) == 4


def test_initial_configs_are_evaluated_first() -> None:
    first = {"tp-size": 2, "mem-fraction-static": 0.9, "schedule-policy": "lpm", "chunked-prefill-size": 4096}
    s = spec(initial_configs=[first], optimization={"max_iterations": 3, "n_initial_random": 1, "confirm_runs": 0})
    assert run(s)[0] == first


def test_a_repeated_proposal_reuses_the_stored_result_after_resume(tmp_path: Path) -> None:
    s = spec(optimization={"max_iterations": 6, "confirm_runs": 0})
    storage = default_storage_url(tmp_path, s.task_name)
    first = run(s, storage)
    # same study, bigger budget: the six finished trials count, and none is measured again
    more = s.model_copy(update={"optimization": s.optimization.model_copy(update={"max_iterations": 10})})
    second = run(more, storage)
    space = SearchSpace.from_spec(s)
    assert len(second) == 4
    assert not {space.key(c) for c in first} & {space.key(c) for c in second}


def test_study_name_depends_on_space_and_runtime_not_budget() -> None:
    s = spec()
    bigger = spec(optimization={"max_iterations": 99})
    other_space = spec(parameters={"tp-size": [1, 2]})
    assert study_name_for(s, "sim") == study_name_for(bigger, "sim")
    assert study_name_for(s, "sim") != study_name_for(s, "docker")
    assert study_name_for(s, "sim") != study_name_for(other_space, "sim")
    assert study_name_for(s, "sim").startswith("unit-task-")


def test_bayesian_starts_from_sglangs_defaults_moved_into_the_space() -> None:
    s = spec(optimization={"max_iterations": 3, "n_initial_random": 1, "confirm_runs": 0})
    search = make_search(s)
    calls: list[Params] = []
    TuningSession(spec=s, search=search, evaluate=synthetic_evaluate(calls)).search()
    # tp 1, fcfs: SGLang's; chunked-prefill 8192 -> 4096, the nearest allowed; with 4096 passed SGLang would use
    # mem-fraction 0.874 on an H100, and 0.85 is the nearest allowed
    expected = {"tp-size": 1, "mem-fraction-static": 0.85, "schedule-policy": "fcfs", "chunked-prefill-size": 4096}
    assert calls[0] == expected
    first = min(search.evaluated(), key=lambda t: t.number)
    assert first.user_attrs["origin"] == "sglang_defaults"


def test_the_defaults_are_those_of_the_gpus_memory() -> None:
    s = spec(optimization={"max_iterations": 3, "n_initial_random": 1, "confirm_runs": 0})
    h200 = Search(spec=s, space=SearchSpace.from_spec(s), storage=None, study_name="h200", seed=1,
                  gpu_memory_mib=143771)  # fmt: skip
    first = h200.propose()
    assert first is not None and first.trial.user_attrs["origin"] == "sglang_defaults"
    assert first.params["mem-fraction-static"] == 0.9  # 0.929 on an H200 with chunked prefill 4096


def test_defaults_come_after_initial_configs_and_can_be_turned_off() -> None:
    mine = {"tp-size": 2, "mem-fraction-static": 0.9, "schedule-policy": "lpm", "chunked-prefill-size": 4096}
    defaults = {"tp-size": 1, "mem-fraction-static": 0.85, "schedule-policy": "fcfs", "chunked-prefill-size": 4096}
    s = spec(initial_configs=[mine], optimization={"max_iterations": 3, "n_initial_random": 1, "confirm_runs": 0})
    assert run(s)[:2] == [mine, defaults]
    off = spec(optimization={"max_iterations": 8, "confirm_runs": 0, "start_from_defaults": False, "seed": 2})
    assert defaults not in run(off)[:1]


@pytest.mark.parametrize("strategy", ["grid", "random"])
def test_grid_and_random_stay_uninformed(strategy: str) -> None:
    s = spec(optimization={"strategy": strategy, "max_iterations": 5, "confirm_runs": 0})
    assert all("origin" not in t.user_attrs for t in make_search(s).study.get_trials())


def test_defaults_are_enqueued_once_per_study_on_resume(tmp_path: Path) -> None:
    s = spec(optimization={"max_iterations": 2, "n_initial_random": 1, "confirm_runs": 0})
    storage = default_storage_url(tmp_path, s.task_name)
    run(s, storage)
    again = make_search(s, storage)
    assert sum(t.user_attrs.get("origin") == "sglang_defaults" for t in again.study.get_trials()) == 1
