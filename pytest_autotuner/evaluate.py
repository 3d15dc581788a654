"""The evaluate function a session is driven by: launch a server, benchmark it, always tear it down."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from pytest_autotuner.core.plan import BenchmarkPlan
from pytest_autotuner.core.precision import PRECISION_METRICS
from pytest_autotuner.core.scenarios import parse_scenario
from pytest_autotuner.core.trial import Deadline, FailureClass, Params, TrialFailure

if TYPE_CHECKING:
    from pytest_autotuner.core.metrics import BenchResult
    from pytest_autotuner.core.session import EvaluateFn
    from pytest_autotuner.core.spec import TaskSpec
    from pytest_autotuner.runtimes.base import RuntimeHost

__all__ = ["make_evaluate", "plan_from_spec"]


def plan_from_spec(spec: TaskSpec, seed: int) -> BenchmarkPlan:
    """The benchmark section of a spec as a plan for the client."""
    bench = spec.benchmark
    return BenchmarkPlan(
        scenarios=tuple(parse_scenario(s) for s in bench.traffic_scenarios),
        concurrencies=tuple(bench.num_concurrency),
        request_rates=tuple(bench.request_rates),
        max_requests=bench.max_requests_per_iteration,
        max_time=bench.max_time_per_iteration,
        warmup_requests=bench.warmup_requests,
        additional_params=dict(bench.additional_params),
        api=bench.api,
        seed=seed,
        request_timeout=min(spec.optimization.timeout_per_iteration, 600.0),
        max_error_rate=bench.max_error_rate,
        min_completed=bench.min_completed,
        tokenizer=bench.model_tokenizer,
        precision=bench.precision,
        min_requests_for_precision=bench.min_requests_for_precision,
        precision_metric=PRECISION_METRICS[spec.optimization.objective],
        cell_order=bench.cell_order,
        dataset_root=bench.dataset_root,
    )


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
