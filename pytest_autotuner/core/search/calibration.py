"""How far the screen's model is from the real server, from the real trials: fitted factors and rank agreement.

For every measured trial the screen's model predicts each cell's mean TTFT and TPOT; the measured means divided
by the predicted ones give a prefill factor (TTFT) and a decode factor (TPOT), fitted as geometric means over
all cells of all trials, with their geometric standard deviation (the spread a single factor leaves). The rank
agreement is Kendall's tau-b between the predicted and the measured scores of the trials: 1 when the model
orders the configurations as the server does, 0 when its order says nothing. The screen is trusted when at least
``MIN_TRIALS`` trials were compared and tau is at least ``MIN_TAU``.

Pure: the predictions are computed at the edge (``pytest_autotuner.screen``) and passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pytest_autotuner.core.measure.trial import Params

__all__ = ["MIN_TAU", "MIN_TRIALS", "Calibration", "Observation", "PredictFn", "fit_calibration", "kendall_tau"]

#: the model's prediction for a configuration: its score (as ``scoring.rank_number``) and per cell label its mean
#: TTFT and TPOT; None when it cannot predict it
PredictFn = Callable[[Params], "tuple[float, Mapping[str, Mapping[str, float]]] | None"]

MIN_TRIALS = 4
MIN_TAU = 0.3


@dataclass(frozen=True)
class Observation:
    """One real trial beside the model's prediction for it: per cell label, mean TTFT and TPOT (seconds), and
    both scores as the search ranks them (lower is better)."""

    trial: int
    predicted: Mapping[str, Mapping[str, float]]
    measured: Mapping[str, Mapping[str, float]]
    predicted_score: float
    measured_score: float


@dataclass(frozen=True)
class Calibration:
    """The fitted factors (measured / predicted) with their geometric spread, and the rank agreement."""

    trials: int
    prefill: float | None
    prefill_spread: float | None
    decode: float | None
    decode_spread: float | None
    tau: float | None
    #: the trials the fit read, each with the model's prediction beside its measurement (the report's plot)
    observations: tuple[Observation, ...] = field(default=(), compare=False)

    @property
    def trusted(self) -> bool:
        return self.trials >= MIN_TRIALS and self.tau is not None and self.tau >= MIN_TAU

    def as_dict(self) -> dict[str, object]:
        return {
            "trials": self.trials,
            "prefill_factor": self.prefill,
            "prefill_spread": self.prefill_spread,
            "decode_factor": self.decode,
            "decode_spread": self.decode_spread,
            "rank_agreement_tau": self.tau,
            "trusted": self.trusted,
        }

    @property
    def text(self) -> str:
        def factor(name: str, value: float | None, spread: float | None) -> str:
            if value is None:
                return f"{name} not compared"
            return f"{name} x{value:.3g}" + (f" (spread x{spread:.3g})" if spread is not None else "")

        tau = "n/a" if self.tau is None else f"{self.tau:.2f}"
        verdict = "trusted" if self.trusted else f"not trusted (needs {MIN_TRIALS}+ trials and tau >= {MIN_TAU})"
        ttft, tpot = factor("TTFT", self.prefill, self.prefill_spread), factor("TPOT", self.decode, self.decode_spread)
        return (
            f"the server against the simulator over {self.trials} trials: {ttft}, {tpot}; "
            f"rank agreement tau = {tau}, {verdict}"
        )


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall's tau-b of two equally long sequences; None below two pairs or when either is constant."""
    n = len(xs)
    if n != len(ys) or n < 2:
        return None
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = xs[i] - xs[j], ys[i] - ys[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator > 0 else None


def _geometric(ratios: list[float]) -> tuple[float | None, float | None]:
    logs = [math.log(r) for r in ratios if r > 0 and math.isfinite(r)]
    if not logs:
        return None, None
    mean = sum(logs) / len(logs)
    if len(logs) < 2:
        return math.exp(mean), None
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))
    return math.exp(mean), math.exp(sd)


def fit_calibration(observations: Sequence[Observation]) -> Calibration:
    """Fit the factors and the rank agreement over ``observations`` (cells measured and predicted alike)."""
    ratios: dict[str, list[float]] = {"ttft": [], "tpot": []}
    for obs in observations:
        for cell, measured in obs.measured.items():
            predicted = obs.predicted.get(cell, {})
            for metric in ratios:
                m, p = measured.get(metric), predicted.get(metric)
                if m is not None and p is not None and p > 0 and m > 0 and math.isfinite(m) and math.isfinite(p):
                    ratios[metric].append(m / p)
    prefill, prefill_spread = _geometric(ratios["ttft"])
    decode, decode_spread = _geometric(ratios["tpot"])
    tau = kendall_tau([o.predicted_score for o in observations], [o.measured_score for o in observations])
    return Calibration(len(observations), prefill, prefill_spread, decode, decode_spread, tau, tuple(observations))
