"""Every use of Optuna's private API, in one place, checked against the Optuna versions it was verified on.

Nothing else in the package may touch an Optuna name that starts with an underscore: an Optuna upgrade that
breaks one of them then fails here, at import (a symbol that is gone) or in the named test of
``tests/unit/test_optuna_compat.py`` (a behaviour that changed), not in the middle of a tuning session.

Private symbols used, and the public API that is missing:

- ``Study._storage`` (``storage_of``): a study does not expose its storage; we need it to set user attributes
  on a trial we did not ask (a worker's trial left running) and to record heartbeats.
- ``Trial._trial_id`` / ``FrozenTrial._trial_id`` (``trial_id``): storages address trials by id, and the
  public ``number`` is only unique per study.
- ``optuna.storages._heartbeat.is_heartbeat_enabled`` and ``BaseHeartbeat.record_heartbeat``
  (``heartbeat_enabled``, ``record_heartbeat``): heartbeats are public only inside ``Study.optimize``, which
  this plugin does not use (it runs ask and tell around server launches).
- ``optuna.storages._heartbeat.get_heartbeat_thread`` (``heartbeat_thread``): the same, for the thread that
  beats while a trial runs.
- ``optuna.storages.fail_stale_trials`` (``fail_stale_trials``): public but experimental; wrapped here so its
  ``ExperimentalWarning`` is silenced in one place and a change of its signature is caught by a test.
- ``BaseDistribution._contains`` (``contains``): whether an internal value lies in a distribution; no public
  equivalent.
- ``TPESampler._sample`` and its helpers ``_build_parzen_estimator``, ``_compute_acquisition_func``,
  ``_rng``, ``_n_ei_candidates``, and ``optuna.samplers._tpe.sampler._split_trials``, ``default_gamma`` and
  ``default_gamma_multiobjective`` (``ChoosingTPESampler``): TPE offers no hook to choose among its candidates;
  tpe.py ranks them itself (no repeats, feasibility). With several objectives ``_split_trials`` ranks by
  non-domination and ``_build_parzen_estimator`` weighs the good trials by hypervolume contribution (MOTPE).
- ``optuna._hypervolume.compute_hypervolume`` (``optuna_hypervolume``): Optuna's exact hypervolume, the
  reference ``core/outcome/pareto.py``'s own is checked against (tests, ``benchmarks/pareto_front.py``).

Public API is used where it exists: a trial is failed with ``Study.tell(number, state=FAIL)`` and trials are
read with ``Study.get_trials``.

Version check: Optuna outside the range verified here (``VERIFIED``) only warns (``OptunaVersionWarning``).
A missing private symbol raises at import (``ImportError`` naming the installed and verified versions), so a
version that actually breaks something fails early; one that is merely newer (the package's dependency
range already excludes another major version) can be tried, and the tests here say which use broke.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from packaging.version import Version

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.storages import BaseStorage
    from optuna.study import Study
    from optuna.trial import FrozenTrial, Trial

__all__ = [
    "VERIFIED",
    "ChoosingTPESampler",
    "OptunaVersionWarning",
    "TPEModel",
    "contains",
    "fail_stale_trials",
    "heartbeat_enabled",
    "heartbeat_thread",
    "mark_failed",
    "optuna_hypervolume",
    "quiet_optuna_logging",
    "record_heartbeat",
    "storage_of",
    "trial_id",
    "version_problem",
]

#: Optuna versions the private uses below were verified on: at least the first, below the second.
VERIFIED = ("5.0", "6.0")


class OptunaVersionWarning(UserWarning):
    """The installed Optuna is outside the versions pytest-autotuner was verified on."""


def version_problem(installed: str) -> str | None:
    """Why ``installed`` is outside ``VERIFIED`` (None when inside)."""
    low, high = VERIFIED
    # on release numbers, so that a pre-release of the next major (6.0.0.dev0) counts as that major
    if Version(low).release <= Version(installed).release < Version(high).release:
        return None
    return (
        f"Optuna {installed} is installed, but pytest-autotuner uses Optuna internals verified on "
        f">={low},<{high}; install a verified version (pip install 'optuna>={low},<{high}'), or run "
        "tests/unit/test_optuna_compat.py to see which use breaks."
    )


_problem = version_problem(optuna.__version__)
if _problem is not None:
    warnings.warn(_problem, OptunaVersionWarning, stacklevel=2)

try:
    from optuna._hypervolume import compute_hypervolume
    from optuna.samplers._tpe.sampler import _split_trials, default_gamma, default_gamma_multiobjective
    from optuna.storages._heartbeat import BaseHeartbeat, get_heartbeat_thread, is_heartbeat_enabled
except ImportError as error:  # pragma: no cover - only with an unverified Optuna
    raise ImportError(
        f"Optuna {optuna.__version__} lacks a private name pytest-autotuner needs ({error}); "
        f"install optuna>={VERIFIED[0]},<{VERIFIED[1]}."
    ) from error


def optuna_hypervolume(losses: np.ndarray, reference: np.ndarray) -> float:
    """Optuna's hypervolume of ``losses`` (every objective minimized) up to ``reference``."""
    return float(compute_hypervolume(np.asarray(losses, dtype=float), np.asarray(reference, dtype=float)))


