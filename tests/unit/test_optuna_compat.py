"""Each use of Optuna's private API, against the real Optuna: an upgrade that breaks one fails its test here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from pytest_autotuner.core.search import optuna_compat
from pytest_autotuner.core.search.optuna_compat import ChoosingTPESampler, TPEModel

# Study.ask warns that heartbeats are meant for Study.optimize; the plugin runs them itself, as these tests do
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")

X = {"x": FloatDistribution(0.0, 10.0)}


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _heartbeat_study(tmp_path: Path) -> optuna.Study:
    """An RDB storage with heartbeats (SQLite here; PostgreSQL in the shared-study tests), grace period 1 s."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1, grace_period=1)
    return optuna.create_study(storage=storage)


def _after_grace_period(study: optuna.Study) -> dict[int, TrialState]:
    """Wait past the 1 s grace period, fail the stale trials, and return every trial's state by number."""
    time.sleep(2.5)  # SQLite timestamps have 1 s resolution; staleness needs more than the grace period
    optuna_compat.fail_stale_trials(study)
    return {t.number: t.state for t in study.get_trials(deepcopy=False)}


# -- version check --------------------------------------------------------------------------------------------


def test_installed_optuna_is_within_the_verified_versions() -> None:
    assert optuna_compat.version_problem(optuna.__version__) is None


@pytest.mark.parametrize("version", ["4.5.0", "6.0.0", "6.0.0.dev0"])
def test_a_version_outside_the_verified_range_is_named_with_the_range(version: str) -> None:
    problem = optuna_compat.version_problem(version)
    assert problem is not None
    assert f"Optuna {version} is installed" in problem
    assert ">=5.0,<6.0" in problem


def test_importing_with_an_unverified_optuna_warns_and_still_works() -> None:
    code = (
        "import warnings, optuna; optuna.__version__ = '6.1.0'\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from pytest_autotuner.core.search import optuna_compat\n"
        "print([str(w.message) for w in caught if w.category is optuna_compat.OptunaVersionWarning])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Optuna 6.1.0 is installed" in out


# -- storage and trial identity ---------------------------------------------------------------------------------


def test_storage_of_is_the_storage_the_study_writes_to() -> None:
    study = optuna.create_study()
    trial = study.ask(X)
    study.tell(trial, 1.0)
    stored = optuna_compat.storage_of(study).get_trial(optuna_compat.trial_id(trial))
    assert stored.number == trial.number
    assert stored.value == 1.0


def test_trial_id_is_the_same_for_a_trial_and_its_frozen_trial_and_is_the_storage_id(tmp_path: Path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'ids.db'}")
    first = optuna.create_study(storage=storage, study_name="first")
    second = optuna.create_study(storage=storage, study_name="second")
    first.ask(X)
    trial = second.ask(X)  # number 0 in its study, but not the storage's first trial
    frozen = second.get_trials(deepcopy=False)[0]
    assert optuna_compat.trial_id(trial) == optuna_compat.trial_id(frozen) != trial.number
    assert storage.get_trial_number_from_id(optuna_compat.trial_id(trial)) == trial.number


def test_mark_failed_closes_another_process_running_trial_with_its_attributes() -> None:
    study = optuna.create_study()
    study.ask(X)  # the other process's trial: only its frozen copy is at hand here
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))[0]
    assert optuna_compat.mark_failed(study, running, {"interrupted": True})
    (closed,) = study.get_trials(deepcopy=False)
    assert closed.state == TrialState.FAIL
    assert closed.user_attrs == {"interrupted": True}


def test_mark_failed_leaves_a_finished_trial_alone() -> None:
    study = optuna.create_study()
    trial = study.ask(X)
    stale_copy = study.get_trials(deepcopy=True)[0]  # read while running, finished since
    study.tell(trial, 2.0)
    assert not optuna_compat.mark_failed(study, stale_copy, {"interrupted": True})
    (kept,) = study.get_trials(deepcopy=False)
    assert (kept.state, kept.value, kept.user_attrs) == (TrialState.COMPLETE, 2.0, {})


# -- heartbeats -----------------------------------------------------------------------------------------------


