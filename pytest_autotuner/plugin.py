"""pytest hooks: ``--autotune`` options, one item per tuning spec, progress lines and the summary.

The plugin composes the core and the edges and maps the outcome to pytest; it decides nothing itself. Options
are read once in ``pytest_configure``; an item builds its runtime and evaluate function, calls
``core.outcome.task.run_task`` and turns the ``TaskOutcome`` into the item's result, the report and the summary, all
printing the outcome's one ``Verdict``. Heavy libraries are imported only when an item runs, so plain
``pytest`` without ``--autotune`` costs nothing.

Why one module of about 460 lines: pytest's hooks, the item and the terminal summary are one surface; the options
are options.py and the work is run_task.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_autotuner.options import Options, add_options, read_options

if TYPE_CHECKING:
    from pytest_autotuner.core.outcome.baseline import Baseline
    from pytest_autotuner.core.outcome.outcome import TaskOutcome
    from pytest_autotuner.core.outcome.records import TrialEvent
    from pytest_autotuner.core.outcome.trends import HistoryEntry
    from pytest_autotuner.core.spec.task_spec import TaskSpec
    from pytest_autotuner.report.view import ReportView
    from pytest_autotuner.runtimes import RuntimeHost

SPEC_SUFFIXES = (".json", ".yaml", ".yml")
_options_key = pytest.StashKey[Options]()
_views_key = pytest.StashKey[list[tuple["ReportView", str | None]]]()  # each item's report view and its page
_histories_key = pytest.StashKey[dict[str, list["HistoryEntry"]]]()  # by spec slug (--autotune-history)
_task_names_key = pytest.StashKey[dict[str, Path]]()

logger = logging.getLogger(__name__)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    options = read_options(config)
    if options is None:
        return
    from pytest_autotuner.core.search.optuna_compat import quiet_optuna_logging  # imports Optuna: only with --autotune

    quiet_optuna_logging()
    config.addinivalue_line("markers", "autotune: a tuning session collected from a tuning spec")
    config.stash[_options_key] = options
    config.stash[_views_key] = []
    config.stash[_histories_key] = {}
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        # `pytest --autotune` with no paths runs the specs, not the test suite
        config.args = [str(p) for p in options.spec_paths]


#: Files of a Hugging Face tokenizer folder (``simulator.tokenizer`` may name one next to the specs): not specs.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _is_spec_file(config: pytest.Config, path: Path) -> bool:
    if path.suffix not in SPEC_SUFFIXES or path.name.endswith((".baseline.json", ".schema.json")):
        return False
    if path.name in _TOKENIZER_FILES:
        return False
    if any(part.endswith(".deploy") for part in path.parent.parts):
        return False  # committed deploy files (compose.yaml, kubernetes.yaml) next to their spec
    roots = config.stash[_options_key].spec_paths
    return any(path == root or root in path.parents for root in roots) or str(path) in config.args


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    config = parent.config
    if _options_key in config.stash and _is_spec_file(config, file_path):
        return SpecFile.from_parent(parent, path=file_path)
    return None


class SpecFile(pytest.File):
    """A tuning spec file; collects one TuningItem."""

    def collect(self) -> Iterator[pytest.Item]:
        from pytest_autotuner.core.spec.spec_text import SpecError
        from pytest_autotuner.inputs import load_spec

        try:
            spec = load_spec(self.path)
        except SpecError as err:
            raise self.CollectError(str(err)) from None
        self._check_sim_flags(spec)
        # one task name, one report folder and one study: a second spec with the name would overwrite the first's
        seen = self.config.stash.setdefault(_task_names_key, {})
        first = seen.setdefault(spec.task_name, self.path)
        if first != self.path:
            raise self.CollectError(
                f"{self.path}: task_name {spec.task_name!r} is also the task name of {first}; "
                "give each spec its own task_name"
            )
        item = TuningItem.from_parent(self, name=spec.task_name, spec=spec)
        item.add_marker("autotune")
        yield item

    def _check_sim_flags(self, spec: TaskSpec) -> None:
        """On the simulator the preflight is a table lookup: a bad flag, or a model the simulator cannot price,
        fails collection, before any item runs."""
        options = self.config.stash[_options_key]
        if (options.runtime or spec.runtime) != "sim" or spec.model is None:
            return
        from pytest_autotuner.runtimes import create_host, flag_problems

        host = create_host("sim", spec, seed=0)
        table = host.argument_table()
        problems = flag_problems(spec, "sim", table) if table is not None else ""
        if problems:
            raise self.CollectError(problems)
        from pytest_autotuner.sim.cli import pricing_problem

        problem = pricing_problem(spec.model.id_or_path, spec.simulator.gpu, getattr(host, "sglang_version", None))
        if problem:
            raise self.CollectError(f"{self.path}: model.id_or_path: {problem}")


class AutotuneFailure(Exception):
    """The item failed; the message is the verdict's explanation (or why the item could not run)."""


