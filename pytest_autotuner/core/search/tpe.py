"""Optuna's TPE without repeats, within the runner's GPUs, steered by layouts and memory failures:
``UniqueTPESampler``, and ``make_sampler``, which picks the sampler of each strategy.

What it changes and why is in ``samplers.py``'s docstring, with the shared pieces (the start phase, grid
candidates, configurations over the GPUs, fewer replicas); this module imports Optuna, so it is imported only
when a study is built.

Why one module of about 430 lines: one sampler class on Optuna's interface and the layout rules only it uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

from pytest_autotuner.core.search.gpu_pool import PARALLEL_FLAGS
from pytest_autotuner.core.search.memory_failures import MEMORY_DIRECTIONS, certain_to_fail
from pytest_autotuner.core.search.optuna_compat import ChoosingTPESampler
from pytest_autotuner.core.search.samplers import (
    EXHAUSTIVE_LIMIT,
    best_unseen,
    config_key,
    grid_candidates,
    nsga2_population,
    over_gpus,
    replicas_of,
    taken_keys,
    tpe_options,
    twin_choices,
)

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial

    from pytest_autotuner.core.search.optuna_compat import TPEModel
    from pytest_autotuner.core.search.space import SearchSpace
    from pytest_autotuner.core.spec.optimization import Optimization

__all__ = ["UniqueTPESampler", "make_sampler"]

# see the module doc: 2 and 1 were measured worse than 0 on the hard spaces
_FEASIBILITY_WEIGHT = 0.0
_LAYOUT_FLAGS = frozenset(name for names in PARALLEL_FLAGS.values() for name in names)
_LAYOUT_SHARE = 0.5  # after the sweep, this share of proposals goes to the least-tried of the better layouts
_LAYOUT_TOP = 0.5  # "better": the top half of the layouts, ranked by their best trial
_MAX_SWEPT_LAYOUTS = 16  # more parallel layouts than this: no sweep (it would spend too much of a budget)
_EXPLORE = 0.25  # after the start phase, this share of proposals is a uniform draw from the unseen points that fit


class UniqueTPESampler(ChoosingTPESampler):
    """TPE whose proposal is the best-scoring configuration that no other trial has (see module doc)."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        feasibility_weight: float = _FEASIBILITY_WEIGHT,
        max_gpus: int | None = None,
        explore: float = _EXPLORE,
        layout_sweep: bool = True,
        layout_share: float = _LAYOUT_SHARE,
        more_replicas_better: bool = False,
        sweep_rounds: int = 1,
        sweep_budget: int | None = None,
        layout_coverage: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._space = space
        self._explore = explore
        self._feasibility_weight = feasibility_weight
        self._max_gpus = max_gpus
        self._n_startup = int(kwargs.get("n_startup_trials", 10))
        self._start_rng = np.random.default_rng(kwargs.get("seed"))
        self._layout_sweep = layout_sweep
        self._layout_share = layout_share
        self._more_replicas_better = more_replicas_better
        self._sweep_rounds = sweep_rounds
        self._sweep_budget = sweep_budget
        self._layout_coverage = layout_coverage
        self._swept = False  # the sweep is over (then only the layout share draws)
        self._grid_cache: tuple[tuple[str, ...], dict[str, np.ndarray], dict[tuple[float, ...], int]] | None = None
        self._layout: dict[str, float] | None = None  # the layout of this proposal (sweep or layout share)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """The whole finite space from the first trial on (Optuna's is empty until a trial has finished), so
        the first proposal too is drawn by ``sample_relative``."""
        inferred: dict[str, BaseDistribution] = super().infer_relative_search_space(study, trial)
        if inferred or self._space.grid_size is None:
            return inferred
        return self._space.distributions()

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """In the start phase, a uniformly drawn unseen configuration that fits the GPUs (finite spaces)."""
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        started = len(finished) >= self._n_startup
        if started and self._layout_sweep:
            self._layout = self._next_layout(study, trial, search_space)
            if self._layout is not None:
                try:  # TPE's best point within that layout (choose)
                    return super().sample_relative(study, trial, search_space)
                finally:
                    self._layout = None
        if started and not (self._explore and self._start_rng.random() < self._explore):
            return super().sample_relative(study, trial, search_space)
        if not search_space or self._space.grid_size is None:
            return super().sample_relative(study, trial, search_space)
        if self._space.grid_size > EXHAUSTIVE_LIMIT:
            return super().sample_relative(study, trial, search_space)
        everything, _index = self._grid(search_space)
        scores = np.where(self._excluded(study, everything, search_space), -np.inf, 0.0)
        scores = scores + self._start_rng.random(len(scores))  # a random order among the allowed
        chosen = best_unseen(everything, scores, taken_keys(study, trial, search_space))
        if chosen is None:
            return super().sample_relative(study, trial, search_space)
        return {name: dist.to_external_repr(chosen[name]) for name, dist in search_space.items()}

    def _grid(
        self, search_space: dict[str, BaseDistribution]
    ) -> tuple[dict[str, np.ndarray], dict[tuple[float, ...], int]]:
        """Every grid point (grid_candidates) and the row of each point's key, built once per search space."""
        names = tuple(search_space)
        if self._grid_cache is None or self._grid_cache[0] != names:
            everything = grid_candidates(self._space, search_space)
            rows = np.column_stack([everything[name] for name in names]).tolist()
            index = {tuple(round(v, 9) for v in row): i for i, row in enumerate(rows)}  # as config_key
            self._grid_cache = (names, everything, index)
        return self._grid_cache[1], self._grid_cache[2]

    def _next_layout(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, float] | None:
        """The parallel layout (tp x dp x pp values, internal) to propose in, None for TPE's own proposal: in
        the sweep, a swept layout with fewer trials than the sweep's rounds (the least-tried first); after it,
        for ``layout_share`` of the proposals, the least-tried of the better half of the layouts. Only layouts
        with an open point count (unseen, within the GPUs, not certain to fail)."""
        names = [name for name in search_space if name in _LAYOUT_FLAGS]
        if not names or self._space.grid_size is None or self._space.grid_size > EXHAUSTIVE_LIMIT:
            return None
        rotating = len(study.directions) == 1 and self._start_rng.random() < self._layout_share
        if self._swept and not rotating:
            return None
        everything, index = self._grid(search_space)
        allowed = ~self._excluded(study, everything, search_space)
        for key in taken_keys(study, trial, search_space):
            if (i := index.get(key)) is not None:
                allowed[i] = False
        layout_rows = np.column_stack([everything[name] for name in names])[allowed]
        open_layouts = sorted({tuple(float(v) for v in row) for row in np.unique(layout_rows, axis=0)})
        if not open_layouts or len(open_layouts) > _MAX_SWEPT_LAYOUTS:
            return None
        tried, rank = _layout_record(study, trial, search_space, names)
        swept = open_layouts
        if self._more_replicas_better:  # a layout with fewer replicas than an open one is left to TPE
            swept = _undominated(open_layouts, names, search_space)
        rounds = sweep_rounds(self._sweep_rounds, len(swept), self._sweep_budget)
        untried = [layout for layout in swept if tried.get(layout, 0) < rounds]
        if untried:
            fewest = min(tried.get(layout, 0) for layout in untried)  # one round after the other
            untried = [layout for layout in untried if tried.get(layout, 0) == fewest]
            return dict(zip(names, untried[int(self._start_rng.integers(len(untried)))], strict=True))
        self._swept = True  # for good: layouts only get trials, and points only close
        if not rotating:
            return None
        known = sorted(set(swept) | tried.keys())
        ties = self._start_rng.permutation(len(known))  # equal records in a random order
        ranked = [
            layout
            for _, layout in sorted(
                zip(ties, known, strict=True),
                key=lambda pair: (*rank.get(pair[1], (-1, 0.0)), pair[0]),
                reverse=True,
            )
        ]
        better = [layout for layout in ranked[: math.ceil(_LAYOUT_TOP * len(ranked))] if layout in open_layouts]
        if not better:
            return None
        fewest = min(tried[layout] for layout in better)
        pool = [layout for layout in better if tried[layout] == fewest]
        return dict(zip(names, pool[int(self._start_rng.integers(len(pool)))], strict=True))

    def choose(self, model: TPEModel) -> dict[str, float]:
        if self._layout is not None:  # a layout's turn: TPE's best open point within it
            everything, _index = self._grid(model.search_space)
            inside = np.logical_and.reduce([everything[n] == v for n, v in self._layout.items()])
            points = {name: values[inside] for name, values in everything.items()}
            scores = self._scores(model, points, self._feasibility(model))
            if self._layout_coverage:
                scores = _untried_first(scores, _untried_values(model, points, self._layout))
            chosen = best_unseen(points, scores, taken_keys(model.study, model.trial, model.search_space))
            if chosen is not None:
                return chosen
        feasibility = self._feasibility(model)
        samples = model.candidates
        scores = self._scores(model, samples, feasibility)
        taken = taken_keys(model.study, model.trial, model.search_space)
        chosen = best_unseen(samples, scores, taken)
        grid_size = self._space.grid_size
        if chosen is None and grid_size is not None and grid_size <= EXHAUSTIVE_LIMIT:
            everything, _index = self._grid(model.search_space)
            all_scores = self._scores(model, everything, feasibility)
            chosen = best_unseen(everything, all_scores, taken)
            if chosen is None and self._more_replicas_better:  # each point that could be best was measured
                all_scores = self._scores(model, everything, feasibility, fewer_replicas=True)
                chosen = best_unseen(everything, all_scores, taken)
        if chosen is None:  # a huge or exhausted space: TPE's own pick (search.py dedups it)
            chosen = {name: float(values[int(np.argmax(scores))]) for name, values in samples.items()}
        return chosen

    def _scores(
        self,
        model: TPEModel,
        samples: dict[str, np.ndarray],
        feasibility: Callable[[dict[str, np.ndarray]], np.ndarray],
        *,
        fewer_replicas: bool = False,
    ) -> np.ndarray:
        """TPE's acquisition, -inf where excluded (``fewer_replicas``: points with fewer replicas than an
        open twin are allowed too)."""
        scores = np.asarray(model.acquisition(samples), dtype=float)
        if self._feasibility_weight:
            scores = scores + self._feasibility_weight * feasibility(samples)
        excluded = self._excluded(model.study, samples, model.search_space, fewer_replicas=fewer_replicas)
        return np.where(excluded, -np.inf, scores)

    def _excluded(
        self,
        study: Study,
        samples: dict[str, np.ndarray],
        search_space: dict[str, BaseDistribution],
        *,
        fewer_replicas: bool = False,
    ) -> np.ndarray:
        """Samples not proposed: over the runner's GPUs, or certain to fail at startup as a launched
        configuration did (memory_failures.py); with ``more_replicas_better``, unless ``fewer_replicas``,
        a point with an open twin that has more replicas (``_fewer_replicas``)."""
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        failures = [
            (t.params, t.user_attrs["failure"]) for t in finished if t.user_attrs.get("failure") in MEMORY_DIRECTIONS
        ]
        excluded = self._closed(samples, search_space, failures)
        if self._more_replicas_better and not fewer_replicas:
            excluded |= self._fewer_replicas(finished, samples, search_space, failures)
        return excluded

    def _closed(
        self,
        samples: dict[str, np.ndarray],
        search_space: dict[str, BaseDistribution],
        failures: list[tuple[dict[str, Any], str]],
    ) -> np.ndarray:
        """Over the runner's GPUs, or certain to fail like a memory failure."""
        closed = over_gpus(samples, search_space, self._max_gpus)
        if failures:
            closed |= certain_to_fail(samples, search_space, failures)
        return closed

    def _fewer_replicas(
        self,
        finished: list[FrozenTrial],
        samples: dict[str, np.ndarray],
        search_space: dict[str, BaseDistribution],
        failures: list[tuple[dict[str, Any], str]],
    ) -> np.ndarray:
        """Samples with a twin that has more data-parallel replicas and every other flag equal, where that
        twin fits the GPUs, is not certain to fail and did not fail when measured (among ``finished``): it can
        do no worse (``more_replicas_better``), so a sample's trial could not be the best."""
        n = len(next(iter(samples.values()))) if samples else 0
        name = next((alias for alias in PARALLEL_FLAGS["dp"] if alias in samples), None)
        if name is None:
            return np.zeros(n, dtype=bool)
        dist = search_space[name]
        choices = twin_choices(next(d for d in self._space.dimensions if d.name == name), dist)
        replicas = {choice: replicas_of(dist, choice) for choice in choices}
        distinct, where = np.unique(samples[name], return_inverse=True)  # each value converted once
        own = np.array([replicas_of(dist, float(v)) for v in distinct])[where.reshape(-1)]
        failed = [
            key
            for t in finished
            if t.user_attrs.get("failure") not in (None, "pruned")
            and (key := config_key(t.params, search_space)) is not None
        ]
        # a point as one number (a random projection of its internal values, rounded as config_key)
        weights = np.random.default_rng(0).random(len(search_space))
        failed_codes = np.array(failed, dtype=float).reshape(-1, len(search_space)) @ weights
        dominated = np.zeros(n, dtype=bool)
        for choice in choices:
            fewer = own < replicas[choice]
            if not fewer.any():
                continue
            twin = {**samples, name: np.full(n, choice)}
            open_twin = ~self._closed(twin, search_space, failures)
            if failed:
                rows = np.column_stack([np.round(twin[k], 9) for k in search_space])
                open_twin &= ~np.isin(rows @ weights, failed_codes)
            dominated |= fewer & open_twin
        return dominated

    def _feasibility(self, model: TPEModel) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        """log P(feasible | x) from Parzen estimators of the feasible and the infeasible trials (c-TPE).

        TPE alone puts failed trials among the "bad" ones, next to merely slow ones, so it cannot tell
        "slow here" from "does not start here"; this term steers away from where servers failed.
        """
        if not self._feasibility_weight:
            return lambda samples: np.zeros(len(next(iter(samples.values()))))
        finished = [t for t in model.trials if t.state == TrialState.COMPLETE]
        failed = [t for t in finished if infeasible(t)]
        ok = [t for t in finished if not infeasible(t)]
        if not failed or not ok:
            return lambda samples: np.zeros(len(next(iter(samples.values()))))
        log_pdf_ok = model.fit(ok)
        log_pdf_failed = model.fit(failed)

        def log_p_feasible(samples: dict[str, np.ndarray]) -> np.ndarray:
            log_ok = math.log(len(ok)) + log_pdf_ok(samples)
            log_failed = math.log(len(failed)) + log_pdf_failed(samples)
            return np.asarray(log_ok - np.logaddexp(log_ok, log_failed))

        return log_p_feasible