def quiet_optuna_logging() -> None:
    """Optuna logs every trial at INFO; a tuning session reports its own progress. Call once (pytest_configure)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- storage and trial identity ---------------------------------------------------------------------------------


def storage_of(study: Study) -> BaseStorage:
    """The storage behind ``study``."""
    storage: BaseStorage = study._storage
    return storage


def trial_id(trial: Trial | FrozenTrial) -> int:
    """The storage's id of ``trial`` (unique across studies, unlike ``trial.number``)."""
    return int(trial._trial_id)


def mark_failed(study: Study, trial: FrozenTrial, attrs: Mapping[str, Any]) -> bool:
    """Close a running trial (possibly another process's) as FAIL with user ``attrs``; False if it had finished."""
    storage = storage_of(study)
    try:
        if storage.get_trial(trial_id(trial)).state.is_finished():
            return False
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id(trial), key, value)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:  # its worker finished it meanwhile: the worker wins
        return False
    return True


# -- heartbeats (shared RDB storages) -------------------------------------------------------------------------


def heartbeat_enabled(study: Study) -> bool:
    """Whether the study's storage records heartbeats (an RDB storage built with ``heartbeat_interval``)."""
    return bool(is_heartbeat_enabled(storage_of(study)))


def record_heartbeat(study: Study, trial: Trial | FrozenTrial) -> None:
    """One heartbeat for ``trial`` now (no-op without heartbeats): a trial with none is never found stale."""
    storage = storage_of(study)
    if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage):
        storage.record_heartbeat(trial_id(trial))


def heartbeat_thread(study: Study, trial: Trial | FrozenTrial) -> contextlib.AbstractContextManager[object]:
    """A context manager that beats for ``trial`` every heartbeat interval while open (no-op without heartbeats)."""
    # Optuna annotates the thread's __exit__ with Exception where the protocol has BaseException
    return get_heartbeat_thread(trial_id(trial), storage_of(study))  # type: ignore[return-value]


def fail_stale_trials(study: Study) -> None:
    """Fail the trials whose heartbeat is older than the grace period (and run the storage's retry callback)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


# -- distributions --------------------------------------------------------------------------------------------


def contains(distribution: BaseDistribution, internal_value: float) -> bool:
    """Whether ``internal_value`` (``distribution.to_internal_repr`` of a value) lies in ``distribution``."""
    return bool(distribution._contains(internal_value))


# -- TPE ------------------------------------------------------------------------------------------------------


@dataclass
class TPEModel:
    """What TPE knows when it proposes one trial (internal representations throughout)."""

    study: Study
    trial: FrozenTrial
    search_space: dict[str, BaseDistribution]
    #: finished (COMPLETE, PRUNED) and running trials other than ``trial``; running ones count as "bad" (liar)
    trials: list[FrozenTrial]
    #: TPE's candidates, drawn from the estimator of the good trials, ``{name: array}``
    candidates: dict[str, np.ndarray]
    #: ``log l(x) - log g(x)`` for points ``{name: array}``: higher is more promising
    acquisition: Callable[[dict[str, np.ndarray]], np.ndarray]
    #: a Parzen estimator fitted to the given trials, as its log density
    fit: Callable[[list[FrozenTrial]], Callable[[dict[str, np.ndarray]], np.ndarray]]


class ChoosingTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE with the choice among its candidates left to ``choose`` (the split and estimators are TPE's)."""

    def choose(self, model: TPEModel) -> dict[str, float]:
        """The point to propose, in internal representation; by default TPE's own (best acquisition)."""
        scores = model.acquisition(model.candidates)
        best = int(np.argmax(scores))
        return {name: float(values[best]) for name, values in model.candidates.items()}

    def _sample(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        # Same split and estimators as TPESampler._sample (Optuna 5.0), with running trials always included
        # (constant liar) and read fresh; only the choice differs.
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
        trials = [t for t in study.get_trials(deepcopy=False, states=states) if t.number != trial.number]
        n_finished = sum(t.state != optuna.trial.TrialState.RUNNING for t in trials)
        # as TPESampler: the multi-objective gamma (no cap at 25) when the study has several directions
        gamma = default_gamma if len(study.directions) <= 1 else default_gamma_multiobjective
        below, above = _split_trials(study, trials, gamma(n_finished))
        mpe_below = self._build_parzen_estimator(study, search_space, below, handle_below=True)
        mpe_above = self._build_parzen_estimator(study, search_space, above, handle_below=False)
        candidates = mpe_below.sample(self._rng.rng, self._n_ei_candidates)

        def acquisition(samples: dict[str, np.ndarray]) -> np.ndarray:
            return np.asarray(self._compute_acquisition_func(samples, mpe_below, mpe_above))

        def fit(subset: list[FrozenTrial]) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
            return self._build_parzen_estimator(study, search_space, subset, handle_below=False).log_pdf

        model = TPEModel(study, trial, search_space, trials, candidates, acquisition, fit)
        chosen = self.choose(model)
        return {name: dist.to_external_repr(chosen[name]) for name, dist in search_space.items()}
