"""GPU-hours and trials to a near-optimal configuration: seed-style TPE, random and ours on hard simulated spaces.

Run: ``python benchmarks/tuning_efficiency.py`` (``--seeds 20 --budget 50 --spaces h1,h2``, or ``h3,h4``;
``--strategies`` takes the variants of our sampler in ``VARIANTS`` too; ``--seeds 4`` for a quick look).

Spaces (the simulator's performance model in process, ``sim/inprocess.py``; 8 simulated H100s):

- H1: Llama-3.1-8B, 7 flags (tp, dp, mem-fraction-static, chunked-prefill-size, max-running-requests,
  schedule-policy, cuda-graph-max-bs), maximize throughput under a tight TTFT p90 hard SLO: most points are
  infeasible (too few GPUs in use, or TTFT too high), some fail at startup (tp x dp over 8 GPUs, CUDA OOM).
- H2: Llama-3.1-70B on the same GPUs: small tp cannot hold the weights, large mem-fractions run out of memory at
  graph capture, and most of the rest break the SLO.
- H3 (``--spaces h3``): Llama-3.1-8B, shared-prefix traffic (``P(...)``, SGLang bench_serving's
  generated-shared-prefix) under a TTFT p90 hard SLO, with the radix cache and lpm in the space.
- H4 (``--spaces h4``): Llama-3.1-70B, ``maximize_goodput``: each trial is a ladder of load steps
  (``evaluate.run_ladder``) and its value the highest request rate held with every SLO met.

Each space's line also checks the sampler's replicas rule (``more_replicas_better``) against the truth: how many
points with fewer data-parallel replicas than a twin that fits score better than that twin.

The truth: every point of a space evaluated once with noise 0, scored by ``scoring.score_result`` (cached under
``benchmarks/.cache``, recomputed when missing). The optimum is the best feasible score.

Strategies, each over the same seeds and budget; every trial is measured with noise (the simulator's 3% step
noise, one of ``REPLICATES`` noise seeds per trial) on the same requests (drawn from the plan's seed, as the
product's client replays one set of prompts to every trial; until simulator model 6 each noise seed drew other
requests too, and one configuration's runs differed by up to 25%):

- ``seed``: what the seed system does: plain ``optuna.samplers.TPESampler(n_startup_trials=5)`` in an ask/tell
  loop, no dedup (a repeated proposal is launched and measured again), a failed trial or a hard SLO failure told
  as -inf (the seed document's worst-case score), every cell at full length.
- ``random`` and ``ours``: the product: ``Search`` + ``TuningSession`` (in-memory storage, confirm_runs 0, a GPU
  pool of the 8 GPUs, so a configuration that needs more is recorded infeasible without a launch) with the
  strategy ``random`` or ``bayesian``. The evaluate function reports every cell to ``Deadline.report_cell``
  when the deadline has it (early stopping): a stopped trial pays only for the cells it ran.

Cost of a trial, in GPU-seconds: (launch + benchmark) x GPUs (tp x dp). Launch is the simulator's modelled
startup (``sim.__main__.startup_seconds``: process start, weights at ~0.5 GB/s per GPU, CUDA graphs); a server
that fails at startup pays the part it got through (7 s for bad parallelism, + weights for a KV-cache OOM, the
whole startup for an OOM at graph capture); a configuration over the runner's 8 GPUs is never launched (0).
Benchmark time is the cells' measured duration in server time.

Seed style also runs on to ``--seed-budget`` trials (150): within the budget it reaches 1% in about half of the
seeds or fewer, so its median GPU-hours would be censored at the budget; its own line gives the median measured.
The table shows its first ``--budget`` trials (what a run of that budget does: TPE proposes from the history alone).

Per strategy: trials and GPU-hours until the tuner's best (its best *measured* trial, as it would report it) is
truly within 1% of the optimum (its true score; ">" = not within the budget), the trials until it had measured
such a point at all (what the search found, whatever the noise then let it keep), and the true gap of that best
at the end of the budget. Last, the tuner's own time per trial (sampling, scoring, storage) at 100 trials.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.measure.scoring import TrialScore, rank_key, score_failure, score_result
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, Params, TrialFailure
from pytest_autotuner.core.outcome.records import TrialRecord, by_configuration
from pytest_autotuner.core.outcome.session import TuningSession
from pytest_autotuner.core.search.gpu_pool import GpuPool, gpus_needed
from pytest_autotuner.core.search.optuna_compat import quiet_optuna_logging
from pytest_autotuner.core.search.space import SearchSpace
from pytest_autotuner.core.search.study import Search
from pytest_autotuner.core.spec.objectives import objective_def
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.evaluate import plan_from_spec, run_ladder
from pytest_autotuner.sim import run_benchmark_in_process
from pytest_autotuner.sim.__main__ import startup_seconds
from pytest_autotuner.sim.cli import engine_config, params_to_argv, parse_argv
from pytest_autotuner.sim.perf_model import SIM_MODEL_VERSION

WITHIN = 0.01  # "found the optimum" = truly within 1%
NUM_GPUS = 8
NOISE = 0.03
REPLICATES = 4  # noise seeds per point; a trial draws one (cached, so reruns are cheap)
CACHE = Path(__file__).parent / ".cache"
_PROCESS_START_S = 7.0  # what startup_seconds charges before the weights load


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    spec: TaskSpec

    @property
    def model(self) -> str:
        assert self.spec.model is not None
        return self.spec.model.id_or_path

    @property
    def maximize(self) -> bool:
        return self.spec.optimization.direction == "maximize"


def _spec(
    name: str,
    model: str,
    bench: dict[str, Any],
    slo: dict[str, Any],
    objective: str = "maximize_throughput",
    **parameters: list[Any],
) -> TaskSpec:
    raw: dict[str, Any] = {
        "task_name": name,
        "model": {"id_or_path": model},
        "runtime": "sim",
        "parameters": {k.replace("_", "-"): v for k, v in parameters.items()},
        "optimization": {"strategy": "bayesian", "objective": objective, "confirm_runs": 0},
        # max_time is server seconds: cells end by their request count here
        "benchmark": {"max_requests_per_iteration": 48, "max_time_per_iteration": 600, **bench},
        "slo": slo,
    }
    return TaskSpec.model_validate(raw)


_PARALLEL: dict[str, list[Any]] = {"tp_size": [1, 2, 4, 8], "dp_size": [1, 2, 4, 8]}
_ENGINE: dict[str, list[Any]] = {
    "mem_fraction_static": [0.7, 0.8, 0.88, 0.94],
    "chunked_prefill_size": [1024, 4096, 8192],
    "max_running_requests": [16, 64, 256],
    "schedule_policy": ["fcfs", "lpm"],
    "cuda_graph_max_bs_decode": [32, 128, 512],
}

CASES = {
    "h1": Case(
        "h1",
        "H1: Llama-3.1-8B on 8x H100, 7 flags, N(2000,1000)/(200,100) at c=32 and c=128, TTFT p90 <= 0.5 s (hard)",
        _spec(
            "h1-llama-8b",
            "llama-3.1-8b-instruct",
            {"traffic_scenarios": ["N(2000,1000)/(200,100)"], "num_concurrency": [32, 128]},
            {"ttft": {"p90": {"threshold": 0.5, "hard_fail": True, "fail_ratio": 0.2}}},
            **_PARALLEL,
            **_ENGINE,
        ),
    ),
    "h2": Case(
        "h2",
        "H2: Llama-3.1-70B on 8x H100, same flags, N(1000,500)/(200,100) at c=16 and c=64, TTFT p90 <= 2 s (hard)",
        _spec(
            "h2-llama-70b",
            "llama-3.1-70b-instruct",
            {"traffic_scenarios": ["N(1000,500)/(200,100)"], "num_concurrency": [16, 64]},
            {"ttft": {"p90": {"threshold": 2.0, "hard_fail": True, "fail_ratio": 0.2}}},
            **_PARALLEL,
            **_ENGINE,
        ),
    ),
    # the traffic of the shared-prefix issue: groups of prompts behind long system prompts (SGLang bench_serving's
    # generated-shared-prefix); the radix cache, lpm and the KV pool's size decide TTFT
    "h3": Case(
        "h3",
        "H3: Llama-3.1-8B on 8x H100, shared prefixes P(8,64,4000,100,100) at c=16 and c=64, TTFT p90 <= 1 s "
        "(hard), radix cache and schedule policy in the space",
        _spec(
            "h3-llama-8b-shared-prefix",
            "llama-3.1-8b-instruct",
            {"traffic_scenarios": ["P(8,64,4000,100,100)"], "num_concurrency": [16, 64]},
            {"ttft": {"p90": {"threshold": 1.0, "hard_fail": True, "fail_ratio": 0.2}}},
            **_PARALLEL,
            mem_fraction_static=[0.5, 0.7, 0.88],
            chunked_prefill_size=[2048, 8192],
            max_running_requests=[32, 128],
            schedule_policy=["fcfs", "lpm"],
            disable_radix_cache=[True, False],
        ),
    ),
    # the goodput issue's objective: the highest request rate one server holds with every SLO met (a ladder of
    # load steps per trial, core/measure/capacity.py)
    "h4": Case(
        "h4",
        "H4: Llama-3.1-70B on 8x H100, maximize_goodput: the highest rate held at TTFT p99 <= 1 s and mean TPOT "
        "<= 50 ms, N(1000,500)/(200,100), ladder of up to 6 steps of 4 s from 0.5 to 64 req/s",
        _spec(
            "h4-llama-70b-goodput",
            "llama-3.1-70b-instruct",
            {
                "traffic_scenarios": ["N(1000,500)/(200,100)"],
                "warmup_requests": 0,
                "capacity": {"load": "rate", "min": 0.5, "max": 64, "max_steps": 6, "step_seconds": 4},
            },
            {"ttft": {"p99": {"threshold": 1.0}}, "tpot": {"threshold": 0.05}},
            objective="maximize_goodput",
            **_PARALLEL,
            chunked_prefill_size=[1024, 4096, 8192],
            max_running_requests=[16, 64, 256],
            schedule_policy=["fcfs", "lpm"],
            cuda_graph_max_bs_decode=[32, 256],
        ),
    ),
}


# -- one measurement and what it costs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """A configuration's benchmark (or its startup failure) and what each part cost in GPU-seconds."""

    result: BenchResult | None
    failure: tuple[FailureClass, str] | None
    launch_gpu_s: float
    cell_gpu_s: tuple[float, ...]

    @property
    def gpu_s(self) -> float:
        return self.launch_gpu_s + sum(self.cell_gpu_s)


