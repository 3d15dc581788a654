"""The Optuna sampler behind each search strategy.

``bayesian`` is Optuna 5's TPE (multivariate, constant liar, constraint-aware through ``trial.set_constraint``)
with changes that matter for tuning spaces, which are mostly small and discrete:

- It never proposes a configuration that was already evaluated or is being evaluated. Plain TPE does so
  often once it has converged on a discrete space; each repeat cost a retry and, after a few, the search fell
  back to a uniformly random unseen point: on a space where many configurations fail at startup, that
  fallback is where most failures after the random start phase came from. Here TPE's own candidates (drawn
  from the model of good trials) are ranked by its acquisition ``l(x) / g(x)`` and the best unseen one wins;
  when every candidate was seen, the acquisition is maximised over all unseen grid points instead.
- Unless the spec sets ``n_initial_random``, the random start phase is 5 trials capped at a tenth of a finite
  space (at least 2), so a small space is not mostly explored at random. An explicit value is used as given.
- With ``max_gpus`` (the runner's GPUs), a configuration whose tp x dp needs more is never proposed: such a trial
  is rejected without a launch, so it costs no GPU time but spends a trial of the budget and teaches nothing.
  The start phase draws uniformly from the unseen configurations that fit (no repeats there either).
- After a server failed at startup for memory (SGLang's "Not enough memory" or a CUDA OOM), every
  configuration that needs at least as much memory per GPU in the flags SGLang sizes it from is certain to fail
  too and is never proposed (memory_failures.py). On the 70B space H2 of ``benchmarks/tuning_efficiency.py``
  startup failures fell from about 20 to under 10 per 50-trial study.
- The parallel layout (tp x dp x pp) decides most of a server's speed and interacts with every other flag, which
  TPE's per-flag kernels do not capture: tp 4 x dp 2 can be the best layout on 8 GPUs while tp 4 (with dp 4: 16
  GPUs) and dp 2 (with tp 1: too slow) look bad, and a layout whose first trial had the wrong other flags (too few
  running requests for the concurrency each replica gets) looks bad for good. So right after the start phase each
  layout that fits and is not certain to fail gets three trials (the layout sweep, a round at a time; fewer rounds
  where three would take over a third of the budget), at TPE's best point within it, so what was learned of the
  other flags travels to every layout. One round was not enough: on H1 the optimum's layout drew 16 running
  requests or chunk 1024 in its one trial more often than not and was rarely visited again. Within a layout's
  turn the point comes first from those with the most flags at a value none of that layout's trials has had, TPE's
  best among them (``layout_coverage``): what TPE learned in one layout can be wrong in another (on H2 chunk 8192
  is best at tp 4 x dp 2 and 9% below the optimum at tp 8, where 4096 is best), and three trials at TPE's best
  point kept that value. With it, H1 reached within 1% after 9.2 trials on average against 13.4, H2 25.1 against
  26.6 (40 seeds). After the sweep, half of the proposals (``layout_share``) go to the least-tried layout among
  the better half, ranked by their best trial (feasible ones by value, infeasible ones by how little they
  missed), again at TPE's best point in it. Skipped with more than 16 layouts, or for the layout share, with
  several objectives. A new best's repeat run (``optimization.remeasure_best``) is no other trial of its layout.

Fewer replicas (``more_replicas_better``): a configuration whose twin with more data-parallel replicas (the same
tp, pp and other flags) fits the GPUs, is not certain to fail and did not fail when measured is not proposed, in
any phase, until nothing else is left. Each replica serves its share of the same offered load, so a replica more
cannot lower throughput or raise latency, and the twin is measured or still open: the configuration could not be
the best. Not with ``per_gpu`` (a replica more costs its GPUs) or DP attention in the space (dp then adds no GPUs).
On H1 and H2 this leaves 4 of the 10 layouts that fit 8 GPUs; with it the search first measured a point within 1%
of H2's optimum after 15.4 trials on average against 20.0 (H1: 7.0 against 9.2; 40 seeds).

After the start phase and the sweep a quarter of the other proposals (``explore``) are uniform draws from the
unseen configurations that fit, as in the start phase. TPE alone settles in the first good region it finds and,
under measurement noise, stays there: on the hard spaces of ``benchmarks/tuning_efficiency.py`` (20 seeds, budget
50, before the sweep) a share of 0.25 reached within 1% of the optimum in 14/20 seeds on H1 and H2 against 13/20
and 10/20 without it (mean trials 28.2 vs 28.8 and 32.1 vs 34.8, median final gap on H2 0.0% vs 5.4%).
The figures of the memory rule and the layouts are in RESULTS.md ("Tuning efficiency on hard spaces").

An extra feasibility term (log P(feasible | x) from Parzen estimators of feasible and infeasible trials) is
available (``feasibility_weight``) but off by default: on the hard spaces of ``benchmarks/tuning_efficiency.py``
(most points infeasible, the optimum on the SLO's edge) weight 2 (the former default) reached the optimum later
than 0 over 10 seeds (28.5 against 23.9 trials on H1); over 20 seeds the two are within noise of each other, and
Optuna's TPE already counts infeasible trials among the bad ones (see RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_autotuner.core.search.gpu_pool import PARALLEL_FLAGS

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial

    from pytest_autotuner.core.measure.trial import ParamValue
    from pytest_autotuner.core.search.optuna_compat import TPEModel
    from pytest_autotuner.core.search.space import Dimension, SearchSpace
    from pytest_autotuner.core.spec.optimization import Optimization

__all__ = [
    "DEFAULT_STARTUP",
    "EXHAUSTIVE_LIMIT",
    "make_sampler",
    "nsga2_population",
    "over_gpus",
    "startup_trials",
    "tpe_options",
]

#: Finite spaces up to this many points are scanned exhaustively when TPE's candidates were all seen:
#: evaluating the two Parzen estimators on 20k points takes a few ms.
EXHAUSTIVE_LIMIT = 20_000
DEFAULT_STARTUP = 5  # the seed's n_initial_random
_STARTUP_FRACTION = 0.1
_MIN_STARTUP = 2
_N_EI_CANDIDATES = 48  # Optuna's 24 leaves too few unseen candidates once TPE concentrates
# see the module doc: 2 and 1 were measured worse than 0 on the hard spaces
_FEASIBILITY_WEIGHT = 0.0
_LAYOUT_FLAGS = frozenset(name for names in PARALLEL_FLAGS.values() for name in names)
_LAYOUT_SHARE = 0.5  # after the sweep, this share of proposals goes to the least-tried of the better layouts
_LAYOUT_TOP = 0.5  # "better": the top half of the layouts, ranked by their best trial
_SWEEP_ROUNDS = 3  # trials per layout in the sweep (one trial says little: other flags can spoil a good layout)
_SWEEP_BUDGET = 1 / 3  # ... fewer rounds where they would take more than this share of the budget
_MAX_SWEPT_LAYOUTS = 16  # more parallel layouts than this: no sweep (it would spend too much of a budget)
_EXPLORE = 0.25  # after the start phase, this share of proposals is a uniform draw from the unseen points that fit


def startup_trials(n_initial_random: int | None, grid_size: int | None) -> int:
    """Random trials before TPE: the spec's value when it sets one; else the default, capped at a tenth of a
    finite space (at least 2)."""
    if n_initial_random is not None:
        return n_initial_random
    if grid_size is None:
        return DEFAULT_STARTUP
    return min(DEFAULT_STARTUP, max(_MIN_STARTUP, math.ceil(_STARTUP_FRACTION * grid_size)))


def nsga2_population(max_iterations: int) -> int:
    """NSGA-II's generation size: a third of the budget, 4 to 20 (Optuna's 50 would leave a 30-trial budget
    in its random first generation)."""
    return max(4, min(20, max_iterations // 3))


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
    import optuna

    if optimization.strategy == "bayesian" and optimization.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=nsga2_population(optimization.max_iterations), seed=seed)
    if optimization.strategy == "bayesian":
        return _unique_tpe_class()(space, seed=seed, **tpe_options(optimization, space, max_gpus=max_gpus))
    return optuna.samplers.RandomSampler(seed=seed)


def tpe_options(optimization: Optimization, space: SearchSpace, *, max_gpus: int | None = None) -> dict[str, Any]:
    """The options ``bayesian``'s TPE sampler gets for a spec (beside the space and the seed)."""
    return {
        "n_startup_trials": startup_trials(optimization.n_initial_random, space.grid_size),
        "n_ei_candidates": _N_EI_CANDIDATES,
        "max_gpus": max_gpus,
        "more_replicas_better": more_replicas_better(optimization, space),
        "sweep_rounds": _SWEEP_ROUNDS,
        "sweep_budget": max(1, math.floor(_SWEEP_BUDGET * optimization.max_iterations)),
        "layout_coverage": True,
    }


