"""The Optuna study behind a tuning session: sampler per strategy, storage, dedup, warm start.

- bayesian: TPE (Optuna 5: multivariate, constant liar, constraint-aware through ``trial.set_constraint``), or
  NSGA-II (``optimization.sampler``). With ``optimization.objectives`` the study has one direction per objective
  and each trial is told one score per objective (``TrialScore.told``); both samplers search for the Pareto front.
- grid: every grid point once, in a seeded shuffled order, so a budget smaller than the grid is unbiased.
- random: seeded; on a finite space, sampling without replacement (no repeats while unseen points remain).

A configuration is evaluated at most once: a proposal equal to a finished trial is closed as a FAIL with the
user attribute ``duplicate_of`` (samplers ignore FAIL trials, so it neither counts nor biases the model),
and another proposal is drawn. The lookup reads the study's storage, so it survives a resume. The one exception
is a repeat run of a new best (``optimization.remeasure_best``, ``Search.repeat``): an enqueued trial with the user
attribute ``repeat_of``, counted like any trial.

Configurations the runner cannot host (needing more GPUs, ``gpu_pool.gpus_needed``, than ``max_gpus``) are not
trials: grid and random orders leave them out, and a sampler's proposal of one is closed as a FAIL with the user
attribute ``unhostable`` (not counted, not launched) and another drawn; ``unhostable_note`` says so once.

The study's storage is opened at the edge and passed in (``StudyStorage``; journal files, their lock and their
repair: ``pytest_autotuner.study_storage``), so this module reads and writes no file itself.

Warm start: the spec's ``initial_configs`` come first; then ``bayesian`` evaluates SGLang's defaults moved into
the space (``sglang_defaults.py``; user attribute ``origin``). Grid and random stay uninformed baselines.

Why one module of about 580 lines: the study and its invariants (no repeats, the budget across workers, hostable
points, stale trials) are one state; the sampler is tpe.py, the storage study_storage.py.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import math
import random
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_autotuner.core.measure.trial import Params
from pytest_autotuner.core.search.gpu_pool import PARALLEL_FLAGS, gpus_needed
from pytest_autotuner.core.search.sglang_defaults import defaults_in_space

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from pytest_autotuner.core.measure.scoring import TrialScore
    from pytest_autotuner.core.search.space import Dimension, SearchSpace
    from pytest_autotuner.core.spec.task_spec import TaskSpec

__all__ = [
    "CONSTRAINT_KEY",
    "Proposal",
    "Search",
    "StudyStorage",
    "StudyStorageError",
    "study_name_for",
    "unreplayable",
]

logger = logging.getLogger(__name__)

CONSTRAINT_KEY = "infeasible"
_MAX_DUPLICATE_RETRIES = 4
_MAX_UNHOSTABLE_DRAWS = 200  # proposals of unhostable configurations closed before giving up on one propose()
_MAX_UNHOSTABLE_DRAWS_CLIPPED = 16  # ... when the hosted space is smaller than the spec's (``hosted_space``)
#: Finite spaces up to this many points get a full seeded shuffle of their point indices (a list of ints).
SHUFFLE_LIMIT = 100_000


@dataclass
class Proposal:
    """A configuration to evaluate, tied to its (running) Optuna trial.

    ``params`` are the flags the server is launched with: the trial's parameters, less those the server is left
    to choose (the SGLang-defaults trial).
    """

    trial: optuna.trial.Trial
    params: Params

    @classmethod
    def of(cls, trial: optuna.trial.Trial) -> Proposal:
        left_to_server = set(trial.user_attrs.get("server_chooses", ()))
        return cls(trial, {k: v for k, v in trial.params.items() if k not in left_to_server})

    @property
    def number(self) -> int:
        return self.trial.number


def study_name_for(spec: TaskSpec, runtime: str) -> str:
    """Unique per task and per everything that changes what a trial measures (not the budget)."""
    relevant = spec.model_dump(
        mode="json",
        exclude={
            "description": True,
            "initial_configs": True,
            "optimization": {
                "max_iterations",
                "patience",
                "confirm_runs",
                "confirm_top",
                "start_from_defaults",
                "screening",
                "screen_size",
                "screen_seeds",
            },
        },
    )
    relevant["runtime"] = runtime
    # which configuration is selected does not change what a trial measures; fields at their defaults are left
    # out so that studies named before they existed keep their names (an upgrade resumes them)
    optimization = relevant["optimization"]
    optimization.pop("select", None)
    for key, default in (("objectives", None), ("sampler", "tpe")):
        if optimization.get(key) == default:
            optimization.pop(key, None)
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:10]
    return f"{spec.task_name}-{digest}"


class StudyStorageError(RuntimeError):
    """The study's storage cannot be used (in use, corrupt, unwritable); the message is meant for the user."""