class TuningItem(pytest.Item):
    """One tuning session."""

    def __init__(self, *, spec: TaskSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    @property
    def options(self) -> Options:
        return self.config.stash[_options_key]

    def effective_spec(self) -> TaskSpec:
        """The spec as this run executes it: runtime, seed and budget from the options."""
        options, opt = self.options, self.spec.optimization
        updates: dict[str, Any] = {"seed": opt.seed if opt.seed is not None else (options.seed or 0)}
        cap = options.max_iterations
        if cap is not None and cap < opt.max_iterations:
            updates["max_iterations"] = cap
            if opt.n_initial_random is not None:
                updates["n_initial_random"] = min(opt.n_initial_random, max(cap - 1, 0))
        runtime = options.runtime or self.spec.runtime
        return self.spec.model_copy(update={"optimization": opt.model_copy(update=updates), "runtime": runtime})

    def _where(self, path: Path) -> str:
        root = self.config.rootpath
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    def _load_baseline(self) -> Baseline | None:
        from pytest_autotuner.baseline_file import baseline_path, load_baseline

        try:
            return load_baseline(baseline_path(self.path))
        except ValueError as err:
            raise AutotuneFailure(str(err)) from None

    def runtest(self) -> None:
        from pytest_autotuner.runtimes import RuntimeUnavailable, create_host

        spec = self.effective_spec()
        seed = int(spec.optimization.seed or 0)
        baseline = self._load_baseline()
        if self.options.check and baseline is not None:
            self._check_deploy_drift(spec, baseline)
        try:
            host = create_host(spec.runtime, spec, seed=seed)
        except RuntimeUnavailable as err:
            raise AutotuneFailure(f"cannot start the {spec.runtime} runtime for {spec.task_name!r}: {err}") from None
        try:
            with _sigterm_as_interrupt():
                host.prepare()  # client, leftover sweep, image and digest: once, before the first trial
                self._preflight(spec, host)
                outcome = self._run(spec, seed, host, baseline)
        except RuntimeUnavailable as err:
            raise AutotuneFailure(f"cannot start the {spec.runtime} runtime for {spec.task_name!r}: {err}") from None
        finally:
            host.close()
        self._finish(outcome)

    def _check_deploy_drift(self, spec: TaskSpec, baseline: Baseline) -> None:
        """Check mode: the committed deploy files must still run the baseline's configuration (before any launch)."""
        from pytest_autotuner.deploy import committed_folder, deploy_drift, read_deploy_folder

        folder = committed_folder(spec, self.path)
        files = read_deploy_folder(folder)
        if not files:
            return
        where = self._where(folder)
        problems = deploy_drift(spec, baseline.best_params, files, where)
        if problems:
            raise AutotuneFailure(
                "\n".join(
                    [
                        f"{spec.task_name}: the committed deploy files in {where} no longer run the baseline's "
                        f"configuration ({len(problems)} difference(s)); no server was launched",
                        *(f"  - {p}" for p in problems),
                        "Re-record both with --autotune-update-baseline, or fix the files to match the baseline.",
                    ]
                )
            )
        self._say(f"{spec.task_name}: deploy files in {where} match the baseline's configuration")

    def _preflight(self, spec: TaskSpec, host: RuntimeHost) -> None:
        """Read the server's argument table once and check every flag against it before the first launch."""
        from pytest_autotuner.runtimes import flag_problems

        table = host.argument_table()
        if table is None:
            return
        self._say(f"{spec.task_name}: flags checked against {table.described()} ({table.source})")
        problems = flag_problems(spec, spec.runtime, table)
        if problems:
            raise AutotuneFailure(problems)

    def _run(self, spec: TaskSpec, seed: int, host: RuntimeHost, baseline: Baseline | None) -> TaskOutcome:
        from pytest_autotuner.baseline_file import baseline_path
        from pytest_autotuner.core.outcome.task import TaskOptions, run_task
        from pytest_autotuner.evaluate import make_evaluate, plan_from_spec
        from pytest_autotuner.interrupts import signals_held
        from pytest_autotuner.runtimes.gpus import detect_gpus, gpu_memory_mib
        from pytest_autotuner.threads import Threads

        options = self.options
        gpu_ids = detect_gpus(spec, spec.runtime)
        workers = options.workers or max(1, len(gpu_ids))  # default: as many trials as the GPUs fit
        storage = None
        if not options.check:  # a check runs no search: it opens no study
            from pytest_autotuner.study_storage import default_storage_url, open_storage

            url = options.storage or default_storage_url(options.report_dir, spec.slug)
            storage = open_storage(url, options.grace_period)
        plan = plan_from_spec(spec, seed)
        screen, no_screen = None, ""
        if spec.optimization.screening and not options.check:
            from pytest_autotuner.screen import make_screen

            if spec.runtime == "sim":
                screen, no_screen = make_screen(spec, plan, gpu=spec.simulator.gpu, num_gpus=spec.simulator.num_gpus,
                                                seed=seed)  # fmt: skip
            else:
                from pytest_autotuner.runtimes.gpus import runner_gpu

                gpu, name = runner_gpu(gpu_ids)
                if gpu is None:
                    no_screen = f"the simulator has no GPU like this runner's ({name})"
                else:
                    self._say(f"{spec.task_name}: screening as on {gpu} (nvidia-smi: {name})")
                    screen, no_screen = make_screen(spec, plan, gpu=gpu, num_gpus=len(gpu_ids), seed=seed)
        task_options = TaskOptions(
            runtime=spec.runtime,
            seed=seed,
            storage=storage,
            local_storage=options.storage is None,
            grace_period=options.grace_period,
            gpu_ids=tuple(gpu_ids),
            gpu_memory_mib=gpu_memory_mib(spec, spec.runtime, gpu_ids),
            workers=workers,
            report_only=options.report_only,
            check=options.check,
            update_baseline=options.update_baseline,
            strict_baseline=options.strict_baseline,
            baseline_path=self._where(baseline_path(self.path)),
            runtime_facts=host.fingerprint_facts(),
            on_trial=lambda event: self._progress(event, spec.optimization.objective, spec.optimization.per_gpu),
            on_note=self._say,
            predict=screen.predict if screen is not None else None,
            refit=screen.refit if screen is not None else None,
            no_screen=no_screen,
            writes_held=signals_held,
            background=Threads(),
        )
        # concurrent trials each get a client process of their own: one interpreter lock would be their bottleneck
        evaluate = make_evaluate(host, plan, client_process=workers > 1)
        return run_task(spec, task_options, evaluate, baseline)

    def _finish(self, outcome: TaskOutcome) -> None:
        """Write the new baseline and the report, keep the outcome for the summary, and map the verdict to pytest.

        A failure while writing the report is logged and noted; it never replaces or loses the verdict.
        """
        from pytest_autotuner.baseline_file import baseline_path, write_baseline

        if outcome.new_baseline is not None:
            path = baseline_path(self.path)
            write_baseline(path, outcome.new_baseline)
            self._say(f"{outcome.spec.task_name}: baseline written to {path}")
            self._write_committed_deploy(outcome.spec, outcome.new_baseline)
        elif outcome.baseline_note:
            self._say(f"{outcome.spec.task_name}: {outcome.baseline_note}")
        if outcome.baseline is not None and not outcome.baseline.compared and outcome.verdict.passed:
            warnings.warn(pytest.PytestWarning(f"{outcome.spec.task_name}: {outcome.baseline.skipped_reason}"),
                          stacklevel=1)  # fmt: skip
        history, skipped = self._record_history(outcome)
        self.user_properties.append(("autotune_verdict", outcome.verdict.status))  # whatever the outputs do
        self.user_properties.append(("autotune_verdict_detail", outcome.verdict.headline))
        view = self._view(outcome)
        if view.unreported:  # listed with its verdict, no page
            self.config.stash[_views_key].append((view, None))
        else:
            report_path = self._write_report(view, history, skipped)
            self.config.stash[_views_key].append((view, report_path))
            self._record_properties(view)
        if not outcome.verdict.passed:
            raise AutotuneFailure(outcome.verdict.explanation())

    def _write_committed_deploy(self, spec: TaskSpec, baseline: Baseline) -> None:
        """With the baseline, its configuration's deploy files next to the spec (what check mode compares)."""
        from pytest_autotuner.deploy import committed_folder, deploy_files, write_deploy_folder

        if spec.base_runtime != "sglang":
            return
        folder = committed_folder(spec, self.path)
        write_deploy_folder(folder, deploy_files(spec, baseline.best_params))
        self._say(f"{spec.task_name}: deploy files written to {folder}")

    def _record_history(self, outcome: TaskOutcome) -> tuple[list[HistoryEntry] | None, list[str]]:
        """Append this run to ``--autotune-history`` and read the spec's history back (None without the option).

        A history that cannot be written or read is a warning: the verdict stands, and this run's entry is still
        in what the report draws.
        """
        folder = self.options.history_dir
        if folder is None:
            return None, []
        from pytest_autotuner.core.outcome.trends import history_entry
        from pytest_autotuner.history import append_history, load_history, run_info

        entry = history_entry(outcome, run_info(self.config.rootpath))
        name = outcome.spec.task_name
        try:
            path = append_history(folder, entry)
            self._say(f"{name}: history: run recorded in {path}")
        except OSError as err:
            self._say(f"{name}: WARNING the history could not be written to {folder}: {err}")
        entries, skipped = load_history(folder, outcome.spec.slug)
        for warning in skipped:
            self._say(f"{name}: WARNING {warning}")
            warnings.warn(pytest.PytestWarning(warning), stacklevel=1)
        if not any(e == entry for e in entries):
            entries.append(entry)  # not written (or not readable): this run still counts in its own report
        self.config.stash[_histories_key][outcome.spec.slug] = entries
        return entries, skipped

    def _view(self, outcome: TaskOutcome) -> ReportView:
        """The item's report view, built once for every output. One that cannot be built is said, and the item
        is still listed with its verdict (``unreported_view``): the verdict stands without the report."""
        from pytest_autotuner.report.view import report_view, unreported_view

        try:
            return report_view(outcome)
        except Exception as err:
            logger.exception("building the report view of %s failed", outcome.spec.task_name)
            self._say(f"{outcome.spec.task_name}: WARNING the report could not be built: {err}")
            return unreported_view(outcome, f"{type(err).__name__}: {err}")

    def _write_report(
        self, view: ReportView, history: list[HistoryEntry] | None = None, skipped: list[str] | None = None
    ) -> str | None:
        from pytest_autotuner.report import write_report

        try:
            return str(write_report(view, self.options.report_dir, history, skipped or ()))
        except Exception as err:  # the verdict and the summary stand without the page
            logger.exception("writing the report of %s failed", view.task)
            self._say(f"{view.task}: WARNING the report could not be written: {err}")
            return None

    def _record_properties(self, view: ReportView) -> None:
        """JUnit properties beside the verdict's, from the same report view as every other output."""
        if view.best is not None:
            self.user_properties.append(("autotune_best_params", json.dumps(view.best.params)))
            self.user_properties.append(("autotune_best_trial", view.best.source_trial))
            self.user_properties.append(("autotune_objective", view.best.objective))
            self.user_properties.append(("autotune_slo_passed", view.best.meets_slos))
        if view.pareto is not None:
            block = view.pareto
            self.user_properties.append(("autotune_objectives", json.dumps([o["name"] for o in block["objectives"]])))
            self.user_properties.append(("autotune_select_rule", block["select"]["text"]))
            front = [{k: point[k] for k in ("trial", "params", "objectives")} for point in block["front"]]
            self.user_properties.append(("autotune_pareto_front", json.dumps(front, allow_nan=False)))

    def _say(self, line: str) -> None:
        from pytest_autotuner.report.text import safe

        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            return
        context = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
        with context:
            reporter.write_line(safe(line, 2000))

    def _progress(self, event: TrialEvent, objective: str, per_gpu: bool = False) -> None:
        from pytest_autotuner.report.terminal import progress_line

        self._say(progress_line(event, objective, per_gpu=per_gpu))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from pytest_autotuner.core.search.study import StudyStorageError

        if isinstance(excinfo.value, (AutotuneFailure, StudyStorageError)):
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
    views = config.stash.get(_views_key, None)
    if not views:
        return
    from pytest_autotuner.report import append_step_summary, write_index

    report_dir = config.stash[_options_key].report_dir
    entries = [(view, Path(path) if path else None) for view, path in views]
    histories = config.stash.get(_histories_key, {})
    writers: list[tuple[str, Callable[[list[tuple[ReportView, Path | None]], Path], object]]] = [
        ("write_index", functools.partial(write_index, histories=histories)),
        ("append_step_summary", append_step_summary),
    ]
    for name, write in writers:
        try:
            write(entries, report_dir)
        except Exception:  # the items' verdicts stand; the terminal summary still prints
            logger.exception("%s failed", name)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    views = config.stash.get(_views_key, None)
    if not views:
        return
    from pytest_autotuner.report.terminal import summary_lines

    terminalreporter.section("autotune summary")
    for view, report_path in views:
        for line in summary_lines(view, report_path):
            terminalreporter.write_line(line)