def _launch_seconds(case: Case, params: Params, failure: FailureClass | None) -> float:
    argv = ["--model-path", case.model, "--sim-num-gpus", str(NUM_GPUS), *params_to_argv(params)]
    cfg = engine_config(parse_argv(argv, raising=True))
    full = startup_seconds(cfg)
    if failure is FailureClass.INVALID_PARALLELISM:
        return _PROCESS_START_S
    if failure is FailureClass.KV_CACHE_OOM:  # after the weights, before the graphs
        return full - (0.0 if cfg.disable_cuda_graph else 3.0)
    return full


def measure(case: Case, params: Params, replicate: int | None) -> Measured:
    """The simulator's result for ``params``: noise 0 for ``replicate`` None, else noise seed ``replicate``."""
    gpus = gpus_needed(params)
    if gpus > NUM_GPUS:
        return Measured(None, (FailureClass.INFEASIBLE, f"needs {gpus} GPUs"), 0.0, ())
    plan = plan_from_spec(case.spec, seed=0)
    noise, seed = (0.0, 0) if replicate is None else (NOISE, 1 + replicate)

    def run(endpoint: object, plan: BenchmarkPlan, deadline: Deadline | None = None) -> BenchResult:
        return run_benchmark_in_process(case.model, params, plan, num_gpus=NUM_GPUS, noise=noise, seed=seed)

    try:
        # maximize_goodput: the load ladder, as evaluate.run_trial runs it
        ladder = plan.capacity is not None
        result = run_ladder(run, None, plan, Deadline(None)) if ladder else run(None, plan)  # type: ignore[arg-type]
    except TrialFailure as failure:
        launch = _launch_seconds(case, params, failure.failure_class)
        return Measured(None, (failure.failure_class, failure.message), launch * gpus, ())
    launch = _launch_seconds(case, params, None)
    return Measured(result, None, launch * gpus, tuple(c.duration * gpus for c in result.cells))