@dataclass(frozen=True)
class StudyStorage:
    """An Optuna storage opened at the edge (``pytest_autotuner.study_storage.open_storage``: journal files with
    their lock and repair, databases with heartbeats), so the search itself touches no file or socket."""

    optuna: Any  # the storage Optuna's ``create_study`` takes
    notes: tuple[str, ...] = ()  # what opening it repaired or took over, for the user
    journal: str | None = None  # the journal file it replays, named when the study cannot be replayed


def unreplayable(path: Path | str, err: Exception) -> StudyStorageError:
    """The error for a journal Optuna cannot replay, with what to do."""
    return StudyStorageError(
        f"{path}: the study journal cannot be replayed ({type(err).__name__}: {str(err)[:200]}). Move it "
        f"away (`mv {path} {path}.bad`) to start a fresh study, or restore it from a backup"
    )


class Search:
    """Proposes configurations and records their scores in an Optuna study."""

    def __init__(
        self,
        *,
        spec: TaskSpec,
        space: SearchSpace,
        storage: StudyStorage | None,
        study_name: str,
        seed: int,
        local_storage: bool = True,
        grace_period: int = 120,
        gpu_memory_mib: float | None = None,
        max_gpus: int | None = None,
        screened: Sequence[Params] = (),
    ) -> None:
        """``gpu_memory_mib``: the GPUs' memory, which some of SGLang's defaults depend on (None: an H100 80GB).
        ``max_gpus``: the runner's GPUs; configurations needing more are never proposed (None: no limit).
        ``screened``: configurations a screen ranked best, tried after the spec's and SGLang's defaults."""
        import optuna

        from pytest_autotuner.core.search import tpe

        self.spec = spec
        self.max_gpus = max_gpus
        self._asked: dict[int, optuna.Trial] = {}  # asked by this process, not yet told (``abandon_unfinished``)
        #: no configuration fits the runner (the fewest GPUs one needs is over ``max_gpus``): nothing to propose
        self._fits_none = max_gpus is not None and fewest_gpus(space) > max_gpus
        #: the space less the parallel sizes that alone need more GPUs than the runner has: grid and random
        #: orders walk it, so a tp-size range of 1..10^9 on 2 GPUs does not walk 10^9 points to find a host
        self._hosted = space if max_gpus is None or self._fits_none else hosted_space(space, max_gpus)
        self.space = space
        self.seed = seed
        self.strategy = spec.optimization.strategy
        self._grace_period = grace_period
        self._distributions = space.distributions()
        #: what opening the storage repaired or took over, for the user
        self.notes: list[str] = list(storage.notes) if storage is not None else []
        try:
            self.study = optuna.create_study(
                study_name=study_name,
                storage=storage.optuna if storage is not None else None,
                sampler=tpe.make_sampler(spec.optimization, space, seed, max_gpus=max_gpus),
                directions=list(spec.optimization.directions),  # one, or one per objective of ``objectives``
                load_if_exists=True,
            )
        except Exception as err:
            if storage is None or storage.journal is None:
                raise
            raise unreplayable(storage.journal, err) from None
        if local_storage:
            self._fail_interrupted_trials()
        self._order: _GridOrder | None = self._finite_order()
        for config in spec.initial_configs:
            self.enqueue(dict(config))
        if self.strategy == "bayesian" and spec.optimization.start_from_defaults:
            defaults = defaults_in_space(space, gpu_memory_mib)
            if defaults:
                # flags without a fixed default are SGLang's to resolve at startup: the sampler fills them in
                # (Optuna needs a value per parameter) but the trial does not pass them to the server
                server_chooses = [name for name in space.names if name not in defaults]
                attrs = {"origin": "sglang_defaults", "server_chooses": server_chooses}
                self.study.enqueue_trial(defaults, user_attrs=attrs, skip_if_exists=True)
        for params in screened:  # the screen's best, after the defaults (``core/search/screening.py``)
            self.study.enqueue_trial(dict(params), user_attrs={"origin": "screen"}, skip_if_exists=True)

    def _finite_order(self) -> _GridOrder | None:
        """Seeded order of the grid points, for grid and random strategies on a finite space (never listed).

        Up to ``SHUFFLE_LIMIT`` points, a full shuffle of the point indices; a larger grid (the spec caps it at
        ``MAX_GRID_POINTS``) walks a seeded affine permutation of them. A random search on a larger space draws
        from the sampler, and the dedup in ``propose`` catches the (rare) repeats.
        """
        size = self._hosted.grid_size
        if self.strategy == "bayesian" or size is None:
            if self.strategy == "grid":
                self.space.point(0)  # raises the "no grid" error with its fix
            return None
        rng = random.Random(f"{self.strategy}-{self.seed}")  # grid and random: different orders
        if size <= SHUFFLE_LIMIT:
            indices = list(range(size))
            rng.shuffle(indices)
            return _GridOrder(self._hosted, indices)
        if self.strategy == "random":
            return None
        return _GridOrder(self._hosted, _AffinePermutation(size, rng))

    # -- what the runner can host ----------------------------------------------------------------------------

    def hostable(self, params: Params) -> bool:
        return self.max_gpus is None or gpus_needed(params) <= self.max_gpus

    def unhostable_note(self) -> str:
        """One line per parameter value, or range of values, that alone needs more GPUs than the runner has (""
        when none does): ``tp-size=4 needs 4 GPUs; this runner has 2: skipped``, ``tp-size=3..64 needs 3 to 64
        GPUs; ...``. Arithmetic on ranges: a range of 10^9 values costs as little as one of 2."""
        from pytest_autotuner.core.search.space import Categorical

        if self.max_gpus is None:
            return ""
        have = self.max_gpus
        lines = []
        if self._fits_none:
            fewest = fewest_gpus(self.space)
            lines.append(f"no configuration fits: each needs at least {fewest} GPUs; this runner has {have}")
        for dimension in _gpu_dimensions(self.space):
            if isinstance(dimension, Categorical):  # a list: at most MAX_CHOICES values, a line each up to 4
                over = [(v, n) for v in dimension.choices if (n := gpus_needed({dimension.name: v})) > have]
                if len(over) > 4:
                    shown = ", ".join(str(v) for v, _ in over[:3])
                    least, most = min(n for _, n in over), max(n for _, n in over)
                    lines.append(
                        f"{dimension.name}={shown}, ... ({len(over)} values) need {least} to {most} GPUs; this "
                        f"runner has {have}: skipped"
                    )
                    continue
                for value, needed in over:
                    lines.append(f"{dimension.name}={value} needs {needed} GPUs; this runner has {have}: skipped")
                continue
            # a parallel size needs int(value) GPUs, rising with the value: the values from the first one over
            most = gpus_needed({dimension.name: dimension.high})
            first = dimension.first_at_least(have + 1) if most > have else None
            if first is None:
                continue
            least = gpus_needed({dimension.name: first})
            if first == dimension.high:
                lines.append(f"{dimension.name}={first} needs {least} GPUs; this runner has {have}: skipped")
            else:
                lines.append(
                    f"{dimension.name}={first}..{dimension.high} needs {least} to {most} GPUs; this runner has "
                    f"{have}: skipped"
                )
        return "\n".join(lines)

    def _close_unhostable(self, trial: optuna.trial.Trial) -> None:
        trial.set_user_attr("unhostable", gpus_needed(trial.params))
        self._tell(trial, state=_fail_state())

    def _fail_interrupted_trials(self) -> None:
        """A trial left RUNNING by a killed run is closed as failed, so the resumed run does not wait for it."""
        from optuna.trial import TrialState

        from pytest_autotuner.core.search import optuna_compat

        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if optuna_compat.mark_failed(self.study, trial, {"interrupted": True}):
                logger.info("trial %d was left running by an interrupted run; marked failed", trial.number)

    # -- bookkeeping -------------------------------------------------------------------------------------------

    def evaluated(self) -> list[FrozenTrial]:
        """Finished trials that ran an evaluation (duplicates and interrupted trials excluded)."""
        from optuna.trial import TrialState

        return [
            t
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "duplicate_of" not in t.user_attrs
        ]

    @property
    def n_evaluated(self) -> int:
        return len(self.evaluated())

    def enqueue(self, params: Params, *, origin: str | None = None) -> None:
        """``params`` as the next trial (once: skipped when the study holds it already); ``origin`` names where
        it came from (the ``origin`` user attribute, e.g. ``"screen"``)."""
        self.study.enqueue_trial(params, user_attrs={"origin": origin} if origin else None, skip_if_exists=True)

    # -- ask and tell ------------------------------------------------------------------------------------------

    def claimed(self, number: int | None = None) -> dict[str, FrozenTrial]:
        """Configurations measured or being measured, by key: finished trials and running ones.

        With ``number`` (the trial asking), only running trials numbered below it count: when two workers (or
        two processes sharing a study) draw the same configuration at once, the earlier trial keeps it.
        """
        return self._first_by_key(self._ahead(number))

    def _first_by_key(self, trials: list[FrozenTrial]) -> dict[str, FrozenTrial]:
        out: dict[str, FrozenTrial] = {}
        for trial in trials:
            out.setdefault(self.space.key(trial.params), trial)
        return out

    def _ahead(self, number: int | None = None) -> list[FrozenTrial]:
        """The trials ``claimed`` reads, in number order: finished and running ones with all their parameters
        (with ``number``, running ones below it), duplicates and ``number`` itself left out; a new best's repeat
        run counts here, though its configuration is claimed once."""
        from optuna.trial import TrialState

        names = set(self.space.names)
        states = (TrialState.COMPLETE, TrialState.RUNNING)
        for _ in range(40):
            trials = self.study.get_trials(deepcopy=False, states=states)
            # another process's trial that was just asked may not have all its params stored yet: wait for it,
            # or two processes could both keep the same configuration
            if all(set(t.params) >= names for t in trials if t.number != number):
                break
            time.sleep(0.05)
        ahead = []
        for trial in sorted(trials, key=lambda t: t.number):
            if not set(trial.params) >= names:
                continue
            if "duplicate_of" in trial.user_attrs or trial.number == number:
                continue
            if trial.state == TrialState.RUNNING and number is not None and trial.number > number:
                continue
            ahead.append(trial)
        return ahead

    def propose(self, budget: int | None = None) -> Proposal | None:
        """The next configuration to evaluate, or None when the space (or the study-wide ``budget``) is spent.

        With a shared storage several processes propose at once: a proposal that finds ``budget`` trials
        finished or running ahead of it (lower numbers) withdraws, so the study never overshoots its budget.
        """
        self._fail_stale_trials()
        if self._fits_none:  # every draw would be closed unhostable (unhostable_note says why)
            return None
        duplicates = 0
        # where a parallel size's range reaches past the runner's GPUs, a sampler's draws mostly land there: after
        # a few, the fallback draws from the hosted space instead (each draw of a wide space costs a few ms)
        draws = _MAX_UNHOSTABLE_DRAWS if self._hosted is self.space else _MAX_UNHOSTABLE_DRAWS_CLIPPED
        for _draw in range(draws):
            if self._order is not None and not self._has_waiting_trial():
                seen = self.claimed()
                unseen = next((p for p in self._order if self.space.key(p) not in seen and self.hostable(p)), None)
                if unseen is None:
                    return None
                self.study.enqueue_trial(unseen)
            trial = self._ask()
            if not self.hostable(trial.params):  # an enqueued or sampled point the runner cannot host: no trial
                self._close_unhostable(trial)
                continue
            duplicate, admitted = self._admit(Proposal.of(trial), budget)
            if not duplicate:
                return admitted
            duplicates += 1
            if duplicates > _MAX_DUPLICATE_RETRIES:
                break
        # the sampler keeps proposing known points: take an unseen one at random (finite spaces only)
        fallback = self._random_unseen(self.claimed())
        if fallback is not None and not self.hostable(fallback.trial.params):
            self._close_unhostable(fallback.trial)
            return None
        return None if fallback is None else self._admit(fallback, budget)[1]

    def repeat(self, proposal: Proposal) -> None:
        """Measure ``proposal``'s configuration once more, as the next trial (``optimization.remeasure_best``)."""
        attrs: dict[str, Any] = {"repeat_of": proposal.number}
        if "server_chooses" in proposal.trial.user_attrs:  # the same launch: what the server chose, it chooses again
            attrs["server_chooses"] = proposal.trial.user_attrs["server_chooses"]
        self.study.enqueue_trial(dict(proposal.trial.params), user_attrs=attrs)

    def _admit(self, proposal: Proposal, budget: int | None) -> tuple[bool, Proposal | None]:
        """(was it a duplicate, the proposal if admitted): duplicates and proposals over budget are closed."""
        trials = self._ahead(proposal.number)
        original = self._first_by_key(trials).get(self.space.key(proposal.trial.params))
        if original is not None and "repeat_of" not in proposal.trial.user_attrs:
            proposal.trial.set_user_attr("duplicate_of", original.number)
            self._tell(proposal.trial, state=_fail_state())
            logger.debug("proposal %s repeats trial %d; drawing another", proposal.params, original.number)
            return True, None
        if budget is not None and len(trials) >= budget:  # trials, a repeat run too, not configurations
            proposal.trial.set_user_attr("over_budget", True)
            self._tell(proposal.trial, state=_fail_state())
            return False, None
        return False, proposal

    def _ask(self) -> optuna.Trial:
        """A new trial, with a first heartbeat at once on shared storages: a trial without any is never stale, so
        a worker killed before its trial's heartbeat thread started would leave it running for good."""
        from pytest_autotuner.core.search import optuna_compat

        with warnings.catch_warnings():  # we run the heartbeat thread ourselves (``heartbeat``), not Study.optimize
            warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
            trial = self.study.ask(self._distributions)
        self._asked[trial.number] = trial
        optuna_compat.record_heartbeat(self.study, trial)
        return trial

    def _fail_stale_trials(self) -> None:
        """Trials of workers that died (shared storages with heartbeats) become FAIL and are retried once.

        A worker killed inside ``ask`` leaves a running trial with neither a heartbeat nor all its parameters;
        one still like that after the grace period is failed too (a live ``ask`` fills them in milliseconds).
        """
        from optuna.trial import TrialState

        from pytest_autotuner.core.search import optuna_compat

        if not optuna_compat.heartbeat_enabled(self.study):
            return
        optuna_compat.fail_stale_trials(self.study)
        cutoff = datetime.datetime.now() - datetime.timedelta(seconds=self._grace_period)
        names = set(self.space.names)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if set(trial.params) >= names or trial.datetime_start is None or trial.datetime_start >= cutoff:
                continue
            if optuna_compat.mark_failed(self.study, trial, {}):
                logger.info("trial %d was never fully asked (its worker died); marked failed", trial.number)

    def heartbeat(self, proposal: Proposal) -> contextlib.AbstractContextManager[object]:
        """While a trial runs, tell a shared storage that its worker is alive (no-op for local storages)."""
        from pytest_autotuner.core.search import optuna_compat

        return optuna_compat.heartbeat_thread(self.study, proposal.trial)

    def _has_waiting_trial(self) -> bool:
        from optuna.trial import TrialState

        return bool(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def _random_unseen(self, seen: dict[str, FrozenTrial]) -> Proposal | None:
        size = self._hosted.grid_size
        if size is None and self._hosted is self.space:
            return Proposal.of(self._ask())
        rng = random.Random(self.seed + self.n_evaluated)
        if size is None:  # continuous, with parallel sizes clipped to the GPUs: uniform draws within them
            draws = (self._hosted.random_point(rng) for _ in range(1000))
            choice = next((p for p in draws if self.space.key(p) not in seen and self.hostable(p)), None)
        elif size > SHUFFLE_LIMIT:  # too many to list: draw points until one is unseen (almost all are)
            draws = (self._hosted.point(rng.randrange(size)) for _ in range(1000))
            choice = next((p for p in draws if self.space.key(p) not in seen and self.hostable(p)), None)
        else:
            unseen = [p for p in self._hosted.grid() if self.space.key(p) not in seen and self.hostable(p)]
            choice = rng.choice(unseen) if unseen else None
        if choice is None:
            return None
        self.study.enqueue_trial(choice)
        return Proposal.of(self._ask())

    def record(self, proposal: Proposal, score: TrialScore, attrs: dict[str, Any]) -> None:
        """Tell the study the trial's score, its feasibility and what the report needs."""
        trial = proposal.trial
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        trial.set_constraint(CONSTRAINT_KEY, score.constraint)
        self._tell(trial, score.told)  # the score, or one score per objective (multi-objective)

    def _tell(self, trial: optuna.trial.Trial, *args: Any, **kwargs: Any) -> None:
        """Tell the study how a trial this process asked for ended (``Study.tell``'s arguments); it is no longer
        this process's to abandon."""
        self.study.tell(trial, *args, **kwargs)
        self._asked.pop(trial.number, None)

    def abandon_unfinished(self, reason: str) -> None:
        """Close every trial this process asked for and has not told (a Ctrl-C while it was proposed, evaluated,
        waiting for GPUs or about to be recorded), so a resumed run proposes it again. Other workers' trials of a
        shared study are theirs."""
        from optuna.trial import TrialState

        running = {t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for number, trial in list(self._asked.items()):
            if number in running:
                trial.set_user_attr("interrupted", reason)
                self.study.tell(trial, state=_fail_state())
        self._asked.clear()


def _gpu_dimensions(space: SearchSpace) -> list[Dimension]:
    """The dimensions ``gpus_needed`` reads: per parallel size, the first of its names in the space. Where
    ``enable-dp-attention`` may be on, the dp size can cost no GPUs (attention ranks inside the tp group), so it
    bounds nothing here; ``Search.hostable`` judges each whole configuration."""
    from pytest_autotuner.core.search.space import Categorical

    dims = {dim.name: dim for dim in space.dimensions}
    attention = dims.get("enable-dp-attention")
    free_dp = isinstance(attention, Categorical) and True in attention.choices
    found = (
        next((dims[name] for name in aliases if name in dims), None)
        for kind, aliases in PARALLEL_FLAGS.items()
        if not (kind == "dp" and free_dp)
    )
    return [dim for dim in found if dim is not None]


def hosted_space(space: SearchSpace, max_gpus: int) -> SearchSpace:
    """``space`` without the parallel-size values that alone need more than ``max_gpus`` GPUs (arithmetic on
    ranges: their upper bound comes down; a listed value is dropped). Its points are points of ``space``; those
    whose sizes together need too many GPUs are still there (``Search.hostable``). Call only when a
    configuration fits (``fewest_gpus`` <= ``max_gpus``)."""
    from pytest_autotuner.core.search.space import Categorical, FloatRange, IntRange, SearchSpace

    clipped: dict[str, Dimension] = {}
    for dim in _gpu_dimensions(space):
        if isinstance(dim, Categorical):
            clipped[dim.name] = Categorical(
                dim.name, tuple(v for v in dim.choices if gpus_needed({dim.name: v}) <= max_gpus)
            )
        elif isinstance(dim, IntRange) and dim.high > max_gpus:
            high = dim.low + (max_gpus - dim.low) // dim.step * dim.step
            clipped[dim.name] = IntRange(dim.name, dim.low, high, dim.step, dim.log)
        elif isinstance(dim, FloatRange) and dim.high >= max_gpus + 1:  # int(value) GPUs: below max_gpus + 1
            below = math.nextafter(max_gpus + 1, -math.inf)
            if dim.step is not None:
                below = dim.low + math.floor((below - dim.low) / dim.step) * dim.step
            clipped[dim.name] = FloatRange(dim.name, dim.low, max(dim.low, below), dim.step, dim.log)
    return SearchSpace([clipped.get(dim.name, dim) for dim in space.dimensions])


def fewest_gpus(space: SearchSpace) -> int:
    """The fewest GPUs a configuration of ``space`` needs (``gpus_needed`` at each parallel size's smallest
    value): arithmetic on ranges (a parallel size needs more GPUs as it grows), a look at each listed value."""
    from pytest_autotuner.core.search.space import Categorical

    fewest = 1
    for dim in _gpu_dimensions(space):
        if isinstance(dim, Categorical):
            fewest *= min(gpus_needed({dim.name: value}) for value in dim.choices)
        else:
            fewest *= gpus_needed({dim.name: dim.low})
    return fewest


class _AffinePermutation(Sequence[int]):
    """``(a * i + b) mod n`` with ``a`` coprime to ``n``: a seeded permutation of 0..n-1 that lists nothing."""

    def __init__(self, n: int, rng: random.Random) -> None:
        self._n = n
        self._b = rng.randrange(n)
        a = rng.randrange(1, n) | 1
        while math.gcd(a, n) != 1:
            a += 1
        self._a = a

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> int:  # type: ignore[override]  # no slices needed
        if not 0 <= index < self._n:
            raise IndexError(index)
        return (self._a * index + self._b) % self._n


class _GridOrder:
    """The grid points in a given order of their indices, decoded one at a time."""

    def __init__(self, space: SearchSpace, indices: Sequence[int]) -> None:
        self._space = space
        self._indices = indices

    def __iter__(self) -> Iterator[Params]:
        return (self._space.point(i) for i in self._indices)


def _fail_state() -> Any:
    from optuna.trial import TrialState

    return TrialState.FAIL
