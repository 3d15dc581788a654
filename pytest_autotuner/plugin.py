"""pytest hooks: ``--autotune`` options, one item per tuning spec, progress lines and the summary.

Heavy libraries are imported only when an item runs, so plain ``pytest`` without ``--autotune`` costs nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_autotuner.core.baseline import BaselineComparison
    from pytest_autotuner.core.session import SessionResult, TrialEvent, TuningSession
    from pytest_autotuner.core.spec import TaskSpec
    from pytest_autotuner.runtimes import Runtime

RUNTIME_CHOICES = ("docker", "process", "sim")
SPEC_SUFFIXES = (".json", ".yaml", ".yml")
_results_key = pytest.StashKey[list[tuple["SessionResult", str | None]]]()
_spec_dirs_key = pytest.StashKey[list[Path]]()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("autotune", "SGLang tuning sessions (pytest-autotuner)")
    group.addoption("--autotune", action="store_true", help="run every tuning spec as a tuning session")
    group.addoption(
        "--autotune-runtime",
        choices=RUNTIME_CHOICES,
        default=None,
        help="run every spec on this runtime (overrides the spec's `runtime`)",
    )
    group.addoption(
        "--autotune-max-iterations",
        type=_positive_int,
        default=None,
        metavar="N",
        help="cap every spec's optimization.max_iterations (smoke runs)",
    )
    group.addoption(
        "--autotune-seed",
        type=_int,
        default=None,
        metavar="SEED",
        help="seed for specs without optimization.seed (default 0)",
    )
    group.addoption(
        "--autotune-storage",
        default=None,
        metavar="URL",
        help="Optuna storage URL shared by every spec (default: a study file per spec under the report folder)",
    )
    group.addoption("--autotune-report-dir", default=None, metavar="DIR", help="report folder (default reports/)")
    group.addoption(
        "--autotune-specs",
        action="append",
        default=None,
        metavar="PATH_OR_GLOB",
        help="spec files or folders (repeatable; default tuning_specs/)",
    )
    group.addoption(
        "--autotune-workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="trials run at once (default: as many as the runner's GPUs fit)",
    )
    group.addoption(
        "--autotune-report-only",
        action="store_true",
        help="run no search trials: confirm the best of the (shared) study, assert and report",
    )
    group.addoption(
        "--autotune-grace-period",
        type=_positive_int,
        default=120,
        metavar="SECONDS",
        help="shared storages: a running trial without a heartbeat for this long is failed and retried",
    )
    group.addoption(
        "--autotune-update-baseline",
        action="store_true",
        help="write or refresh tuning_specs/<spec>.baseline.json after a passing session",
    )
    group.addoption(
        "--autotune-strict-baseline",
        action="store_true",
        help="fail (instead of warning) when the baseline was recorded on a different fingerprint",
    )
    parser.addini("autotune_specs", "spec files or folders", type="paths", default=[])
    parser.addini("autotune_report_dir", "report folder", default="reports")
    parser.addini("autotune_runtime", "runtime for every spec (docker, process, sim)", default="")


def _spec_paths(config: pytest.Config) -> list[Path]:
    patterns = config.getoption("autotune_specs")
    if patterns:
        paths: list[Path] = []
        for pattern in patterns:
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches and not Path(pattern).exists():
                raise pytest.UsageError(f"--autotune-specs {pattern!r} matches no file or folder")
            paths += [Path(m).resolve() for m in matches] or [Path(pattern).resolve()]
        return paths
    ini = config.getini("autotune_specs")
    return [Path(p).resolve() for p in ini] or [config.rootpath / "tuning_specs"]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("autotune"):
        return
    config.addinivalue_line("markers", "autotune: a tuning session collected from a tuning spec")
    runtime = config.getini("autotune_runtime")
    if runtime and runtime not in RUNTIME_CHOICES:
        raise pytest.UsageError(f"ini autotune_runtime = {runtime!r}; use one of {', '.join(RUNTIME_CHOICES)}")
    spec_paths = _spec_paths(config)
    config.stash[_spec_dirs_key] = spec_paths
    config.stash[_results_key] = []
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        # `pytest --autotune` with no paths runs the specs, not the test suite
        config.args = [str(p) for p in spec_paths]


def report_dir_of(config: pytest.Config) -> Path:
    """``--autotune-report-dir``, else the ini value, relative to where pytest was invoked."""
    path = Path(config.getoption("autotune_report_dir") or config.getini("autotune_report_dir"))
    return path if path.is_absolute() else config.invocation_params.dir / path


def _is_spec_file(config: pytest.Config, path: Path) -> bool:
    if path.suffix not in SPEC_SUFFIXES or path.name.endswith((".baseline.json", ".schema.json")):
        return False
    roots = config.stash.get(_spec_dirs_key, [])
    return any(path == root or root in path.parents for root in roots) or str(path) in config.args


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    config = parent.config
    if config.getoption("autotune") and _is_spec_file(config, file_path):
        return SpecFile.from_parent(parent, path=file_path)
    return None


class SpecFile(pytest.File):
    """A tuning spec file; collects one TuningItem."""

    def collect(self) -> Iterator[pytest.Item]:
        from pytest_autotuner.core.spec import SpecError, load_spec

        try:
            spec = load_spec(self.path)
        except SpecError as err:
            raise self.CollectError(str(err)) from None
        item = TuningItem.from_parent(self, name=spec.task_name, spec=spec)
        item.add_marker("autotune")
        yield item


class AutotuneFailure(Exception):
    """The session ended with the SLOs or the baseline not met; the message explains it."""


class TuningItem(pytest.Item):
    """One tuning session."""

    def __init__(self, *, spec: TaskSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def _option(self, name: str) -> Any:
        return self.config.getoption(name)

    def _effective_spec(self) -> tuple[TaskSpec, str, int]:
        runtime = self._option("autotune_runtime") or self.config.getini("autotune_runtime") or self.spec.runtime
        opt = self.spec.optimization
        seed = opt.seed if opt.seed is not None else (self._option("autotune_seed") or 0)
        cap = self._option("autotune_max_iterations")
        updates: dict[str, Any] = {"seed": seed}
        if cap is not None and cap < opt.max_iterations:
            updates["max_iterations"] = cap
            updates["n_initial_random"] = min(opt.n_initial_random, max(cap - 1, 0))
        spec = self.spec.model_copy(update={"optimization": opt.model_copy(update=updates), "runtime": runtime})
        return spec, runtime, seed

    def runtest(self) -> None:
        from pytest_autotuner.core.baseline import baseline_path, load_baseline
        from pytest_autotuner.core.gpu_pool import GpuPool
        from pytest_autotuner.core.search import Search, default_storage_url, study_name_for
        from pytest_autotuner.core.session import TuningSession
        from pytest_autotuner.core.space import SearchSpace
        from pytest_autotuner.evaluate import make_evaluate, plan_from_spec
        from pytest_autotuner.report.text import explain_baseline, explain_failure
        from pytest_autotuner.runtimes import RuntimeUnavailable, create_runtime
        from pytest_autotuner.runtimes.gpus import detect_gpus, gpu_memory_mib

        spec, runtime_kind, seed = self._effective_spec()
        report_dir = report_dir_of(self.config)
        storage = self._option("autotune_storage")
        space = SearchSpace.from_spec(spec)
        gpu_ids = detect_gpus(spec, runtime_kind)
        search = Search(
            spec=spec,
            space=space,
            storage=storage or default_storage_url(report_dir, spec.slug),
            study_name=study_name_for(spec, runtime_kind),
            seed=seed,
            local_storage=storage is None,
            grace_period=self._option("autotune_grace_period"),
            gpu_memory_mib=gpu_memory_mib(spec, runtime_kind, gpu_ids),
        )
        baseline_file = baseline_path(self.path)
        try:
            baseline = load_baseline(baseline_file)
        except ValueError as err:
            raise AutotuneFailure(str(err)) from None
        if baseline and space.contains(baseline.get("best_params", {})):
            search.enqueue(dict(baseline["best_params"]))  # warm start from the last known good
        try:
            runtime = create_runtime(runtime_kind, spec, seed=seed)
        except RuntimeUnavailable as err:
            raise AutotuneFailure(f"cannot start the {runtime_kind} runtime for {spec.task_name!r}: {err}") from None
        self._say(
            f"{spec.task_name}: {spec.optimization.strategy} search on {runtime_kind}, "
            f"{spec.optimization.max_iterations} trials, space of {space.grid_size or 'continuous'} points, "
            f"study {search.study.study_name}"
        )
        gpu_pool = GpuPool(gpu_ids) if gpu_ids else None
        workers = self._option("autotune_workers") or (gpu_pool.total if gpu_pool else 1)
        if workers > 1:
            self._say(f"  GPUs {gpu_ids or 'none'}, up to {workers} trial(s) at once")

        def new_runtime(n: int) -> Runtime:
            return create_runtime(runtime_kind, spec, seed=seed * 1000 + n)

        session = TuningSession(
            spec=spec,
            search=search,
            evaluate=make_evaluate(new_runtime, plan_from_spec(spec, seed), client_process=workers > 1),
            on_trial=lambda event: self._progress(event, spec.optimization.objective),
            workers=workers,
            gpu_pool=gpu_pool,
            report_only=self._option("autotune_report_only"),
        )
        try:
            with _sigterm_as_interrupt():
                result = session.run()
                if baseline and result.best is not None:
                    result.baseline = self._compare_baseline(session, result, baseline, baseline_file, runtime)
                self._update_baseline(session, result, baseline_file, runtime_kind, runtime)
        finally:
            runtime.close()
        report_path = self._write_report(result, report_dir, runtime_kind)
        self.config.stash[_results_key].append((result, report_path))
        self._record_properties(result)
        problems = []
        if not result.passed:
            problems.append(explain_failure(result))
        if result.baseline is not None and (result.baseline.regressed or self._strict_mismatch(result)):
            problems.append(explain_baseline(result.baseline))
        if problems:
            raise AutotuneFailure("\n\n".join(problems))

    def _fingerprint(self, result: SessionResult, runtime_kind: str, runtime: Any) -> dict[str, Any]:
        from pytest_autotuner.core.baseline import fingerprint

        digest = str(getattr(runtime, "image_digest", "") or "")
        return fingerprint(result.spec, runtime_kind, result.server_info, image_digest=digest)

    def _compare_baseline(
        self, session: TuningSession, result: SessionResult, baseline: dict[str, Any], path: Path, runtime: Any
    ) -> BaselineComparison:
        from pytest_autotuner.core.baseline import compare

        assert result.best is not None
        spec = result.spec
        fp = self._fingerprint(result, spec.runtime, runtime)
        where = str(path.relative_to(self.config.rootpath)) if path.is_relative_to(self.config.rootpath) else str(path)

        def run_compare() -> BaselineComparison:
            assert result.best is not None
            return compare(
                baseline,
                spec,
                result.best,
                fp,
                path=where,
                tolerance=spec.regression.tolerance,
                tolerances=spec.regression.metrics,
            )

        verdict = run_compare()
        if verdict.compared and verdict.ambiguous:
            self._say(f"{spec.task_name}: baseline comparison is ambiguous; one more confirmation run")
            result.best = session.confirm_again(result.best)
            verdict = run_compare()
            verdict.extra_run = True
        if not verdict.compared:
            self._say(f"{spec.task_name}: WARNING baseline not compared: {verdict.skipped_reason}")
            if not self._option("autotune_strict_baseline"):
                warnings.warn(pytest.PytestWarning(f"{spec.task_name}: {verdict.skipped_reason}"), stacklevel=1)
        return verdict

    def _strict_mismatch(self, result: SessionResult) -> bool:
        return bool(self._option("autotune_strict_baseline") and result.baseline and result.baseline.skipped_reason)

    def _update_baseline(
        self, session: TuningSession, result: SessionResult, path: Path, runtime_kind: str, runtime: Any
    ) -> None:
        if not self._option("autotune_update_baseline"):
            return
        if not result.passed or result.best is None:
            self._say(f"{result.spec.task_name}: baseline NOT updated: the session did not pass its SLOs")
            return
        from pytest_autotuner.core.baseline import make_baseline, write_baseline

        wanted = result.spec.regression.baseline_runs
        if len(result.best.runs) < wanted:  # a baseline is a long-lived reference: measure it well
            self._say(f"{result.spec.task_name}: {wanted - len(result.best.runs)} more run(s) for the baseline")
            while len(result.best.runs) < wanted:
                before = len(result.best.runs)
                result.best = session.confirm_again(result.best)
                if len(result.best.runs) == before:
                    self._say(f"{result.spec.task_name}: baseline NOT updated: a confirmation run failed")
                    return
        write_baseline(path, make_baseline(result.spec, result.best, self._fingerprint(result, runtime_kind, runtime)))
        self._say(f"{result.spec.task_name}: baseline written to {path}")

    def _write_report(self, result: SessionResult, report_dir: Path, runtime_kind: str) -> str | None:
        try:
            from pytest_autotuner.report import write_report
        except ImportError:
            return None
        return str(write_report(result, report_dir, runtime=runtime_kind))

    def _record_properties(self, result: SessionResult) -> None:
        if result.best is None:
            return
        self.user_properties.append(("autotune_best_params", json.dumps(result.best.params)))
        self.user_properties.append(("autotune_objective", result.best.score.objective))
        self.user_properties.append(("autotune_slo_passed", result.passed))

    def _say(self, line: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            return
        context = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
        with context:
            reporter.write_line(line)

    def _progress(self, event: TrialEvent, objective: str) -> None:
        from pytest_autotuner.report.text import progress_line

        self._say(progress_line(event, objective))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, AutotuneFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"autotune: {self.name}"


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI cancel) unwinds like Ctrl-C, so every server is torn down."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The run's index page and the GitHub step summary, over every spec that ran."""
    config = session.config
    results = config.stash.get(_results_key, None)
    if not results:
        return
    from pytest_autotuner.report import append_step_summary, write_index

    report_dir = report_dir_of(config)
    entries = [(result, Path(path) if path else None) for result, path in results]
    write_index(entries, report_dir)
    append_step_summary(entries, report_dir)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    results = config.stash.get(_results_key, None)
    if not results:
        return
    from pytest_autotuner.report.text import summary_lines

    terminalreporter.section("autotune summary")
    for result, report_path in results:
        for line in summary_lines(result, report_path):
            terminalreporter.write_line(line)