def make_sampler(
    optimization: Optimization, space: SearchSpace, seed: int, *, max_gpus: int | None = None
) -> optuna.samplers.BaseSampler:
    """TPE without repeats (and within ``max_gpus``, see the module doc) for ``bayesian``, or Optuna's NSGA-II
    (``optimization.sampler``; repeats are caught by search.py's dedup); random otherwise. Both bayesian samplers
    handle several objectives (``optimization.objectives``): TPE splits good from bad trials by non-domination
    rank and hypervolume contribution (MOTPE), NSGA-II by non-dominated sorting and crowding distance; both read
    the constraint each trial records.

    Grid and random orders on finite spaces are driven by the search itself (see search.py); the random
    sampler only fills in continuous ranges.
    """
    if optimization.strategy == "bayesian" and optimization.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=nsga2_population(optimization.max_iterations), seed=seed)
    if optimization.strategy == "bayesian":
        return UniqueTPESampler(space, seed=seed, **tpe_options(optimization, space, max_gpus=max_gpus))
    return optuna.samplers.RandomSampler(seed=seed)


def _layout_record(
    study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution], names: list[str]
) -> tuple[dict[tuple[float, ...], int], dict[tuple[float, ...], tuple[int, float]]]:
    """Per parallel layout: how many trials tried it, and its best trial as a sort key (feasible ones by their
    value, direction applied, above infeasible ones by how little they missed)."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    single = len(study.directions) == 1
    sign = 1.0 if single and study.direction == StudyDirection.MAXIMIZE else -1.0
    tried: dict[tuple[float, ...], int] = {}
    rank: dict[tuple[float, ...], tuple[int, float]] = {}
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
        if other.number == trial.number or not all(name in other.params for name in names):
            continue
        layout = tuple(float(search_space[name].to_internal_repr(other.params[name])) for name in names)
        if "repeat_of" not in other.user_attrs:  # a new best measured again is no other trial of its layout
            tried[layout] = tried.get(layout, 0) + 1
        if single and other.state == TrialState.COMPLETE and other.value is not None:
            missed = max(other.constraints.values(), default=0.0)
            key = (1, sign * other.value) if missed <= 0 else (0, -missed)
            rank[layout] = max(rank.get(layout, key), key)
    return tried, rank


def _untried_values(model: TPEModel, points: dict[str, np.ndarray], layout: dict[str, float]) -> np.ndarray:
    """Per point of a layout: how many of its other flags have a value that no trial of that layout has had."""
    tried: dict[str, set[float]] = {name: set() for name in points if name not in layout}
    for other in model.trials:
        key = config_key(other.params, model.search_space)
        if key is None:
            continue
        values = dict(zip(model.search_space, key, strict=True))
        if all(values[name] == value for name, value in layout.items()):
            for name, seen in tried.items():
                seen.add(values[name])
    n = len(next(iter(points.values())))
    untried = np.zeros(n, dtype=int)
    for name, seen in tried.items():
        untried += ~np.isin(np.round(points[name], 9), list(seen))
    return untried


def _untried_first(scores: np.ndarray, untried: np.ndarray) -> np.ndarray:
    """``scores`` reordered: more untried values first, then by score; -inf (never proposed) stays -inf."""
    order = np.lexsort((scores, untried))  # ascending: the last is the best
    ranked = np.empty(len(scores))
    ranked[order] = np.arange(len(scores), dtype=float)
    return np.where(scores == -np.inf, -np.inf, ranked)


def sweep_rounds(rounds: int, layouts: int, budget: int | None) -> int:
    """Rounds of the layout sweep: ``rounds``, fewer where they would take more than ``budget`` trials (at least
    one)."""
    return rounds if budget is None else max(1, min(rounds, budget // layouts))


def _undominated(
    layouts: list[tuple[float, ...]], names: list[str], search_space: dict[str, BaseDistribution]
) -> list[tuple[float, ...]]:
    """The ``layouts`` (internal values of the sizes ``names``) for which none of the others has the same tensor
    and pipeline sizes and more data-parallel replicas."""
    dp = next((i for i, name in enumerate(names) if name in PARALLEL_FLAGS["dp"]), None)
    if dp is None:
        return layouts
    dist = search_space[names[dp]]

    def replicas(layout: tuple[float, ...]) -> float:
        return float(dist.to_external_repr(layout[dp]))

    def rest(layout: tuple[float, ...]) -> tuple[float, ...]:
        return layout[:dp] + layout[dp + 1 :]

    return [
        layout
        for layout in layouts
        if not any(rest(other) == rest(layout) and replicas(other) > replicas(layout) for other in layouts)
    ]


def infeasible(trial: FrozenTrial) -> bool:
    """A positive constraint: a failed trial or a hard SLO violation (see scoring.py)."""
    return any(value > 0 for value in trial.constraints.values())