def more_replicas_better(optimization: Optimization, space: SearchSpace) -> bool:
    """Whether, at equal other flags, a layout with more data-parallel replicas on the runner's GPUs is never
    worse: each replica serves its share of the same offered load, so throughput, goodput and every latency can
    only gain. Not when the objective is divided by the GPUs a configuration uses (``per_gpu``: a replica more
    costs its GPUs), nor with DP attention in the space (there ``dp-size`` splits attention within the tp group
    and adds no GPUs)."""
    return not optimization.per_gpu and not any("dp-attention" in dim.name for dim in space.dimensions)


def config_key(params: dict[str, Any], search_space: dict[str, BaseDistribution]) -> tuple[float, ...] | None:
    """A trial's point in the sampled dimensions (internal representation; floats rounded), None if partial."""
    if not search_space.keys() <= params.keys():
        return None
    return tuple(round(float(dist.to_internal_repr(params[name])), 9) for name, dist in search_space.items())


def _taken_keys(study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> set[tuple[float, ...]]:
    """Points evaluated (COMPLETE; duplicates are closed as FAIL) or being evaluated by another trial."""
    from optuna.trial import TrialState

    keys = set()
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if other.number != trial.number and (key := config_key(other.params, search_space)) is not None:
            keys.add(key)
    return keys


def _internal(dim: Dimension, dist: BaseDistribution, values: Sequence[ParamValue]) -> list[float]:
    """``values`` of ``dim`` in ``dist``'s internal representation. A list's value is its position, known
    without a search (``to_internal_repr`` looks each up in the choices: 10,000 values would cost 10^8 steps)."""
    from pytest_autotuner.core.search.space import Categorical

    if isinstance(dim, Categorical) and values is dim.choices:
        return [float(i) for i in range(len(values))]  # the distribution's choices are the list, in order
    return [float(dist.to_internal_repr(v)) for v in values]


def grid_candidates(space: SearchSpace, search_space: dict[str, BaseDistribution]) -> dict[str, np.ndarray]:
    """Every grid point of the sampled dimensions, as internal-representation arrays (for the estimators)."""
    import itertools

    axes = []
    for name, dist in search_space.items():
        dim = next(d for d in space.dimensions if d.name == name)
        values = dim.grid_values()
        assert values is not None, "only called for finite spaces"
        axes.append(_internal(dim, dist, values))
    points = np.array(list(itertools.product(*axes)), dtype=float).reshape(-1, len(axes))
    return {name: points[:, i] for i, name in enumerate(search_space)}


#: A dp-size with more values than this has that many of them, evenly spread, as the twins of the fewer-replicas
#: rule (each twin is a pass over the samples)
_MAX_TWIN_VALUES = 64


def _twin_choices(dim: Dimension, dist: BaseDistribution) -> list[float]:
    """The dp-size values (internal) a sample's twin with more replicas may have: every value of a dimension of
    up to ``_MAX_TWIN_VALUES``; of a longer one (a list of up to 10,000 values, a range of up to 10^15, never
    listed) that many, evenly spread by replicas, the largest included, so the cost does not grow with the values.
    Fewer twins exclude fewer points: never wrong, as the exclusion only steers proposals."""
    from pytest_autotuner.core.search.space import Categorical

    values = dim.grid_values()
    if values is not None and len(values) <= _MAX_TWIN_VALUES:
        return sorted(_internal(dim, dist, values))
    if isinstance(dim, Categorical):  # positions (internal) of the numeric values, by replicas
        internal = sorted(
            (float(i) for i in range(len(dim.choices)) if _replicas(dist, float(i)) < math.inf),
            key=lambda i: _replicas(dist, i),
        )
    elif values is None:  # a continuous range
        internal = [float(v) for v in np.linspace(dim.low, dim.high, _MAX_TWIN_VALUES)]
    else:
        internal = [float(dist.to_internal_repr(values[int(i)])) for i in _spread(len(values), _MAX_TWIN_VALUES)]
    if len(internal) > _MAX_TWIN_VALUES:
        internal = [internal[i] for i in _spread(len(internal), _MAX_TWIN_VALUES)]
    return sorted(set(internal))


def _spread(n: int, most: int) -> list[int]:
    """Up to ``most`` indices of 0..n-1, evenly spread, the first and the last included."""
    picks = np.linspace(0, n - 1, min(n, most)).round().astype(int)
    return list(dict.fromkeys(int(i) for i in picks))


def _replicas(dist: BaseDistribution, internal: float) -> float:
    """Data-parallel replicas of a dp-size sample (internal representation); inf when it is not a number."""
    try:
        value = dist.to_external_repr(internal)
    except (IndexError, TypeError, ValueError):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.inf
    return float(value)


def over_gpus(
    samples: dict[str, np.ndarray], search_space: dict[str, BaseDistribution], max_gpus: int | None
) -> np.ndarray:
    """Which samples (internal representation) need more than ``max_gpus`` GPUs (tp x dp); none without a limit.

    Vectorised over the samples (each distinct value is converted once): it runs on every grid point per proposal.
    """
    from pytest_autotuner.core.search.gpu_pool import gpus_needed

    n = len(next(iter(samples.values()))) if samples else 0
    need = np.ones(n)
    if max_gpus is None:
        return np.zeros(n, dtype=bool)
    for aliases in PARALLEL_FLAGS.values():
        name = next((a for a in aliases if a in samples), None)
        if name is None:
            continue
        values = np.asarray(samples[name], dtype=float)
        distinct = np.unique(values)
        sizes = np.array([gpus_needed({name: search_space[name].to_external_repr(float(v))}) for v in distinct])
        need = need * sizes[np.searchsorted(distinct, values)]
    return need > max_gpus


def best_unseen(
    samples: dict[str, np.ndarray],
    scores: np.ndarray,
    taken: set[tuple[float, ...]],
) -> dict[str, float] | None:
    """The highest-scoring sample whose point is not taken (None when all are; -inf scores are never chosen)."""
    names = list(samples)
    for index in np.argsort(-scores, kind="stable"):
        if scores[index] == -np.inf:
            return None
        point = {name: float(samples[name][index]) for name in names}
        if tuple(round(point[name], 9) for name in names) not in taken:
            return point
    return None


def _unique_tpe_class() -> Callable[..., optuna.samplers.TPESampler]:
    """Defined lazily: Optuna is imported only when a study is built."""
    from optuna.trial import TrialState

    from pytest_autotuner.core.search.memory_failures import MEMORY_DIRECTIONS, certain_to_fail
    from pytest_autotuner.core.search.optuna_compat import ChoosingTPESampler

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
            chosen = best_unseen(everything, scores, _taken_keys(study, trial, search_space))
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
            for key in _taken_keys(study, trial, search_space):
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
                chosen = best_unseen(points, scores, _taken_keys(model.study, model.trial, model.search_space))
                if chosen is not None:
                    return chosen
            feasibility = self._feasibility(model)
            samples = model.candidates
            scores = self._scores(model, samples, feasibility)
            taken = _taken_keys(model.study, model.trial, model.search_space)
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
                (t.params, t.user_attrs["failure"])
                for t in finished
                if t.user_attrs.get("failure") in MEMORY_DIRECTIONS
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
            choices = _twin_choices(next(d for d in self._space.dimensions if d.name == name), dist)
            replicas = {choice: _replicas(dist, choice) for choice in choices}
            distinct, where = np.unique(samples[name], return_inverse=True)  # each value converted once
            own = np.array([_replicas(dist, float(v)) for v in distinct])[where.reshape(-1)]
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

    return UniqueTPESampler


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
