"""Screening between trials (``optimization.screening``, issue 32): the simulator's screen seeds the first real
trials (``core/search/screening.py``); this guide keeps it honest while the search runs.

After every ``REFIT_EVERY`` new measured trials (from ``MIN_TRIALS`` on), the calibration is fitted to every real
trial so far (``core/search/calibration.py``: TTFT and TPOT factors, Kendall's tau between predicted and measured
ranks) and then:

- **not trusted** (tau below ``MIN_TAU``): the screen's word stops counting. No more configurations come from it
  and the search goes on as the bayesian search it is without screening; the note says so, once.
- **trusted**: the space is screened again on the model scaled by the fitted factors (the simulator with its
  prefill steps x the TTFT factor and its decode steps x the TPOT factor), and the best configurations it
  predicts that no trial measured yet, chosen apart from each other, are the next trials (``SEED_EACH_REFIT``).
  From ``2 x MIN_TRIALS`` measured trials on, with a rank agreement of at least ``STOP_TAU``, when none is
  predicted to beat the best measured configuration by more than the measurement noise (``noise``: relative, on
  the objective; both predicted by the same fitted model, so a bias common to them cancels), and the fitted
  model predicts 3 in 4 measured trials within ``STOP_ERROR`` x the noise (ranks can agree while the model is
  blind to a parameter that moves the objective a little), the search stops: the GPU trials left in the budget
  are saved.

Pure: the model is injected (``predict``, and ``refit`` for its fitted twin: ``pytest_autotuner/screen.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pytest_autotuner.core.measure.formatting import describe_params
from pytest_autotuner.core.measure.scoring import rank_number
from pytest_autotuner.core.measure.trial import Params
from pytest_autotuner.core.outcome.records import TrialRecord
from pytest_autotuner.core.search.calibration import (
    MIN_TRIALS,
    Calibration,
    Observation,
    PredictFn,
    fit_calibration,
)
from pytest_autotuner.core.search.screening import screen_space
from pytest_autotuner.core.search.space import SearchSpace

__all__ = [
    "DEFAULT_NOISE",
    "REFIT_EVERY",
    "SEED_EACH_REFIT",
    "STOP_ERROR",
    "STOP_TAU",
    "Guidance",
    "RefitFn",
    "ScreenGuide",
    "calibrate",
]

REFIT_EVERY = 4  #: measured trials between two fits of the calibration
#: the rank agreement a stop on the screen's word needs: more than picking trials does (``MIN_TAU``), since a
#: wrong stop loses the rest of the budget while a wrong pick costs one trial
STOP_TAU = 0.6
#: and the fitted model's error on the measured trials (3 in 4 within it) at most this many times the noise
STOP_ERROR = 2.0
SEED_EACH_REFIT = 2  #: configurations a trusted rescreen hands to the next trials
DEFAULT_NOISE = 0.02  #: the objective's run-to-run noise (relative) when the study has no repeat to tell it

#: a fitted twin of the screen's model: (TTFT factor, TPOT factor) -> its predictions
RefitFn = Callable[[float, float], PredictFn]


@dataclass(frozen=True)
class Guidance:
    """What the guide asks of the session after a trial: configurations to try next, a reason to stop
    proposing (""), and a line for the user ("")."""

    enqueue: tuple[Params, ...] = ()
    stop: str = ""
    note: str = ""


def calibrate(records: Sequence[TrialRecord], predict: PredictFn, maximize: bool) -> Calibration:
    """The measured trials (repeats left out) against the model's predictions for them."""
    observations = []
    for record in records:
        if not record.measured or record.repeat_of is not None:
            continue
        prediction = predict(dict(record.params))
        if prediction is None:
            continue
        measured = {c.label: {"ttft": c.value("ttft"), "tpot": c.value("tpot")} for c in record.cells}
        score = rank_number(record.meets_slos, record.feasible, record.value, maximize)
        observations.append(Observation(record.number, prediction[1], measured, prediction[0], score))
    return fit_calibration(observations)


def _key(params: Params) -> tuple[tuple[str, object], ...]:
    return tuple(sorted(params.items()))