def score(case: Case, measured: Measured) -> TrialScore:
    """Scored exactly as the session scores a trial."""
    if measured.failure is not None:
        return score_failure(measured.failure[0], case.spec.optimization, measured.failure[1])
    assert measured.result is not None
    return score_result(measured.result, case.spec.optimization, case.spec.slo)


_MEMO: dict[tuple[str, str, int | None], Measured] = {}


def point_key(params: Params) -> str:
    """A launched configuration as text (equal to ``SearchSpace.key`` for a full grid point)."""
    return json.dumps(dict(params), sort_keys=True)


def measure_memo(case: Case, params: Params, replicate: int | None) -> Measured:
    key = (case.key, point_key(params), replicate)
    if key not in _MEMO:
        _MEMO[key] = measure(case, params, replicate)
    return _MEMO[key]


# -- the truth ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Truth:
    """Expected score per point over the noise replicates a trial draws from (None: infeasible in any of them, or
    failed) and the optimum."""

    values: dict[str, float | None]
    failed: int
    optimum: float

    def gap(self, key: str, maximize: bool) -> float:
        """Relative distance of a point's true score from the optimum (inf: truly infeasible)."""
        value = self.values.get(key, math.inf)
        if value == math.inf:  # off the grid (the defaults trial leaves flags to the server)
            raise KeyError(key)
        if value is None:
            return math.inf
        return max(0.0, (self.optimum - value) if maximize else (value - self.optimum)) / abs(self.optimum)


def expected_score(case: Case, params: Params) -> tuple[float | None, bool]:
    """The mean score over the ``REPLICATES`` noise seeds (a trial draws one of them uniformly, so this is the
    exact expectation of what a trial of ``params`` measures), None when any replicate is infeasible; and whether
    the server fails at startup (deterministic: memory does not depend on noise)."""
    first = score(case, measure(case, params, 0))
    if first.failure is not None:
        return None, True
    scores = [first, *(score(case, measure(case, params, r)) for r in range(1, REPLICATES))]
    if not all(s.feasible for s in scores):
        return None, False
    return statistics.fmean(s.value for s in scores), False


