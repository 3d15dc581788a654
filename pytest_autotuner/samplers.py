"""The Optuna sampler behind each search strategy."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

    from pytest_autotuner.space import SearchSpace
    from pytest_autotuner.spec import Optimization

__all__ = ["make_sampler"]


def make_sampler(optimization: Optimization, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    """TPE for ``bayesian`` (Optuna 5: multivariate, constant liar, constraint-aware); random otherwise.

    Grid and random orders on finite spaces are driven by the search itself (see search.py); the random
    sampler only fills in continuous ranges.
    """
    import optuna

    if optimization.strategy == "bayesian":
        return optuna.samplers.TPESampler(n_startup_trials=optimization.n_initial_random, seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)
