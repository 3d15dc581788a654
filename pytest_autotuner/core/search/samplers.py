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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_autotuner.core.search.gpu_pool import PARALLEL_FLAGS

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial

    from pytest_autotuner.core.measure.trial import ParamValue
    from pytest_autotuner.core.search.space import Dimension, SearchSpace
    from pytest_autotuner.core.spec.optimization import Optimization

__all__ = [
    "DEFAULT_STARTUP",
    "EXHAUSTIVE_LIMIT",
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
_SWEEP_ROUNDS = 3  # trials per layout in the sweep (one trial says little: other flags can spoil a good layout)
_SWEEP_BUDGET = 1 / 3  # ... fewer rounds where they would take more than this share of the budget


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


def taken_keys(study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> set[tuple[float, ...]]:
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


def twin_choices(dim: Dimension, dist: BaseDistribution) -> list[float]:
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
            (float(i) for i in range(len(dim.choices)) if replicas_of(dist, float(i)) < math.inf),
            key=lambda i: replicas_of(dist, i),
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


def replicas_of(dist: BaseDistribution, internal: float) -> float:
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