def _truth_chunk(args: tuple[str, list[Params]]) -> list[tuple[str, float | None, bool]]:
    case = CASES[args[0]]
    return [(point_key(params), *expected_score(case, params)) for params in args[1]]


def truth(case: Case, workers: int) -> Truth:
    space = SearchSpace.from_spec(case.spec)
    # what decides the scores: the spec as written (defaults of fields added later left out), the noise and the
    # simulator's model version
    what = f"{case.spec.model_dump_json(exclude_defaults=True)}|{NOISE}|{REPLICATES}|{SIM_MODEL_VERSION}"
    digest = hashlib.sha256(what.encode()).hexdigest()[:12]
    path = CACHE / f"truth-{case.key}-expected-{digest}.json"
    if path.is_file():
        rows = json.loads(path.read_text())
    else:
        points = list(space.grid())
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            chunks = pool.map(_truth_chunk, [(case.key, points[i::workers]) for i in range(workers)])
        rows = [row for chunk in chunks for row in chunk]
        CACHE.mkdir(exist_ok=True)
        (CACHE / ".gitignore").write_text("*\n")
        path.write_text(json.dumps(rows))
    values = {key: value for key, value, _failed in rows}
    feasible = [v for v in values.values() if v is not None]
    optimum = max(feasible) if case.maximize else min(feasible)
    return Truth(values, sum(1 for *_r, failed in rows if failed), optimum)


# -- one tuning run -------------------------------------------------------------------------------------------


@dataclass
class Run:
    strategy: str
    seed: int
    keys: list[str] = field(default_factory=list)  # per trial, in order
    measured: list[TrialScore] = field(default_factory=list)  # the noisy score the tuner saw
    gpu_s: list[float] = field(default_factory=list)
    pruned: list[bool] = field(default_factory=list)
    # what a pruned trial would have measured at full length (same noise draw): None when not pruned
    unpruned: list[TrialScore | None] = field(default_factory=list)
    # the product's trials (random and ours), whose best is ranked as the product ranks it (``by_configuration``:
    # a configuration measured twice by its mean); empty for seed style, whose best is its best single trial
    records: list[TrialRecord] = field(default_factory=list)


def _replicates(seed: int) -> Callable[[], int]:
    rng = random.Random(f"noise-{seed}")
    return lambda: rng.randrange(REPLICATES)


def _unique_tpe(**kwargs: Any) -> Callable[[TaskSpec, SearchSpace, int], Any]:
    """Our bayesian sampler as make_sampler builds it, with ``kwargs`` changed."""

    def build(spec: TaskSpec, space: SearchSpace, seed: int) -> Any:
        from pytest_autotuner.core.search import samplers
        from pytest_autotuner.core.search.tpe import UniqueTPESampler

        options = {**samplers.tpe_options(spec.optimization, space), **kwargs}
        return UniqueTPESampler(space, seed=seed, **options)

    return build


