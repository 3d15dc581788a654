"""Screening: score the space on a cheap model of the server before the first real trial, and give the first
GPU trials to the configurations it ranks best, chosen apart from each other.

The model is injected (``ScreenFn``: parameters -> the objective's score as the search ranks it, lower is
better; None when it cannot score them), so this module stays pure: the plugin passes the in-process simulator
configured as the runner (``pytest_autotuner.screen``). A finite space of at most ``size`` points is scored whole
(its points by index, never listed); a larger one on ``size`` seeded random points. The seeds are taken best
first, skipping a configuration that differs from one already taken in fewer than ``spread`` parameters, so a
flat optimum does not fill the seeds with neighbours of one point. The search then runs as it would (its
sampler proposes after the seeds), so a wrong model costs the seeded trials and does not trap the search.

The calibration from the real trials, the rescreens on the fitted model, the trust and the stop on predictions
are the guide's (``core/outcome/screen_guide.py``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from pytest_autotuner.core.measure.trial import Params
from pytest_autotuner.core.search.space import SearchSpace

__all__ = ["ScreenFn", "Screening", "screen_space"]

#: a configuration's predicted score as the search ranks it (lower is better); None: the model cannot tell
ScreenFn = Callable[[Params], "float | None"]


@dataclass(frozen=True)
class Screening:
    """What the screen scored and which configurations it hands to the first real trials, best first."""

    scored: int  # configurations the model scored
    unscored: int  # configurations it could not score (refused flags, failed startups)
    seeds: tuple[Params, ...]
    predicted: tuple[float, ...]  # the seeds' predicted scores
    seconds: float  # CPU wall seconds the screen took

    @property
    def summary(self) -> str:
        if not self.seeds:
            return f"screened {self.scored:,} configurations in {self.seconds:.1f} s: none could be scored"
        return (
            f"screened {self.scored:,} configurations on the simulator in {self.seconds:.1f} s"
            + (f" ({self.unscored:,} not scorable)" if self.unscored else "")
            + f"; its {len(self.seeds)} best, apart from each other, go first"
        )


def _candidates(space: SearchSpace, size: int, seed: int) -> list[Params]:
    grid = space.grid_size
    if grid is not None and grid <= size:
        return [space.point(i) for i in range(grid)]
    rng = random.Random(f"screen-{seed}")
    seen: dict[str, Params] = {}
    for _ in range(size * 3):  # a small space's repeats are skipped; a bounded number of draws
        point = space.random_point(rng)
        seen.setdefault(space.key(point), point)
        if len(seen) >= size:
            break
    return list(seen.values())


def screen_space(
    space: SearchSpace,
    score: ScreenFn,
    *,
    size: int,
    seeds: int,
    seed: int = 0,
    spread: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Screening:
    """Score up to ``size`` configurations of ``space`` with ``score`` and pick ``seeds`` of the best, each
    differing from the others in at least ``spread`` parameters (default: a third of them, at least one)."""
    started = time.perf_counter()
    candidates = _candidates(space, size, seed)
    scored: list[tuple[float, int, Params]] = []
    unscored = 0
    for i, params in enumerate(candidates):
        value = score(params)
        if value is None or not math.isfinite(value):
            unscored += 1
        else:
            scored.append((value, i, params))
        if on_progress is not None and (i + 1) % 100 == 0:
            on_progress(i + 1, len(candidates))
    scored.sort(key=lambda item: (item[0], item[1]))
    apart = spread if spread is not None else max(1, len(space.names) // 3)
    picked: list[tuple[float, Params]] = []
    for value, _, params in scored:
        if len(picked) >= seeds:
            break
        if all(sum(params[k] != other[k] for k in params) >= apart for _, other in picked):
            picked.append((value, params))
    return Screening(
        scored=len(scored),
        unscored=unscored,
        seeds=tuple(p for _, p in picked),
        predicted=tuple(v for v, _ in picked),
        seconds=time.perf_counter() - started,
    )