def test_heartbeat_enabled_only_for_a_storage_with_a_heartbeat_interval(tmp_path: Path) -> None:
    assert optuna_compat.heartbeat_enabled(_heartbeat_study(tmp_path))
    assert not optuna_compat.heartbeat_enabled(optuna.create_study())
    plain = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'plain.db'}")
    assert not optuna_compat.heartbeat_enabled(optuna.create_study(storage=plain))


def test_a_recorded_heartbeat_makes_a_trial_stale_once_its_worker_stops(tmp_path: Path) -> None:
    study = _heartbeat_study(tmp_path)
    beaten, silent = study.ask(X), study.ask(X)
    optuna_compat.record_heartbeat(study, beaten)
    states = _after_grace_period(study)
    assert states[beaten.number] == TrialState.FAIL
    assert states[silent.number] == TrialState.RUNNING  # no heartbeat ever: Optuna never calls it stale


def test_record_heartbeat_is_a_no_op_without_heartbeats() -> None:
    study = optuna.create_study()
    optuna_compat.record_heartbeat(study, study.ask(X))
    assert study.get_trials(deepcopy=False)[0].state == TrialState.RUNNING


def test_heartbeat_thread_beats_while_open(tmp_path: Path) -> None:
    study = _heartbeat_study(tmp_path)
    trial = study.ask(X)
    with optuna_compat.heartbeat_thread(study, trial):
        pass  # the thread beats as it starts
    assert _after_grace_period(study)[trial.number] == TrialState.FAIL


def test_heartbeat_thread_is_a_no_op_context_without_heartbeats() -> None:
    study = optuna.create_study()
    with optuna_compat.heartbeat_thread(study, study.ask(X)):
        pass
    assert study.get_trials(deepcopy=False)[0].state == TrialState.RUNNING


def test_fail_stale_trials_does_not_warn_that_it_is_experimental(tmp_path: Path) -> None:
    study = _heartbeat_study(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optuna_compat.fail_stale_trials(study)


# -- distributions --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("distribution", "value", "expected"),
    [
        (FloatDistribution(0.5, 0.9), 0.7, True),
        (FloatDistribution(0.5, 0.9), 0.95, False),
        (FloatDistribution(0.0, 1.0, step=0.25), 0.5, True),
        (FloatDistribution(0.0, 1.0, step=0.25), 0.3, False),
        (IntDistribution(8, 64, step=8), 24, True),
        (IntDistribution(8, 64, step=8), 20, False),
        (CategoricalDistribution(["lpm", "fcfs"]), 1, True),
        (CategoricalDistribution(["lpm", "fcfs"]), 2, False),
    ],
)
def test_contains_checks_range_step_and_choice_index(distribution: object, value: float, expected: bool) -> None:
    assert optuna_compat.contains(distribution, value) is expected  # type: ignore[arg-type]


# -- TPE ------------------------------------------------------------------------------------------------------


