"""The evaluate function a session is driven by: launch a server, benchmark it, always tear it down."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

from pytest_autotuner.core.measure.capacity import LadderSearch, judge_step, sized_step_requests, step_seed
from pytest_autotuner.core.measure.metrics import BenchResult, CellMetrics
from pytest_autotuner.core.measure.plan import BenchmarkPlan
from pytest_autotuner.core.measure.precision import PRECISION_METRICS
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, Params, TrialFailure
from pytest_autotuner.core.spec.capacity_limits import CapacityLimits
from pytest_autotuner.core.spec.scenarios import parse_scenario

if TYPE_CHECKING:
    from pytest_autotuner.core.outcome.session import EvaluateFn
    from pytest_autotuner.core.spec.task_spec import TaskSpec
    from pytest_autotuner.runtimes.base import Endpoint, RuntimeHost

__all__ = ["make_evaluate", "plan_from_spec", "run_ladder", "run_trial"]

RunBenchmark = Callable[..., BenchResult]


def plan_from_spec(spec: TaskSpec, seed: int) -> BenchmarkPlan:
    """The benchmark section of a spec as a plan for the client."""
    bench = spec.benchmark
    capacity = None
    if spec.optimization.uses_capacity:
        settings = bench.capacity
        capacity = CapacityLimits() if settings is None else CapacityLimits(**settings.model_dump())
        if capacity.min_step_requests is None:  # sized so that the SLO's percentile can hold with confidence
            sized = sized_step_requests(spec.slo, capacity.confidence)
            capacity = dataclasses.replace(capacity, min_step_requests=sized)
    # goodput alone runs only its ladder; beside other objectives the spec's own cells too (``run_trial``)
    fixed = not spec.optimization.ladder_only
    return BenchmarkPlan(
        scenarios=tuple(parse_scenario(s) for s in bench.traffic_scenarios),
        concurrencies=tuple(bench.num_concurrency) if fixed else (),
        request_rates=tuple(bench.request_rates) if fixed else (),
        max_requests=bench.max_requests_per_iteration,
        max_time=bench.max_time_per_iteration,
        warmup_requests=bench.warmup_requests,
        additional_params=dict(bench.additional_params),
        api=bench.api,
        seed=seed,
        request_timeout=min(spec.optimization.timeout_per_iteration, 600.0),
        max_error_rate=bench.max_error_rate,
        min_completed=bench.min_completed,
        stall_timeout=bench.stall_timeout,
        tokenizer=bench.model_tokenizer,
        precision=bench.precision,
        min_requests_for_precision=bench.min_requests_for_precision,
        precision_metric=PRECISION_METRICS.get(spec.optimization.objective, "e2e"),
        cell_order=bench.cell_order,
        dataset_root=bench.dataset_root,
        capacity=capacity,
        slo=spec.slo,
    )


def run_ladder(
    run_benchmark: RunBenchmark,
    endpoint: Endpoint,
    plan: BenchmarkPlan,
    deadline: Deadline,
    drain: Callable[[], object] | None = None,
) -> BenchResult:
    """The capacity search on one server (``core/measure/capacity.py``): each load step is one benchmark of the plan's
    scenarios at that load, judged against the plan's SLOs; returns every step's cells and the ladder.

    Every measurement starts from the same server state, whatever the ladder did before: ``drain`` (idle server,
    empty prefix cache: ``make_evaluate``'s ``reset``) is called before each, and its arrivals are seeded by the
    load and the repeat alone (``step_seed``). A step is measured ``min_repeats`` times, and while its SLO
    intervals straddle a threshold again, on fresh arrivals, up to ``max_repeats`` times, pooled (``judge_step``).

    A step's own stall and error-rate checks are off (``min_completed`` 0, ``max_error_rate`` 1): an overloaded
    step is an answer ("broke here"), not a failed trial; ``judge_step`` applies the spec's limits to it instead.
    A crash, a timeout or a connection failure still ends the trial.
    """
    assert plan.capacity is not None
    limits = plan.capacity
    search = LadderSearch(limits)
    cells = []
    info: dict[str, object] = {}
    closed = limits.load == "concurrency"
    while (load := search.next_load()) is not None:
        requests = limits.step_requests(load, plan.max_requests)
        measured: list[CellMetrics] = []
        most = max(1, limits.max_repeats, limits.min_repeats)
        for repeat in range(most):
            if drain is not None:
                drain()
            step_plan = dataclasses.replace(
                plan,
                max_requests=requests,
                max_time=limits.step_max_time(load, requests, plan.max_time),
                concurrencies=(int(load),) if closed else (),
                request_rates=() if closed else (load,),
                capacity=None,
                precision=None,
                min_completed=0,
                max_error_rate=1.0,
                seed=step_seed(plan.seed, repeat),
                common_arrivals=True,
            )
            result = run_benchmark(endpoint, step_plan, deadline=deadline)
            info = info or result.server_info
            for cell in result.cells:
                cell.ladder = True  # never pooled or compared with a fixed cell at the same load (``CellKey``)
            measured += result.cells
            step = judge_step(
                load,
                measured,
                max_error_rate=plan.max_error_rate,
                min_completed=plan.min_completed,
                slo=plan.slo,
                confidence=limits.confidence,
                final=repeat + 1 >= most,
                repeats=repeat + 1,
            )
            if not step.extend and repeat + 1 >= limits.min_repeats:
                break
        search.record(step)
        cells += measured
    return BenchResult(cells, dict(info), (search.result(),))


def run_trial(
    run_benchmark: RunBenchmark,
    endpoint: Endpoint,
    plan: BenchmarkPlan,
    deadline: Deadline,
    drain: Callable[[], object] | None = None,
) -> BenchResult:
    """One trial of a capacity plan on one server: the plan's own cells first (``num_concurrency``,
    ``request_rates``: where ``maximize_goodput`` is one of several objectives, the others are measured there),
    then the load ladder (``run_ladder``), each of whose steps starts from a drained server (``drain``); a plan
    without cells of its own (goodput alone) runs only the ladder.

    The fixed cells come first so that they measure every configuration from the same state, a fresh server
    after warm-up, as a trial of any other objective does: after the ladder a configuration would start them
    behind whatever its last step left (a backlog from an overload the drain may not have cleared within its
    limit, a prefix cache filled by hundreds of the ladder's requests), which differs per configuration. The
    ladder's first step runs at its ceiling, usually an overload, so the state the fixed cells leave (nothing,
    after the drain) does not change what it finds. A fixed cell that stalls or errors fails the trial before
    the ladder is spent."""
    if not plan.cells():
        return run_ladder(run_benchmark, endpoint, plan, deadline, drain)
    fixed = run_benchmark(endpoint, dataclasses.replace(plan, capacity=None), deadline=deadline)
    # a cell cut at its time limit may leave requests running: the ladder drains before each of its steps
    ladder = run_ladder(run_benchmark, endpoint, plan, deadline, drain)
    info = fixed.server_info or ladder.server_info
    return BenchResult(fixed.cells + ladder.cells, dict(info), ladder.capacities)


def make_evaluate(host: RuntimeHost, plan: BenchmarkPlan, *, client_process: bool = False) -> EvaluateFn:
    """``evaluate(params, deadline)`` for a session: one server per call from ``host``, torn down on every path.

    Calls may run concurrently (one per worker thread): each launch is its own server, sharing no state. With
    ``client_process`` (for sessions that run trials concurrently) each benchmark runs in a child process of
    its own, so concurrent trials' clients do not share one interpreter lock and one core; alone, a trial's
    client runs in this process, which costs nothing to start.
    """
    if client_process:
        from pytest_autotuner.bench.child import run_benchmark_in_child as run_benchmark
    else:
        from pytest_autotuner.bench.client import run_benchmark

    launches = itertools.count(1)

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        with host.launch(params, deadline=deadline, label=f"trial{next(launches)}") as server:
            deadline.start_benchmark()  # launch time ends here (cost accounting)
            try:
                # the client reports each cell to the deadline, whose rule may prune the trial (TrialFailure)
                if plan.capacity is not None:
                    from pytest_autotuner.bench.server_control import reset_server

                    endpoint = server.endpoint
                    # wall seconds a backlog may take to drain: an overloaded step's whole queue (the 32 req/s
                    # probe of a 2 req/s server is minutes of it); the trial's deadline still holds
                    limit = 100 * plan.max_time / endpoint.time_scale

                    def drain() -> float:
                        return reset_server(endpoint, deadline, limit)

                    return run_trial(run_benchmark, endpoint, plan, deadline, drain)
                return run_benchmark(server.endpoint, plan, deadline=deadline)
            except TrialFailure as failure:
                if failure.failure_class is FailureClass.PRUNED:
                    raise  # early stopping: the server was fine, its log says nothing about why
                if failure.failure_class != FailureClass.TRIAL_TIMEOUT and not server.is_alive():
                    raise TrialFailure(
                        FailureClass.CRASHED,
                        f"the server exited during the benchmark ({failure.message})",
                        log_tail=server.log_tail(),
                    ) from None
                failure.log_tail = failure.log_tail or server.log_tail()
                raise

    return evaluate