@dataclass
class ScreenGuide:
    """Called by the session after each finished search trial with every trial so far (see the module
    docstring)."""

    space: SearchSpace
    predict: PredictFn
    refit: RefitFn | None
    maximize: bool
    size: int  # configurations a rescreen scores (``optimization.screen_size``)
    seed: int
    max_gpus: int | None = None
    gpus_needed: Callable[[Params], int] = lambda params: 1
    noise: float = DEFAULT_NOISE
    calibration: Calibration | None = None  # the latest fit
    fell_back: str = ""  # why the screen stopped counting ("" while it counts)
    rescreens: int = 0
    stopped: str = ""  # why it stopped the search ("" while it did not)
    _next_fit: int = MIN_TRIALS
    _offered: set[tuple[tuple[str, object], ...]] = field(default_factory=set)

    def _error(self, measured: Sequence[TrialRecord], score: Callable[[Params], float | None]) -> float | None:
        """How far the fitted model is from the measured trials: the 75th percentile of |predicted - measured| /
        |measured| over those it places in the measured trial's tier (None when it places none). Ranks can agree
        while the model is blind to a parameter that moves the objective a little; its errors show it."""
        errors = []
        for record in measured:
            predicted = score(dict(record.params))
            actual = rank_number(record.meets_slos, record.feasible, record.value, self.maximize)
            if predicted is None or not math.isfinite(predicted) or abs(predicted - actual) >= 1e14 or not actual:
                continue
            errors.append(abs(predicted - actual) / abs(actual))
        if not errors:
            return None
        errors.sort()
        return errors[min(len(errors) - 1, math.ceil(0.75 * len(errors)) - 1)]

    def __call__(self, records: Sequence[TrialRecord]) -> Guidance:
        measured = [r for r in records if r.measured and r.repeat_of is None]
        if self.fell_back or len(measured) < self._next_fit:
            return Guidance()
        self._next_fit = len(measured) + REFIT_EVERY
        calibration = calibrate(records, self.predict, self.maximize)
        self.calibration = calibration
        if calibration.trials < MIN_TRIALS:
            return Guidance()  # too few predicted trials to judge the model yet
        if not calibration.trusted:
            self.fell_back = (
                f"the screen's ranks disagree with the measured ones (tau = "
                f"{'n/a' if calibration.tau is None else f'{calibration.tau:.2f}'} over {calibration.trials} "
                "trials): it no longer picks trials, the search goes on as bayesian search without it"
            )
            return Guidance(note=f"screening not trusted: {self.fell_back}")
        fitted = self.refit(calibration.prefill or 1.0, calibration.decode or 1.0) if self.refit else self.predict
        seen = {_key(dict(r.params)) for r in records} | self._offered

        def score(params: Params) -> float | None:
            if self.max_gpus is not None and self.gpus_needed(params) > self.max_gpus:
                return None
            prediction = fitted(params)
            return None if prediction is None else prediction[0]

        rescreen = screen_space(self.space, score, size=self.size, seeds=self.size, seed=self.seed + 1 + self.rescreens)
        self.rescreens += 1
        best = min(measured, key=lambda r: rank_number(r.meets_slos, r.feasible, r.value, self.maximize))
        best_predicted = score(dict(best.params))
        unmeasured = [(p, v) for p, v in zip(rescreen.seeds, rescreen.predicted, strict=True) if _key(p) not in seen]
        if best_predicted is None or not math.isfinite(best_predicted):
            better = unmeasured  # the model cannot place the best: nothing to compare against
        else:
            margin = self.noise * abs(best.value)  # in the objective's units, as the ranks' own differences
            better = [(p, v) for p, v in unmeasured if v < best_predicted - margin]
        fitted_text = f"rescreened {rescreen.scored:,} configurations on the fitted model ({calibration.text})"
        tau = calibration.tau if calibration.tau is not None else -1.0
        if not better and len(measured) >= 2 * MIN_TRIALS and tau >= STOP_TAU:
            error = self._error(measured, score)
            if error is not None and error <= STOP_ERROR * self.noise:
                self.stopped = (
                    f"no unmeasured configuration is predicted to beat the best measured (trial #{best.number}) by "
                    f"more than the noise ({self.noise:.0%}) on the calibrated simulator (tau = {tau:.2f}; it "
                    f"predicts the measured trials within {error:.1%}, 3 in 4 of them)"
                )
                return Guidance(stop=self.stopped, note=fitted_text)
            fitted_text += (
                f"; no stop: it predicts the measured trials only within "
                f"{'n/a' if error is None else f'{error:.1%}'} (3 in 4 of them), more than {STOP_ERROR:g} x the noise"
            )
        chosen = tuple(p for p, _ in better[:SEED_EACH_REFIT])
        self._offered |= {_key(p) for p in chosen}
        lines = [fitted_text] + [f"  screen: next {describe_params(p)}" for p in chosen]
        return Guidance(enqueue=chosen, note="\n".join(lines))