def _plain_tpe(spec: TaskSpec, space: SearchSpace, seed: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(n_startup_trials=5, seed=seed)


#: Ablation (``--strategies``): our product with one part of the bayesian sampler changed. ``ours-before`` is
#: the sampler before issue 19 (feasibility weight 2, proposals not limited to the runner's GPUs).
VARIANTS: dict[str, dict[str, Any]] = {
    "ours": {},
    # no GPU limit in the sampler (Search still has one): Search closes a proposal over 8 GPUs without a trial and
    # draws again. The layout sweep then keeps proposing the layouts over 8 GPUs (a closed proposal is no trial of
    # its layout), so most trials come from Search's random fallback: the two rows below measure the same runs.
    "ours-before": {"sampler": _unique_tpe(feasibility_weight=2.0)},
    "ours-no-gpu-limit": {"sampler": _unique_tpe()},
    "ours-feas1": {"sampler": _unique_tpe(feasibility_weight=1.0, max_gpus=NUM_GPUS)},
    "ours-feas2": {"sampler": _unique_tpe(feasibility_weight=2.0, max_gpus=NUM_GPUS)},
    "ours-no-defaults": {"start_from_defaults": False},
    "ours-ei24": {"sampler": _unique_tpe(n_ei_candidates=24, max_gpus=NUM_GPUS)},
    "ours-startup10": {"sampler": _unique_tpe(n_startup_trials=10, max_gpus=NUM_GPUS)},
    "plain-tpe-in-product": {"sampler": _plain_tpe},  # our Search (dedup, graded failures), Optuna's TPE
    "ours-heaviest": {"cell_order": "heaviest_first"},
    "ours-lightest": {"cell_order": "lightest_first"},
    "ours-no-explore": {"sampler": _unique_tpe(explore=0.0, max_gpus=NUM_GPUS)},  # before: TPE after the start
    "ours-one-round-all-layouts": {  # the sweep before: one round over every layout that fits
        "sampler": _unique_tpe(more_replicas_better=False, sweep_rounds=1, layout_coverage=False, max_gpus=NUM_GPUS)
    },
    # these two as measured (before layout coverage)
    "ours-one-round": {
        "sampler": _unique_tpe(more_replicas_better=True, sweep_rounds=1, layout_coverage=False, max_gpus=NUM_GPUS)
    },
    "ours-two-rounds": {
        "sampler": _unique_tpe(more_replicas_better=True, sweep_rounds=2, layout_coverage=False, max_gpus=NUM_GPUS)
    },
    # within a layout's turn, TPE's best point wherever it stands, not first the values the layout has not had
    "ours-no-coverage": {"sampler": _unique_tpe(layout_coverage=False, max_gpus=NUM_GPUS)},
    "ours-no-remeasure": {"remeasure_best": False},  # a new best is not measured again
    "ours-explore50": {"sampler": _unique_tpe(explore=0.5, max_gpus=NUM_GPUS)},
}


def run_ours(case: Case, strategy: str, seed: int, budget: int, variant: dict[str, Any]) -> Run:
    opt = case.spec.optimization.model_copy(
        update={
            "strategy": strategy,
            "max_iterations": budget,
            "seed": seed,
            "start_from_defaults": variant.get("start_from_defaults", True),
            "remeasure_best": variant.get("remeasure_best", True),
        }
    )
    spec = case.spec.model_copy(update={"optimization": opt})
    if "cell_order" in variant:
        spec = spec.model_copy(
            update={"benchmark": spec.benchmark.model_copy(update={"cell_order": variant["cell_order"]})}
        )
    # measure() simulates the cells in the order of the case's plan; report them in this spec's order
    reverse = spec.benchmark.cell_order != case.spec.benchmark.cell_order
    space = SearchSpace.from_spec(spec)
    name = f"{case.key}-{strategy}-{seed}"
    search = Search(spec=spec, space=space, storage=None, study_name=name, seed=seed, max_gpus=NUM_GPUS)
    if "sampler" in variant:
        search.study.sampler = variant["sampler"](spec, space, seed)
    draw = _replicates(seed)
    spent: dict[str, list[tuple[float, TrialScore | None]]] = {}  # per point, one entry per run, in order

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        key = point_key(params)
        measured = measure_memo(case, params, draw())
        spent.setdefault(key, []).append((measured.gpu_s, None))
        if measured.failure is not None:
            raise TrialFailure(*measured.failure)
        assert measured.result is not None
        report = getattr(deadline, "report_cell", None)
        if report is not None:  # early stopping (issue 19, part 1): pay only for the cells run
            # cells are simulated independently; reported (and paid) in the spec's order
            order = list(range(len(measured.result.cells)))
            order = order[::-1] if reverse else order
            for done, index in enumerate(order, start=1):
                try:
                    report(measured.result.cells[index])
                except TrialFailure:
                    paid = sum(measured.cell_gpu_s[i] for i in order[:done])
                    spent[key][-1] = (measured.launch_gpu_s + paid, score(case, measured))
                    raise
        return measured.result

    session = TuningSession(spec=spec, search=search, evaluate=evaluate, gpu_pool=GpuPool(list(range(NUM_GPUS))))
    session.search()
    run = Run(variant.get("name", strategy), seed)
    for record in sorted(session.records()[0], key=lambda r: r.number):
        key = point_key(record.params)  # the defaults trial: without the flags left to the server
        # not in spent: rejected before launch (over 8 GPUs)
        gpu_s, unpruned = spent[key].pop(0) if spent.get(key) else (0.0, None)
        run.keys.append(key)
        run.measured.append(_record_score(record.value, record.feasible, record.meets_slos, record.failure))
        run.gpu_s.append(gpu_s)
        run.pruned.append(unpruned is not None)
        run.unpruned.append(unpruned)
        run.records.append(record)
    return run


def _record_score(value: float, feasible: bool, meets_slos: bool, failure: str | None) -> TrialScore:
    """Enough of a TrialScore for ranking (rank_key) what the tuner saw."""
    return TrialScore(value, None, 0.0, 0.0 if feasible else 1.0, (), FailureClass(failure) if failure else None)


def run_seed_style(case: Case, seed: int, budget: int) -> Run:
    """The seed system: plain TPE (n_startup_trials 5), no dedup, failures and hard SLO failures as -inf/+inf."""
    import optuna

    space = SearchSpace.from_spec(case.spec)
    sampler = optuna.samplers.TPESampler(n_startup_trials=5, seed=seed)
    study = optuna.create_study(direction=case.spec.optimization.direction, sampler=sampler)
    distributions = space.distributions()
    worst = -math.inf if case.maximize else math.inf
    draw = _replicates(seed)
    run = Run("seed", seed)
    for _ in range(budget):
        trial = study.ask(distributions)
        params: Params = dict(trial.params)
        measured = measure_memo(case, params, draw())
        scored = score(case, measured)
        study.tell(trial, scored.value if scored.feasible else worst)
        run.keys.append(point_key(params))
        run.measured.append(scored)
        run.gpu_s.append(measured.gpu_s)
        run.pruned.append(False)
        run.unpruned.append(None)
    return run


def truncated(run: Run, budget: int) -> Run:
    """The first ``budget`` trials of a run."""
    return Run(
        run.strategy,
        run.seed,
        run.keys[:budget],
        run.measured[:budget],
        run.gpu_s[:budget],
        run.pruned[:budget],
        run.unpruned[:budget],
        run.records[:budget],
    )


def one_run(job: tuple[str, str, int, int]) -> Run:
    case_key, strategy, seed, budget = job
    case = CASES[case_key]
    if strategy == "seed":
        return run_seed_style(case, seed, budget)
    if strategy == "random":
        return run_ours(case, "random", seed, budget, {})
    return run_ours(case, "bayesian", seed, budget, {**VARIANTS[strategy], "name": strategy})


# -- statistics -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStats:
    trials_to_1pct: float  # inf: not within the budget
    trials_to_visit: float  # until a trial measured a point truly within 1% (whatever the tuner then kept)
    gpu_h_to_1pct: float
    final_gap: float
    gpu_h_total: float
    startup_failures: int
    repeats: int
    bad_prunes: int  # stopped trials that would have become the best
    pruned: int
    confirmed_gaps: tuple[float, float]  # after confirming the top 1 / top 3 (2 runs each)


def run_stats(case: Case, run: Run, true: Truth) -> RunStats:
    best_key: tuple[bool, bool, float] | None = None
    best_point = ""
    hit_trials = hit_cost = visit = math.inf
    cost = 0.0
    bad_prunes = 0
    rows = zip(run.keys, run.measured, run.gpu_s, run.unpruned, strict=True)
    for i, (key, seen, gpu_s, unpruned) in enumerate(rows):
        cost += gpu_s
        # a would-be best: measured to the end (same noise draw), it would have ranked above the best so far
        if unpruned is not None and unpruned.failure is None and unpruned.feasible:
            bad_prunes += best_key is None or rank_key(True, True, unpruned.value, case.maximize) < best_key
        if math.isinf(visit) and key in true.values and true.gap(key, case.maximize) <= WITHIN:
            visit = float(i + 1)
        if run.records:  # the product's best: a configuration measured twice by its mean
            ranked = [r for r in by_configuration(run.records[: i + 1], case.maximize) if r.feasible]
            if ranked:
                best_key = rank_key(True, True, ranked[0].value, case.maximize)
                best_point = point_key(ranked[0].params)
        elif seen.failure is None and seen.feasible:
            rank = rank_key(True, True, seen.value, case.maximize)
            if best_key is None or rank < best_key:
                best_key, best_point = rank, key
        if math.isinf(hit_trials) and best_point and true.gap(best_point, case.maximize) <= WITHIN:
            hit_trials, hit_cost = float(i + 1), cost / 3600
    not_startup = (FailureClass.INFEASIBLE, FailureClass.PRUNED)
    failures = sum(1 for s in run.measured if s.failure is not None and s.failure not in not_startup)
    return RunStats(
        hit_trials,
        visit,
        hit_cost,
        true.gap(best_point, case.maximize) if best_point else math.inf,
        cost / 3600,
        failures,
        len(run.keys) - len(set(run.keys)),
        bad_prunes,
        sum(run.pruned),
        (confirmed_gap(case, run, true, 1), confirmed_gap(case, run, true, 3)),
    )


def confirmed_gap(case: Case, run: Run, true: Truth, top: int, runs: int = 2) -> float:
    """True gap of the configuration the product would report: its ``top`` best measured trials confirmed by
    ``runs`` more runs each (fresh noise draws), the best mean wins (``task._confirm`` with ``confirm_top``)."""
    draw = _replicates(run.seed + 10_000 * top)
    ranked: dict[str, tuple[bool, bool, float]] = {}
    if run.records:  # the product's candidates, as it ranks them
        for record in by_configuration(run.records, case.maximize):
            if record.feasible and (key := point_key(record.params)) in true.values:
                ranked.setdefault(key, rank_key(True, True, record.value, case.maximize))
    for key, seen in zip(run.keys, run.measured, strict=True):
        if not run.records and seen.failure is None and seen.feasible and key in true.values:
            rank = rank_key(True, True, seen.value, case.maximize)
            ranked[key] = min(rank, ranked.get(key, rank))
    best: tuple[tuple[bool, bool, float], str] | None = None
    for key in sorted(ranked, key=ranked.__getitem__)[:top]:
        scores = [score(case, measure_memo(case, json.loads(key), draw())) for _ in range(runs)]
        mean = statistics.fmean(s.value for s in scores)
        rank = rank_key(True, all(s.feasible for s in scores), mean, case.maximize)
        if best is None or rank < best[0]:
            best = (rank, key)
    return true.gap(best[1], case.maximize) if best is not None else math.inf


def fewer_replicas_better(case: Case, true: Truth) -> tuple[int, int, float]:
    """The sampler's ``more_replicas_better`` rule against the truth: (points with fewer data-parallel replicas than
    a twin that fits, how many of them truly score better than that twin or are feasible where it is not, the
    largest margin among the better ones)."""
    dps = sorted(int(v) for v in case.spec.parameters["dp-size"])
    twins = better = 0
    worst = 0.0
    for key, value in true.values.items():
        params = json.loads(key)
        if "dp-size" not in params:
            continue
        for dp in (d for d in dps if d > params["dp-size"]):
            twin = {**params, "dp-size": dp}
            if gpus_needed(twin) > NUM_GPUS:
                continue
            twins += 1
            other = true.values.get(point_key(twin))
            if value is None:
                continue
            if other is None or (value > other if case.maximize else value < other):
                better += 1
                if other is not None:
                    worst = max(worst, abs(value - other) / abs(other))
    return twins, better, worst


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def fmt(value: float, digits: int = 1, unit: str = "") -> str:
    return "not reached" if math.isinf(value) or math.isnan(value) else f"{value:.{digits}f}{unit}"


HEADER = [
    "strategy",
    "trials to 1%: mean (misses as budget)",
    "median",
    "reached",
    "trials until one within 1% was measured: mean",
    "GPU-h to 1%: median",
    "mean (reached)",
    "gap at end: median",
    "max",
    "GPU-h per study",
    "startup failures",
    "repeats",
    "stopped early",
    "early-stopped would-be bests",
    "confirmed top 1: gap median / within 1%",
    "confirmed top 3: gap median / within 1%",
]


def summarize(stats: dict[str, list[RunStats]], budget: int) -> list[list[str]]:
    rows = []
    for strategy, mine in stats.items():
        reached = [s for s in mine if not math.isinf(s.trials_to_1pct)]
        trials = [s.trials_to_1pct if s in reached else float(budget) for s in mine]
        gaps = [s.final_gap for s in mine]
        rows.append(
            [
                strategy,
                f"{statistics.fmean(trials):.1f}",
                fmt(median([s.trials_to_1pct for s in mine]), 1),
                f"{len(reached)}/{len(mine)}",
                f"{statistics.fmean([min(s.trials_to_visit, budget) for s in mine]):.1f}",
                fmt(median([s.gpu_h_to_1pct for s in mine]), 2),
                fmt(statistics.fmean([s.gpu_h_to_1pct for s in reached]) if reached else math.inf, 2),
                fmt(median(gaps) * 100, 2, "%"),
                fmt(max(gaps) * 100, 2, "%"),
                f"{statistics.fmean([s.gpu_h_total for s in mine]):.2f}",
                f"{statistics.fmean([s.startup_failures for s in mine]):.1f}",
                f"{sum(s.repeats for s in mine)}",
                f"{statistics.fmean([s.pruned for s in mine]):.1f}",
                f"{sum(s.bad_prunes for s in mine)}",
                *(
                    f"{fmt(median([s.confirmed_gaps[i] for s in mine]) * 100, 2, '%')} / "
                    f"{sum(s.confirmed_gaps[i] <= WITHIN for s in mine)}/{len(mine)}"
                    for i in (0, 1)
                ),
            ]
        )
    return rows


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


# -- the tuner's own time -------------------------------------------------------------------------------------


def tuner_time(case: Case, n: int = 100) -> tuple[float, float]:
    """Mean ms per trial over n trials and over trials n-10..n, with an evaluate that returns a stored result."""
    space = SearchSpace.from_spec(case.spec)
    fixed = next(m.result for p in space.grid() if (m := measure(case, p, None)).result is not None)
    opt = case.spec.optimization.model_copy(update={"max_iterations": n, "seed": 0})
    spec = case.spec.model_copy(update={"optimization": opt})
    search = Search(spec=spec, space=space, storage=None, study_name=f"timing-{case.key}", seed=0)
    stamps: list[float] = []

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        stamps.append(time.perf_counter())
        return fixed

    started = time.perf_counter()
    TuningSession(spec=spec, search=search, evaluate=evaluate).search()
    total = time.perf_counter() - started
    return total / n * 1e3, (stamps[-1] - stamps[-11]) / 10 * 1e3


# -- main -----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument(
        "--seed-budget", type=int, default=150, help="trials seed style gets for its GPU-h median (its own line)"
    )
    parser.add_argument("--spaces", default="h1,h2", help=f"of {','.join(CASES)}")
    parser.add_argument("--strategies", default="seed,random,ours")
    parser.add_argument("--workers", type=int, default=max(1, multiprocessing.cpu_count()))
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args(argv)
    quiet_optuna_logging()
    started = time.perf_counter()
    ctx = multiprocessing.get_context("fork")
    strategies = args.strategies.split(",")
    out: list[str] = [f"Command: `python benchmarks/tuning_efficiency.py {' '.join(sys.argv[1:])}`".rstrip()]
    for key in args.spaces.split(","):
        case = CASES[key]
        true = truth(case, args.workers)
        n_points = len(true.values)
        n_feasible = sum(v is not None for v in true.values.values())
        n_near = sum(1 for k in true.values if true.gap(k, case.maximize) <= WITHIN)
        best_point = next(k for k, v in true.values.items() if v == true.optimum)
        draws = [score(case, measure_memo(case, json.loads(best_point), r)).value for r in range(REPLICATES)]
        spread = statistics.stdev(draws) / statistics.fmean(draws)
        tiers = sorted({round(true.gap(k, case.maximize), 3) for k, v in true.values.items() if v is not None})[:4]
        unit = objective_def(case.spec.optimization.objective).unit
        twins, better, worst = fewer_replicas_better(case, true)
        # seed style runs its longer budget once: its first `budget` trials are what a run of `budget` does (TPE
        # proposes from the history alone, and the noise draws come in the same order)
        seed_budget = max(args.budget, args.seed_budget)
        jobs = [
            (key, s, seed, seed_budget if s == "seed" else args.budget)
            for s in strategies
            for seed in range(args.seeds)
        ]
        with ctx.Pool(args.workers) as pool:
            long_runs = pool.map(one_run, jobs, chunksize=1)
        for run in long_runs:  # the defaults trial leaves some flags to the server: off the grid
            for point in set(run.keys) - true.values.keys():
                true.values[point] = _truth_chunk((key, [json.loads(point)]))[0][1]
        runs = [truncated(run, args.budget) for run in long_runs]
        stats = {s: [run_stats(case, r, true) for r in runs if r.strategy == s] for s in strategies}
        out += [
            "",
            f"### {case.title}",
            "",
            f"{n_points} points, every one evaluated with noise 0: {true.failed} fail at startup or need "
            f"more than {NUM_GPUS} GPUs, {n_feasible} feasible, {n_near} within 1% of the optimum "
            f"({true.optimum:,.1f} {unit}). {args.seeds} seeds, budget {args.budget} trials, noise {NOISE:g}. "
            f"One run of the optimum scores {', '.join(f'{d:,.0f}' for d in draws)} in the {REPLICATES} noise "
            f"draws (sd {spread:.1%} of the mean); the best gaps in the space: "
            f"{', '.join(f'{t:.1%}' for t in tiers)}. The sampler's replicas rule against the truth: of {twins} "
            f"points with a twin that has more replicas and fits, {better} score better than it or are feasible "
            f"where it is not" + (f" (largest margin {worst:.1%})." if worst else "."),
            "",
            markdown(summarize(stats, args.budget)),
        ]
        if "seed" in strategies and seed_budget > args.budget:
            longer = [run_stats(case, r, true) for r in long_runs if r.strategy == "seed"]
            reached = sum(not math.isinf(s.gpu_h_to_1pct) for s in longer)
            # a run that never reached 1% would need more than its whole study: a lower bound of the median
            at_least = median([s.gpu_h_total if math.isinf(s.gpu_h_to_1pct) else s.gpu_h_to_1pct for s in longer])
            out += [
                "",
                f"Seed style given {seed_budget} trials (so that its median is measured, not censored at the budget):"
                f" GPU-h to 1% median {fmt(median([s.gpu_h_to_1pct for s in longer]), 2)} (at least "
                f"{at_least:.2f}, counting a run that never reached 1% at its whole study's cost), trials median "
                f"{fmt(median([s.trials_to_1pct for s in longer]), 1)}, reached {reached}/{len(longer)}.",
            ]
        print("\n".join(out[out.index(f"### {case.title}") - 1 :]), flush=True)
    if not args.no_timing:
        out += ["", "Tuner time per trial (ours, 100 trials, in-memory storage, an evaluate that returns at once):"]
        for key in args.spaces.split(","):
            mean, last = tuner_time(CASES[key])
            out.append(f"- {key}: {mean:.1f} ms mean, {last:.1f} ms over trials 90-100")
            print(out[-1], flush=True)
    out.append(f"\nTotal wall time {time.perf_counter() - started:.0f} s.")
    print("\n\n--- markdown for benchmarks/RESULTS.md ---\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
