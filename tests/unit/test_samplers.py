"""The bayesian sampler: startup cap, no repeats, exhaustive fallback, feasibility from failed trials."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import pytest
from factories import spec

from pytest_autotuner.core.search.samplers import (
    best_unseen,
    config_key,
    grid_candidates,
    over_gpus,
    startup_trials,
)
from pytest_autotuner.core.search.space import SearchSpace
from pytest_autotuner.core.search.study import CONSTRAINT_KEY
from pytest_autotuner.core.search.tpe import make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize(("grid_size", "expected"), [(None, 5), (80, 5), (40, 4), (24, 3), (4, 2), (1000, 5)])
def test_the_default_startup_phase_is_capped_at_a_tenth_of_a_finite_space(grid_size: int | None, expected: int) -> None:
    assert startup_trials(None, grid_size) == expected


@pytest.mark.parametrize(("n_initial", "grid_size"), [(10, 24), (5, 4), (1, 4), (20, 1000), (7, None), (0, 80)])
def test_an_explicit_n_initial_random_is_used_as_given(n_initial: int, grid_size: int | None) -> None:
    assert startup_trials(n_initial, grid_size) == n_initial


def test_best_unseen_skips_taken_points_in_score_order() -> None:
    samples = {"a": np.array([0.0, 1.0, 2.0]), "b": np.array([1.0, 1.0, 0.0])}
    scores = np.array([0.5, 3.0, 2.0])
    assert best_unseen(samples, scores, set()) == {"a": 1.0, "b": 1.0}
    assert best_unseen(samples, scores, {(1.0, 1.0)}) == {"a": 2.0, "b": 0.0}
    assert best_unseen(samples, scores, {(1.0, 1.0), (2.0, 0.0), (0.0, 1.0)}) is None


def test_grid_candidates_cover_the_space_in_internal_representation() -> None:
    s = spec(
        parameters={
            "tp-size": [1, 2],
            "schedule-policy": ["lpm", "fcfs"],
            "max-running-requests": {"low": 8, "high": 24, "step": 8},
        }
    )
    space = SearchSpace.from_spec(s)
    dists = space.distributions()
    cands = grid_candidates(space, dists)
    points = {tuple(cands[n][i] for n in dists) for i in range(len(cands["tp-size"]))}
    assert len(points) == space.grid_size == 12
    expected = {config_key(p, dists) for p in space.grid()}
    assert points == expected


def _study(s, seed: int = 0) -> tuple[optuna.Study, SearchSpace]:
    space = SearchSpace.from_spec(s)
    sampler = make_sampler(s.optimization, space, seed)
    return optuna.create_study(sampler=sampler, direction=s.optimization.direction), space


def test_bayesian_never_proposes_an_evaluated_configuration_on_a_small_space() -> None:
    # 8 points: TPE alone repeats its favourite long before the space is exhausted
    s = spec(
        parameters={"tp-size": [1, 2], "schedule-policy": ["lpm", "fcfs"], "chunked-prefill-size": [512, 4096]},
        optimization={"n_initial_random": 2, "max_iterations": 20},
    )
    study, space = _study(s)
    seen: set[str] = set()
    for _ in range(8):
        trial = study.ask(space.distributions())
        key = space.key(trial.params)
        assert key not in seen
        seen.add(key)
        # best at tp 1 / fcfs / 512: TPE wants to stay there
        p = trial.params
        value = (
            1.0
            + (p["tp-size"] == 2)
            + 0.5 * (p["schedule-policy"] == "lpm")
            + 0.1 * (p["chunked-prefill-size"] == 4096)
        )
        trial.set_constraint(CONSTRAINT_KEY, 0.0)
        study.tell(trial, value)
    assert len(seen) == 8


def _failures_after_start(study: optuna.Study, space: SearchSpace) -> int:
    # tp-size 4 never starts (constraint > 0); among the rest the values are flat, so only feasibility
    # tells the sampler where to go
    failures_after_start = 0
    for i in range(14):
        trial = study.ask(space.distributions())
        failed = trial.params["tp-size"] == 4
        trial.set_constraint(CONSTRAINT_KEY, 2.0 if failed else 0.0)
        study.tell(trial, 10.0 if failed else 1.0 + 0.01 * trial.params["mem-fraction-static"])
        if i >= 3 and failed:
            failures_after_start += 1
    return failures_after_start


_FAILING_SPACE = {"tp-size": [1, 2, 4], "mem-fraction-static": [0.7, 0.75, 0.8, 0.85, 0.9, 0.95]}


def test_failed_configurations_are_avoided_after_the_start() -> None:
    from pytest_autotuner.core.search.tpe import UniqueTPESampler

    s = spec(parameters=_FAILING_SPACE, optimization={"n_initial_random": 2, "max_iterations": 30})
    failures = tpe_failures = 0
    for seed in range(6):
        study, space = _study(s, seed=seed)
        failures += _failures_after_start(study, space)
        tpe_only = UniqueTPESampler(space, n_startup_trials=2, seed=seed, explore=0.0)
        tpe_failures += _failures_after_start(optuna.create_study(sampler=tpe_only, direction="minimize"), space)
    # a third of the space fails: uniform sampling would fail about 4 of each 11, 24 in all. TPE counts infeasible
    # trials among the bad ones; the default sampler's uniform share (explore 0.25) fails like uniform sampling
    assert tpe_failures <= 12
    assert failures <= 18


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bayesian_never_proposes_more_gpus_than_the_runner_has(seed: int) -> None:
    # half the (tp, dp) pairs need more than 4 GPUs; the best values are at the largest tp x dp allowed
    s = spec(
        parameters={"tp-size": [1, 2, 4, 8], "dp-size": [1, 2, 4, 8], "schedule-policy": ["lpm", "fcfs"]},
        optimization={"n_initial_random": 3, "max_iterations": 30},
    )
    space = SearchSpace.from_spec(s)
    study = optuna.create_study(sampler=make_sampler(s.optimization, space, seed, max_gpus=4), direction="maximize")
    seen = set()
    for _ in range(12):
        trial = study.ask(space.distributions())
        gpus = trial.params["tp-size"] * trial.params["dp-size"]
        assert gpus <= 4, trial.params
        seen.add(space.key(trial.params))
        trial.set_constraint(CONSTRAINT_KEY, 0.0)
        study.tell(trial, float(gpus) + 0.1 * (trial.params["schedule-policy"] == "fcfs"))
    assert len(seen) == 12  # the start phase does not repeat either


def test_without_a_gpu_limit_every_tp_and_dp_can_be_proposed() -> None:
    s = spec(
        parameters={"tp-size": [1, 2, 4, 8], "dp-size": [1, 2, 4, 8]},
        optimization={"n_initial_random": 16, "max_iterations": 30},
    )
    study, space = _study(s)
    sizes = set()
    for _ in range(16):
        trial = study.ask(space.distributions())
        sizes.add(trial.params["tp-size"] * trial.params["dp-size"])
        trial.set_constraint(CONSTRAINT_KEY, 0.0)
        study.tell(trial, 1.0)
    assert max(sizes) > 8


def test_over_gpus_marks_samples_by_tp_times_dp() -> None:
    s = spec(parameters={"tp-size": [1, 2, 4], "dp-size": [1, 2], "schedule-policy": ["lpm", "fcfs"]})
    space = SearchSpace.from_spec(s)
    dists = space.distributions()
    cands = grid_candidates(space, dists)
    mask = over_gpus(cands, dists, 4)
    external = [
        (dists["tp-size"].to_external_repr(t), dists["dp-size"].to_external_repr(d))
        for t, d in zip(cands["tp-size"], cands["dp-size"], strict=True)
    ]
    assert [tp * dp > 4 for tp, dp in external] == list(mask)
    assert mask.any() and not over_gpus(cands, dists, None).any()


def test_config_key_is_none_for_a_partial_trial() -> None:
    space = SearchSpace.from_spec(spec())
    assert config_key({"tp-size": 1}, space.distributions()) is None


def _proposals(explore: float, value_of: Callable[[dict[str, Any]], float]) -> list[str]:
    from pytest_autotuner.core.search.tpe import UniqueTPESampler

    s = spec(parameters=_FAILING_SPACE, optimization={"n_initial_random": 2, "max_iterations": 30})
    space = SearchSpace.from_spec(s)
    sampler = UniqueTPESampler(space, n_startup_trials=2, seed=3, explore=explore, layout_sweep=False)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    out = []
    for _ in range(10):
        trial = study.ask(space.distributions())
        trial.set_constraint(CONSTRAINT_KEY, 0.0)
        study.tell(trial, value_of(trial.params))
        out.append(space.key(trial.params))
    return out


def test_an_explore_share_of_one_ignores_what_the_trials_measured() -> None:
    def up(p: dict[str, Any]) -> float:
        return float(p["tp-size"]) + p["mem-fraction-static"]

    def down(p: dict[str, Any]) -> float:
        return -up(p)

    assert _proposals(1.0, up) == _proposals(1.0, down)  # uniform unseen draws after the start, model unused
    assert _proposals(0.0, up) != _proposals(0.0, down)  # TPE follows the values
    assert len(set(_proposals(1.0, up))) == 10


def _layouts_by_trial(layout_sweep: bool, seed: int) -> list[tuple[int, int]]:
    from pytest_autotuner.core.search.tpe import UniqueTPESampler

    s = spec(parameters={"tp-size": [1, 2, 4], "dp-size": [1, 2], "chunked-prefill-size": [1024, 2048, 4096, 8192]})
    space = SearchSpace.from_spec(s)
    sampler = UniqueTPESampler(space, n_startup_trials=2, seed=seed, explore=0.0, layout_sweep=layout_sweep, max_gpus=4)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    layouts = []
    for _ in range(7):
        trial = study.ask(space.distributions())
        p = trial.params
        layouts.append((p["tp-size"], p["dp-size"]))
        trial.set_constraint(CONSTRAINT_KEY, 0.0)
        # tp 1 x dp 1 with large chunks looks best early; tp 4 is better still, TPE alone does not go there
        study.tell(trial, p["chunked-prefill-size"] / 1000 + 10 * (p["tp-size"] == 4) - p["dp-size"])
    return layouts


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_after_the_start_every_parallel_layout_that_fits_gets_a_trial(seed: int) -> None:
    # 5 layouts fit 4 GPUs: (1,1) (1,2) (2,1) (2,2) (4,1); 2 random trials, then the sweep covers the rest
    fitting = {(1, 1), (1, 2), (2, 1), (2, 2), (4, 1)}
    assert set(_layouts_by_trial(True, seed)) == fitting


def test_without_the_sweep_tpe_leaves_layouts_untried() -> None:
    assert any(set(_layouts_by_trial(False, seed)) != {(1, 1), (1, 2), (2, 1), (2, 2), (4, 1)} for seed in range(4))


def test_the_sweep_proposes_the_best_point_of_each_layout_it_visits() -> None:
    # every tp 1 and tp 2 point measured: large chunks are good, the policy does not matter; the sweep then
    # tries tp 4 and tp 8 with what TPE learned (the largest chunk), not at random
    from pytest_autotuner.core.search.tpe import UniqueTPESampler

    chunks = [512, 1024, 2048, 4096, 8192]
    s = spec(parameters={"tp-size": [1, 2, 4, 8], "chunked-prefill-size": chunks, "schedule-policy": ["lpm", "fcfs"]})
    space = SearchSpace.from_spec(s)
    sampler = UniqueTPESampler(space, n_startup_trials=20, seed=5, explore=0.0)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    for tp in (1, 2):
        for chunk in chunks:
            for policy in ("lpm", "fcfs"):
                study.enqueue_trial({"tp-size": tp, "chunked-prefill-size": chunk, "schedule-policy": policy})
    for _ in range(22):
        trial = study.ask(space.distributions())
        trial.set_constraint(CONSTRAINT_KEY, 0.0)
        study.tell(trial, float(trial.params["chunked-prefill-size"]))
    swept = [t.params for t in study.trials[20:]]
    assert sorted(p["tp-size"] for p in swept) == [4, 8]
    assert all(p["chunked-prefill-size"] == 8192 for p in swept)


def _tell_failure(study: optuna.Study, trial: optuna.Trial, failure: str) -> None:
    trial.set_user_attr("failure", failure)
    trial.set_constraint(CONSTRAINT_KEY, 2.0)
    study.tell(trial, -1.0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_a_configuration_certain_to_fail_like_an_earlier_one_is_never_proposed(seed: int) -> None:
    from pytest_autotuner.core.search.memory_failures import certain_to_fail

    # the weights do not fit one GPU below a fraction of 0.9 (tp 1) or 0.75 (tp 2): SGLang's "Not enough memory"
    s = spec(
        parameters={
            "tp-size": [1, 2, 4],
            "mem-fraction-static": [0.7, 0.75, 0.8, 0.85, 0.9],
            "schedule-policy": ["lpm", "fcfs"],
            "chunked-prefill-size": [2048, 8192],
        },
        optimization={"n_initial_random": 3, "max_iterations": 40},
    )
    study, space = _study(s, seed=seed)
    dists = space.distributions()
    failed: list[tuple[dict[str, Any], str]] = []
    for _ in range(40):
        trial = study.ask(dists)
        p = dict(trial.params)
        point = {name: np.array([dist.to_internal_repr(p[name])]) for name, dist in dists.items()}
        assert not certain_to_fail(point, dists, failed)[0], (p, failed)
        minimum = {1: 0.9, 2: 0.75, 4: 0.0}[p["tp-size"]]
        if p["mem-fraction-static"] < minimum:
            failed.append((p, "kv_cache_oom"))
            _tell_failure(study, trial, "kv_cache_oom")
        else:
            trial.set_constraint(CONSTRAINT_KEY, 0.0)
            study.tell(trial, p["tp-size"] + p["mem-fraction-static"])
    # 20 of the 60 points fail; the first failure of each tp rules out the rest below its fraction
    assert len(failed) <= 7


def test_after_the_sweep_the_layout_share_goes_to_the_least_tried_of_the_better_half() -> None:
    from pytest_autotuner.core.search.tpe import UniqueTPESampler

    quality = {(4, 1): 5.0, (2, 2): 4.0, (2, 1): 3.0, (1, 2): 2.0, (1, 1): 1.0}  # the 5 layouts that fit 4 GPUs
    s = spec(parameters={"tp-size": [1, 2, 4], "dp-size": [1, 2], "chunked-prefill-size": [1024, 2048, 4096, 8192]})
    space = SearchSpace.from_spec(s)
    sampler = UniqueTPESampler(space, n_startup_trials=2, seed=7, max_gpus=4, layout_share=1.0)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    layouts = []
    for _ in range(14):
        trial = study.ask(space.distributions())
        layout = (trial.params["tp-size"], trial.params["dp-size"])
        layouts.append(layout)
        trial.set_constraint(CONSTRAINT_KEY, 0.0)
        study.tell(trial, quality[layout] + trial.params["chunked-prefill-size"] / 1e5)
    swept = next(i for i in range(len(layouts)) if set(layouts[: i + 1]) == set(quality)) + 1
    after = layouts[swept:]
    assert len(after) >= 7
    assert set(after) <= {(4, 1), (2, 2), (2, 1)}  # the better half, 3 of 5
    counts = [layouts.count(layout) for layout in [(4, 1), (2, 2), (2, 1)]]
    assert max(counts) - min(counts) <= 1  # least-tried first


def test_the_long_sglang_names_of_the_parallel_sizes_count_as_much_as_the_short_ones() -> None:
    # SGLang accepts --tensor-parallel-size / --data-parallel-size for --tp-size / --dp-size
    s = spec(
        parameters={"tensor-parallel-size": [1, 2, 4], "data-parallel-size": [1, 2], "schedule-policy": ["lpm", "fcfs"]}
    )
    space = SearchSpace.from_spec(s)
    study = optuna.create_study(sampler=make_sampler(s.optimization, space, 0, max_gpus=4), direction="maximize")
    layouts = []
    for _ in range(6):
        trial = study.ask(space.distributions())
        layout = (trial.params["tensor-parallel-size"], trial.params["data-parallel-size"])
        assert layout[0] * layout[1] <= 4, trial.params
        layouts.append(layout)
        trial.set_constraint(CONSTRAINT_KEY, 0.0)
        study.tell(trial, float(layout[0]))
    # the GPU limit and the replicas rule read the long names: per tp, the most replicas that fit 4 GPUs
    assert sorted(layouts) == [(1, 2), (1, 2), (2, 2), (2, 2), (4, 1), (4, 1)]


_FITTING_8 = {(1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (2, 4), (4, 1), (4, 2)}  # tp x dp on 8 GPUs
_MOST_REPLICAS = {(1, 4), (2, 4), (4, 2)}  # per tp, the most replicas that fit


def _layouts_proposed(n: int, seed: int, **optimization: Any) -> list[tuple[int, int]]:
    s = spec(
        parameters={"tp-size": [1, 2, 4], "dp-size": [1, 2, 4], "chunked-prefill-size": [1024, 2048, 4096, 8192]},
        optimization={"objective": "maximize_throughput", "n_initial_random": 2, "max_iterations": 50, **optimization},
    )
    space = SearchSpace.from_spec(s)
    study = optuna.create_study(sampler=make_sampler(s.optimization, space, seed, max_gpus=8), direction="maximize")
    layouts = []
    for _ in range(n):
        trial = study.ask(space.distributions())
        layout = (trial.params["tp-size"], trial.params["dp-size"])
        layouts.append(layout)
        trial.set_constraint(CONSTRAINT_KEY, 0.0)
        study.tell(trial, float(layout[0] * layout[1]) + trial.params["chunked-prefill-size"] / 1e5)
    return layouts


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_sweep_gives_three_trials_to_each_layout_with_the_most_replicas_for_its_tp(seed: int) -> None:
    # fewer replicas at the same tp serve the same load with fewer servers: never better for throughput, so the
    # sweep leaves those layouts to TPE; the others get 3 trials each, a round at a time
    layouts = _layouts_proposed(2 + 9, seed)
    start, sweep = layouts[:2], layouts[2:]
    sweep = sweep[: 9 - sum(layout in _MOST_REPLICAS for layout in start)]
    assert set(sweep) <= _MOST_REPLICAS
    assert all((start + sweep).count(layout) == 3 for layout in _MOST_REPLICAS)


@pytest.mark.parametrize("seed", [0, 1])
def test_per_gpu_the_sweep_visits_every_layout_that_fits(seed: int) -> None:
    # per GPU a replica more costs its GPUs, so no layout is dominated; 2 rounds of 8 fit a third of 50 trials
    # (the 2 start trials count in their layouts' rounds)
    layouts = _layouts_proposed(16, seed, per_gpu=True)
    assert set(layouts[: 2 + 8]) == _FITTING_8
    assert all(layouts.count(layout) == 2 for layout in _FITTING_8)


@pytest.mark.parametrize(
    ("layouts", "budget", "expected"), [(3, 16, 3), (3, None, 3), (8, 16, 2), (3, 4, 1), (10, 1, 1), (16, 33, 2)]
)
def test_the_sweep_takes_fewer_rounds_where_three_would_spend_more_than_its_budget(
    layouts: int, budget: int | None, expected: int
) -> None:
    from pytest_autotuner.core.search.tpe import sweep_rounds

    assert sweep_rounds(3, layouts, budget) == expected


@pytest.mark.parametrize(
    ("per_gpu", "dp_attention", "expected"), [(False, False, True), (True, False, False), (False, True, False)]
)
def test_more_replicas_are_better_unless_per_gpu_or_with_dp_attention(
    per_gpu: bool, dp_attention: bool, expected: bool
) -> None:
    from pytest_autotuner.core.search.samplers import more_replicas_better

    parameters: dict[str, Any] = {"tp-size": [1, 2], "dp-size": [1, 2]}
    if dp_attention:
        parameters["enable-dp-attention"] = [True, False]
    s = spec(parameters=parameters, optimization={"objective": "maximize_throughput", "per_gpu": per_gpu})
    assert more_replicas_better(s.optimization, SearchSpace.from_spec(s)) is expected


def test_a_layout_is_dominated_only_by_one_with_the_same_tensor_and_pipeline_sizes() -> None:
    from optuna.distributions import IntDistribution

    from pytest_autotuner.core.search.tpe import _undominated

    names = ["tp-size", "dp-size", "pp-size"]
    search_space: dict[str, Any] = {name: IntDistribution(1, 8) for name in names}
    layouts = [(1.0, 1.0, 1.0), (1.0, 2.0, 1.0), (1.0, 1.0, 2.0), (2.0, 1.0, 1.0), (2.0, 4.0, 1.0)]
    assert _undominated(layouts, names, search_space) == [(1.0, 2.0, 1.0), (1.0, 1.0, 2.0), (2.0, 4.0, 1.0)]


def _sweep_of_a_new_layout(coverage: bool, seed: int) -> list[dict[str, Any]]:
    """Every tp 1 point measured (large chunks and small CUDA graphs look best there), then the sweep's three
    trials of tp 2."""
    from pytest_autotuner.core.search.tpe import UniqueTPESampler

    chunks, graphs = [1024, 4096, 8192], [32, 128, 512]
    s = spec(
        parameters={
            "tp-size": [1, 2],
            "chunked-prefill-size": chunks,
            "cuda-graph-max-bs": graphs,
            "schedule-policy": ["lpm", "fcfs"],
        }
    )
    space = SearchSpace.from_spec(s)
    sampler = UniqueTPESampler(
        space, n_startup_trials=18, seed=seed, explore=0.0, sweep_rounds=3, layout_coverage=coverage
    )
    study = optuna.create_study(sampler=sampler, direction="maximize")
    for chunk in chunks:
        for graph in graphs:
            for policy in ("lpm", "fcfs"):
                study.enqueue_trial(
                    {"tp-size": 1, "chunked-prefill-size": chunk, "cuda-graph-max-bs": graph, "schedule-policy": policy}
                )
    for _ in range(18 + 3):
        trial = study.ask(space.distributions())
        trial.set_constraint(CONSTRAINT_KEY, 0.0)
        study.tell(trial, trial.params["chunked-prefill-size"] / 1000 - trial.params["cuda-graph-max-bs"] / 100)
    return [t.params for t in study.trials[18:]]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_layouts_sweep_trials_try_values_its_earlier_trials_did_not(seed: int) -> None:
    # what one layout taught (chunk 8192, CUDA graphs up to 32) may be wrong for another: within a layout, each
    # trial takes values of the other flags that its earlier trials there have not had, TPE's best among those
    swept = _sweep_of_a_new_layout(True, seed)
    assert all(p["tp-size"] == 2 for p in swept)
    assert sorted(p["chunked-prefill-size"] for p in swept) == [1024, 4096, 8192]
    assert sorted(p["cuda-graph-max-bs"] for p in swept) == [32, 128, 512]
    assert swept[0]["chunked-prefill-size"] == 8192  # the first is TPE's best point of the layout
    assert [p["schedule-policy"] for p in swept][:2] in (["lpm", "fcfs"], ["fcfs", "lpm"])


def test_without_coverage_a_layouts_sweep_repeats_what_tpe_learned_elsewhere() -> None:
    sweeps = [_sweep_of_a_new_layout(False, seed) for seed in range(4)]
    assert all(p["tp-size"] == 2 for swept in sweeps for p in swept)
    assert any(len({p["chunked-prefill-size"] for p in swept}) < 3 for swept in sweeps)


def _replicas_study(seed: int, **optimization: Any) -> tuple[optuna.Study, SearchSpace]:
    s = spec(
        parameters={"tp-size": [1, 2], "dp-size": [1, 2, 4], "chunked-prefill-size": [2048, 8192]},
        optimization={"objective": "maximize_throughput", "n_initial_random": 2, "max_iterations": 30, **optimization},
    )
    space = SearchSpace.from_spec(s)
    return optuna.create_study(
        sampler=make_sampler(s.optimization, space, seed, max_gpus=4), direction="maximize"
    ), space


def _ask_and_tell(
    study: optuna.Study, space: SearchSpace, crash: frozenset[tuple[int, int, int]] = frozenset()
) -> tuple[int, int, int]:
    trial = study.ask(space.distributions())
    p = trial.params
    point = (p["tp-size"], p["dp-size"], p["chunked-prefill-size"])
    if point in crash:
        _tell_failure(study, trial, "crashed")
    else:
        trial.set_constraint(CONSTRAINT_KEY, 0.0)
        study.tell(trial, float(p["tp-size"] * p["dp-size"]))
    return point


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_point_with_fewer_replicas_than_an_open_twin_is_proposed_only_when_nothing_else_is_left(seed: int) -> None:
    # 4 GPUs: tp 1 x dp 4 and tp 2 x dp 2 serve the same load with more replicas than tp 1 x dp 1-2 and tp 2 x dp 1
    study, space = _replicas_study(seed)
    points = [_ask_and_tell(study, space) for _ in range(6)]
    assert sorted(points[:4]) == [(1, 4, 2048), (1, 4, 8192), (2, 2, 2048), (2, 2, 8192)]
    assert len(set(points)) == 6  # then the others, without a repeat
    assert all(gpus <= 4 for gpus in (tp * dp for tp, dp, _ in points))


@pytest.mark.parametrize("seed", [0, 1])
def test_a_twin_that_failed_does_not_rule_out_fewer_replicas(seed: int) -> None:
    # tp 1 x dp 4 with chunk 2048 crashes: tp 1 x dp 2 with chunk 2048 may run, and is the one point left that
    # no measured or open twin beats
    study, space = _replicas_study(seed)
    points = [_ask_and_tell(study, space, crash=frozenset({(1, 4, 2048)})) for _ in range(5)]
    assert set(points) == {(1, 4, 2048), (1, 4, 8192), (2, 2, 2048), (2, 2, 8192), (1, 2, 2048)}
    assert points.index((1, 2, 2048)) > points.index((1, 4, 2048))  # open once its twin failed


def test_per_gpu_every_replica_count_that_fits_is_proposed() -> None:
    study, space = _replicas_study(0, per_gpu=True)
    points = [_ask_and_tell(study, space) for _ in range(10)]
    assert {(tp, dp) for tp, dp, _ in points} == {(1, 1), (1, 2), (1, 4), (2, 1), (2, 2)}
