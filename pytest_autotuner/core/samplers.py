"""The Optuna sampler behind each search strategy.

``bayesian`` is Optuna 5's TPE (multivariate, constant liar, constraint-aware through ``trial.set_constraint``)
with two changes that matter for tuning spaces, which are mostly small and discrete:

- It never proposes a configuration that was already evaluated or is being evaluated. Plain TPE does so
  often once it has converged on a discrete space; each repeat cost a retry and, after a few, the search fell
  back to a uniformly random unseen point: on a space where many configurations fail at startup, that
  fallback is where most failures after the random start phase came from. Here TPE's own candidates (drawn
  from the model of good trials) are ranked by its acquisition ``l(x) / g(x)`` and the best unseen one wins;
  when every candidate was seen, the acquisition is maximised over all unseen grid points instead.
- Unless the spec sets ``n_initial_random``, the random start phase is 5 trials capped at a tenth of a finite
  space (at least 2), so a small space is not mostly explored at random. An explicit value is used as given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial

    from pytest_autotuner.core.space import SearchSpace
    from pytest_autotuner.core.spec import Optimization

__all__ = ["DEFAULT_STARTUP", "EXHAUSTIVE_LIMIT", "make_sampler", "startup_trials"]

#: Finite spaces up to this many points are scanned exhaustively when TPE's candidates were all seen:
#: evaluating the two Parzen estimators on 20k points takes a few ms.
EXHAUSTIVE_LIMIT = 20_000
DEFAULT_STARTUP = 5  # the seed's n_initial_random
_STARTUP_FRACTION = 0.1
_MIN_STARTUP = 2
_N_EI_CANDIDATES = 48  # Optuna's 24 leaves too few unseen candidates once TPE concentrates
# log P(feasible) counts double: a server that does not start costs a launch and says nothing about speed
_FEASIBILITY_WEIGHT = 2.0


def startup_trials(n_initial_random: int | None, grid_size: int | None) -> int:
    """Random trials before TPE: the spec's value when it sets one; else the default, capped at a tenth of a
    finite space (at least 2)."""
    if n_initial_random is not None:
        return n_initial_random
    if grid_size is None:
        return DEFAULT_STARTUP
    return min(DEFAULT_STARTUP, max(_MIN_STARTUP, math.ceil(_STARTUP_FRACTION * grid_size)))


def make_sampler(optimization: Optimization, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    """TPE without repeats for ``bayesian``; random otherwise.

    Grid and random orders on finite spaces are driven by the search itself (see search.py); the random
    sampler only fills in continuous ranges.
    """
    import optuna

    if optimization.strategy == "bayesian":
        cls = _unique_tpe_class()
        return cls(
            space,
            n_startup_trials=startup_trials(optimization.n_initial_random, space.grid_size),
            n_ei_candidates=_N_EI_CANDIDATES,
            seed=seed,
        )
    return optuna.samplers.RandomSampler(seed=seed)


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


def grid_candidates(space: SearchSpace, search_space: dict[str, BaseDistribution]) -> dict[str, np.ndarray]:
    """Every grid point of the sampled dimensions, as internal-representation arrays (for the estimators)."""
    import itertools

    axes = []
    for name, dist in search_space.items():
        dim = next(d for d in space.dimensions if d.name == name)
        values = dim.grid_values()
        assert values is not None, "only called for finite spaces"
        axes.append([float(dist.to_internal_repr(v)) for v in values])
    points = np.array(list(itertools.product(*axes)), dtype=float).reshape(-1, len(axes))
    return {name: points[:, i] for i, name in enumerate(search_space)}


def best_unseen(
    samples: dict[str, np.ndarray],
    scores: np.ndarray,
    taken: set[tuple[float, ...]],
) -> dict[str, float] | None:
    """The highest-scoring sample whose point is not taken (None when all are)."""
    names = list(samples)
    for index in np.argsort(-scores, kind="stable"):
        point = {name: float(samples[name][index]) for name in names}
        if tuple(round(point[name], 9) for name in names) not in taken:
            return point
    return None


def _unique_tpe_class() -> Callable[..., optuna.samplers.TPESampler]:
    """Defined lazily: Optuna is imported only when a study is built."""
    from optuna.trial import TrialState

    from pytest_autotuner.core.optuna_compat import ChoosingTPESampler, TPEModel

    class UniqueTPESampler(ChoosingTPESampler):
        """TPE whose proposal is the best-scoring configuration that no other trial has (see module doc)."""

        def __init__(self, space: SearchSpace, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._space = space

        def choose(self, model: TPEModel) -> dict[str, float]:
            feasibility = self._feasibility(model)
            samples = model.candidates
            scores = model.acquisition(samples) + _FEASIBILITY_WEIGHT * feasibility(samples)
            taken = _taken_keys(model.study, model.trial, model.search_space)
            chosen = best_unseen(samples, scores, taken)
            grid_size = self._space.grid_size
            if chosen is None and grid_size is not None and grid_size <= EXHAUSTIVE_LIMIT:
                everything = grid_candidates(self._space, model.search_space)
                all_scores = model.acquisition(everything) + _FEASIBILITY_WEIGHT * feasibility(everything)
                chosen = best_unseen(everything, all_scores, taken)
            if chosen is None:  # a huge or exhausted space: TPE's own pick (search.py dedups it)
                chosen = {name: float(values[int(np.argmax(scores))]) for name, values in samples.items()}
            return chosen

        def _feasibility(self, model: TPEModel) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
            """log P(feasible | x) from Parzen estimators of the feasible and the infeasible trials (c-TPE).

            TPE alone puts failed trials among the "bad" ones, next to merely slow ones, so it cannot tell
            "slow here" from "does not start here"; this term steers away from where servers failed.
            """
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


def infeasible(trial: FrozenTrial) -> bool:
    """A positive constraint: a failed trial or a hard SLO violation (see scoring.py)."""
    return any(value > 0 for value in trial.constraints.values())
