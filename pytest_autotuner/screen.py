"""The model ``optimization.screening`` scores configurations with: the in-process simulator configured as the
runner (the spec's model and traffic, the runner's GPU (``simulator.gpu`` on the simulator, nvidia-smi's name
on a real runner, ``runtimes.gpus.simulated_gpu``) and GPU count, the SGLang version the spec's image names),
without its fault or distortion flags: a screen knows the simulator's model, not the reality it stands in for.

Each configuration runs the spec's cells in simulated time (no HTTP, no noise) on at most ``SCREEN_REQUESTS``
requests a cell, and is scored as a real trial is (``score_result``: the objective with the SLO penalties), ranked
as the session ranks (meeting every SLO first, then feasible, then by score). ``make_screen`` says why it cannot
screen a spec instead of guessing: no model, a model the simulator cannot price, traffic only the benchmark
client can send (multi-turn chats, datasets), or a capacity ladder (searched by the client).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_autotuner.core.measure.scoring import rank_number, score_result
from pytest_autotuner.core.measure.trial import TrialFailure
from pytest_autotuner.core.search.gpu_pool import gpus_needed
from pytest_autotuner.core.spec.sglang_args import imitated_version

if TYPE_CHECKING:
    from pytest_autotuner.core.measure.plan import BenchmarkPlan
    from pytest_autotuner.core.measure.trial import Params
    from pytest_autotuner.core.outcome.screen_guide import RefitFn
    from pytest_autotuner.core.search.calibration import PredictFn
    from pytest_autotuner.core.spec.task_spec import TaskSpec

__all__ = ["SCREEN_REQUESTS", "Screen", "make_screen"]

SCREEN_REQUESTS = 64  #: requests a cell at most: the ranking needs a sample, not a measurement


@dataclass(frozen=True)
class Screen:
    """The screen's model: ``predict`` (a configuration's score as the session ranks it and its mean TTFT and
    TPOT per cell, ``core/search/calibration.PredictFn``) and ``refit`` (the same model with its prefill and
    decode steps scaled by factors fitted to real trials, ``core/outcome/screen_guide.py``)."""

    predict: PredictFn
    refit: RefitFn


def make_screen(
    spec: TaskSpec, plan: BenchmarkPlan, *, gpu: str, num_gpus: int, seed: int
) -> tuple[Screen | None, str]:
    """(the screen's model, "") or (None, why the spec cannot be screened). ``gpu``: the simulator's GPU for the
    runner's (``simulator.gpu`` on the simulator, nvidia-smi's on a real runner)."""
    from pytest_autotuner.sim.cli import pricing_problem

    if spec.model is None:
        return None, "the spec names no model"
    if spec.optimization.uses_capacity:
        return None, "the capacity ladder (maximize_goodput) is searched by the benchmark client, not in process"
    for scenario in plan.scenarios:
        if scenario.chat is not None or scenario.dataset is not None:
            return None, f"{scenario.text}: multi-turn and dataset traffic need the benchmark client"
    model = spec.model.id_or_path
    version = imitated_version(spec.simulator.sglang_version, (spec.runtime_image_tag,))
    problem = pricing_problem(model, gpu, version)
    if problem is not None:
        return None, f"the simulator cannot price {model} on {gpu}: {problem}"
    small = dataclasses.replace(
        plan, max_requests=min(plan.max_requests, SCREEN_REQUESTS), warmup_requests=0, precision=None
    )
    maximize = spec.optimization.direction == "maximize"

    def predictor(factors: tuple[float, float] | None) -> PredictFn:
        def predict(params: Params) -> tuple[float, dict[str, dict[str, float]]] | None:
            from pytest_autotuner.sim.inprocess import run_benchmark_in_process

            argv = {**params, "sim-sglang-version": version}
            try:
                result = run_benchmark_in_process(
                    model, argv, small, gpu=gpu, num_gpus=num_gpus, seed=seed, noise=0.0, factors=factors
                )
            except (ValueError, TrialFailure):
                return None  # a flag the simulator refuses, a server that would not start: not scorable
            scored = score_result(result, spec.optimization, spec.slo, gpus_needed(params))
            if scored.failure is not None or not math.isfinite(scored.value):
                return None
            cells = {c.label: {"ttft": c.summary("ttft").mean, "tpot": c.summary("tpot").mean} for c in result.cells}
            return rank_number(scored.meets_slos, scored.feasible, scored.value, maximize), cells

        return predict

    def refit(prefill: float, decode: float) -> PredictFn:
        return predictor((prefill, decode))

    return Screen(predictor(None), refit), ""