class _Recording(ChoosingTPESampler):
    """Chooses TPE's worst candidate (so the choice is visibly not TPE's) and keeps the models it saw."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.models: list[TPEModel] = []

    def choose(self, model: TPEModel) -> dict[str, float]:
        self.models.append(model)
        worst = int(np.argmin(model.acquisition(model.candidates)))
        return {name: float(values[worst]) for name, values in model.candidates.items()}


def _tpe_study(sampler: optuna.samplers.BaseSampler, n_trials: int) -> optuna.Study:
    study = optuna.create_study(sampler=sampler)
    for _ in range(n_trials):
        trial = study.ask(X)
        study.tell(trial, (trial.params["x"] - 3.0) ** 2)
    return study


def test_tpe_hands_its_candidates_to_choose_after_the_startup_trials_and_proposes_the_choice() -> None:
    sampler = _Recording(n_startup_trials=5, n_ei_candidates=16, seed=1)
    study = _tpe_study(sampler, 5)
    trial = study.ask(X)
    (model,) = sampler.models  # startup trials are random: choose is not asked
    assert model.candidates["x"].shape == (16,)
    worst = int(np.argmin(model.acquisition(model.candidates)))
    assert trial.params["x"] == pytest.approx(model.candidates["x"][worst])


def test_tpe_model_holds_running_trials_except_the_one_being_sampled() -> None:
    sampler = _Recording(n_startup_trials=3, seed=2)
    study = _tpe_study(sampler, 3)
    other = study.ask(X)  # still running: the model's constant liar counts it
    sampler.models.clear()
    mine = study.ask(X)
    numbers = {t.number for t in sampler.models[-1].trials}
    assert other.number in numbers
    assert mine.number not in numbers
    assert numbers == {0, 1, 2, other.number}


def test_tpe_acquisition_prefers_points_near_the_good_trials() -> None:
    sampler = _Recording(n_startup_trials=10, seed=3)
    study = _tpe_study(sampler, 20)
    study.ask(X)
    model = sampler.models[-1]
    best = study.best_params["x"]
    far = 10.0 if best < 5.0 else 0.0
    near_and_far = model.acquisition({"x": np.array([best, far])})
    assert near_and_far[0] > near_and_far[1]


def test_tpe_fit_gives_a_density_that_is_higher_near_the_trials_it_was_fitted_to() -> None:
    sampler = _Recording(n_startup_trials=10, seed=4)
    study = _tpe_study(sampler, 12)
    study.ask(X)
    model = sampler.models[-1]
    low = [t for t in model.trials if t.state == TrialState.COMPLETE and t.params["x"] < 3.0]
    log_pdf = model.fit(low)
    assert low, "seeded trials include some below 3"
    density = log_pdf({"x": np.array([min(t.params["x"] for t in low), 9.9])})
    assert density[0] > density[1]


def test_choosing_tpe_by_default_proposes_tpe_own_pick() -> None:
    """Without an override, the sampler proposes exactly what Optuna's TPE would from the same seed."""
    ours = _tpe_study(ChoosingTPESampler(n_startup_trials=5, seed=5, constant_liar=True), 12)
    theirs = _tpe_study(optuna.samplers.TPESampler(n_startup_trials=5, seed=5, constant_liar=True), 12)
    assert [t.params for t in ours.trials] == [t.params for t in theirs.trials]


def test_choosing_tpe_by_default_proposes_tpe_own_pick_with_two_objectives() -> None:
    """Multi-objective (MOTPE: split by non-domination, good trials weighed by hypervolume contribution): the same
    proposals as Optuna's TPE, so the private helpers still do what TPESampler does with several directions."""

    def run(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
        study = optuna.create_study(sampler=sampler, directions=["minimize", "maximize"])
        for _ in range(14):
            trial = study.ask(X)
            study.tell(trial, ((trial.params["x"] - 3.0) ** 2, -((trial.params["x"] - 7.0) ** 2)))
        return study

    ours = run(ChoosingTPESampler(n_startup_trials=5, seed=6, constant_liar=True))
    theirs = run(optuna.samplers.TPESampler(n_startup_trials=5, seed=6, constant_liar=True))
    assert [t.params for t in ours.trials] == [t.params for t in theirs.trials]


def test_optuna_hypervolume_is_optunas_exact_hypervolume() -> None:
    losses = np.array([[1.0, 3.0], [2.0, 1.0]])
    assert optuna_compat.optuna_hypervolume(losses, np.array([4.0, 4.0])) == pytest.approx(7.0)


# -- logging and import side effects --------------------------------------------------------------------------


def test_quiet_optuna_logging_sets_optuna_to_warnings_only() -> None:
    optuna.logging.set_verbosity(optuna.logging.INFO)
    optuna_compat.quiet_optuna_logging()
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING


def test_building_a_search_leaves_optuna_logging_alone() -> None:
    from factories import spec

    from pytest_autotuner.core.search.space import SearchSpace
    from pytest_autotuner.core.search.study import Search

    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    s = spec()
    Search(spec=s, space=SearchSpace.from_spec(s), storage=None, study_name="quiet", seed=0)
    assert optuna.logging.get_verbosity() == optuna.logging.DEBUG


def test_importing_the_plots_keeps_the_user_matplotlib_backend() -> None:
    code = (
        "import matplotlib, pytest_autotuner.report.plots as plots\n"
        "fig = plots._figure(2.0, 2.0); fig.add_subplot().plot([0, 1])\n"
        "assert plots._to_uri(fig).startswith('data:image/png;base64,')\n"
        "print(matplotlib.get_backend())\n"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "svg"
