"""The plugin's command-line and ini options, read once per pytest run into one frozen ``Options``."""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_autotuner.core.spec.runtime_kinds import RUNTIME_KINDS

__all__ = ["Options", "add_options", "read_options"]


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


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("autotune", "SGLang tuning sessions (pytest-autotuner)")
    add = group.addoption
    add("--autotune", action="store_true", help="run every tuning spec as a tuning session")
    add("--autotune-runtime", choices=RUNTIME_KINDS, default=None,
        help="run every spec on this runtime (overrides the spec's `runtime`)")  # fmt: skip
    add("--autotune-max-iterations", type=_positive_int, default=None, metavar="N",
        help="cap every spec's optimization.max_iterations (smoke runs)")  # fmt: skip
    add("--autotune-seed", type=_int, default=None, metavar="SEED",
        help="seed for specs without optimization.seed (default 0)")  # fmt: skip
    add(
        "--autotune-storage",
        default=None,
        metavar="URL",
        help="Optuna storage URL shared by every spec (default: a study file per spec under the report folder)",
    )
    add("--autotune-report-dir", default=None, metavar="DIR", help="report folder (default reports/)")
    add("--autotune-specs", action="append", default=None, metavar="PATH_OR_GLOB",
        help="spec files or folders (repeatable; default tuning_specs/)")  # fmt: skip
    add("--autotune-workers", type=_positive_int, default=None, metavar="N",
        help="trials run at once (default: as many as the runner's GPUs fit)")  # fmt: skip
    add("--autotune-report-only", action="store_true",
        help="run no search trials: confirm the best of the (shared) study, assert and report")  # fmt: skip
    add(
        "--autotune-grace-period",
        type=_positive_int,
        default=None,
        metavar="SECONDS",
        help="shared storages: a running trial without a heartbeat for this long is failed and retried (120)",
    )
    add("--autotune-check", action="store_true",
        help="no search: run the baseline's best configuration with the spec's confirm_runs, assert its SLOs and "
             "compare it with the baseline (a minutes-long regression check for pull requests)")  # fmt: skip
    add("--autotune-history", default=None, metavar="DIR",
        help="append each outcome to DIR/<spec>/ (a JSON file per run) and plot the trends over runs")  # fmt: skip
    add("--autotune-update-baseline", action="store_true",
        help="write or refresh tuning_specs/<spec>.baseline.json after a passing session")  # fmt: skip
    add("--autotune-strict-baseline", action="store_true",
        help="fail (instead of warning) when the baseline was recorded on a different fingerprint")  # fmt: skip
    parser.addini("autotune_specs", "spec files or folders", type="paths", default=[])
    parser.addini("autotune_report_dir", "report folder", default="reports")
    parser.addini("autotune_history", "history folder (as --autotune-history; empty: no history)", default="")
    parser.addini("autotune_runtime", f"runtime for every spec ({', '.join(RUNTIME_KINDS)})", default="")


@dataclass(frozen=True)
class Options:
    """Every ``--autotune*`` option and ini key, validated together."""

    runtime: str | None  # None: each spec's own
    max_iterations: int | None
    seed: int | None
    storage: str | None
    report_dir: Path
    spec_paths: tuple[Path, ...]
    workers: int | None
    report_only: bool
    check: bool
    history_dir: Path | None
    grace_period: int
    update_baseline: bool
    strict_baseline: bool


_DEPENDENT = (
    "autotune_runtime",
    "autotune_max_iterations",
    "autotune_seed",
    "autotune_storage",
    "autotune_report_dir",
    "autotune_specs",
    "autotune_workers",
    "autotune_report_only",
    "autotune_check",
    "autotune_history",
    "autotune_grace_period",
    "autotune_update_baseline",
    "autotune_strict_baseline",
)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _spec_paths(config: pytest.Config) -> tuple[Path, ...]:
    patterns = config.getoption("autotune_specs")
    if patterns:
        paths: list[Path] = []
        for pattern in patterns:
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches and not Path(pattern).exists():
                raise pytest.UsageError(f"--autotune-specs {pattern!r} matches no file or folder")
            paths += [Path(m).resolve() for m in matches] or [Path(pattern).resolve()]
        return tuple(paths)
    ini = config.getini("autotune_specs")
    return tuple(Path(p).resolve() for p in ini) or (config.rootpath / "tuning_specs",)


def _folder(config: pytest.Config, text: str) -> Path | None:
    """A folder option, relative to where pytest was invoked; None when empty."""
    if not text:
        return None
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else config.invocation_params.dir / path


def _writable_folder(path: Path, option: str = "--autotune-report-dir") -> None:
    """Fail now, not after the last trial, when reports (or the history) cannot be written there; a missing
    folder is created."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".autotune-write-check-"):
            pass
    except OSError as err:
        what = "history folder" if option == "--autotune-history" else "report folder"
        raise pytest.UsageError(
            f"the {what} {str(path)!r} cannot be written ({err.strerror or err}); choose another with {option}"
        ) from None


def read_options(config: pytest.Config) -> Options | None:
    """The run's options (None without ``--autotune``); contradictory options are a ``pytest.UsageError``."""
    get = config.getoption
    if not get("autotune"):
        given = [_flag(d) for d in _DEPENDENT if get(d) not in (None, False)]
        if given:
            raise pytest.UsageError(f"{', '.join(given)} only apply(ies) with --autotune; add --autotune")
        return None
    runtime = get("autotune_runtime") or config.getini("autotune_runtime") or None
    if runtime is not None and runtime not in RUNTIME_KINDS:
        raise pytest.UsageError(f"ini autotune_runtime = {runtime!r}; use one of {', '.join(RUNTIME_KINDS)}")
    if get("autotune_report_only") and get("autotune_max_iterations") is not None:
        raise pytest.UsageError(
            "--autotune-report-only runs no search trials, so --autotune-max-iterations has nothing to cap; "
            "drop one of them"
        )
    if get("autotune_check"):
        for dest, why in (
            ("autotune_report_only", "reports a study's search, and a check runs no search"),
            ("autotune_max_iterations", "caps the search, and a check runs no search"),
        ):
            if get(dest) not in (None, False):
                raise pytest.UsageError(f"--autotune-check and {_flag(dest)} conflict: {_flag(dest)} {why}; drop one")
    storage = get("autotune_storage")
    if get("autotune_grace_period") is not None and not storage:
        raise pytest.UsageError(
            "--autotune-grace-period applies to a study shared through --autotune-storage (heartbeats of "
            "other workers); without a shared storage no other worker can die mid-trial"
        )
    dir_text = get("autotune_report_dir") or config.getini("autotune_report_dir")
    report_dir = Path(os.path.expanduser(dir_text))
    if not report_dir.is_absolute():
        report_dir = config.invocation_params.dir / report_dir
    _writable_folder(report_dir)
    history_dir = _folder(config, get("autotune_history") or config.getini("autotune_history"))
    if history_dir is not None:
        _writable_folder(history_dir, option="--autotune-history")
    return Options(
        runtime=runtime,
        max_iterations=get("autotune_max_iterations"),
        seed=get("autotune_seed"),
        storage=storage,
        report_dir=report_dir,
        spec_paths=_spec_paths(config),
        workers=get("autotune_workers"),
        report_only=bool(get("autotune_report_only")),
        check=bool(get("autotune_check")),
        history_dir=history_dir,
        grace_period=get("autotune_grace_period") or 120,
        update_baseline=bool(get("autotune_update_baseline")),
        strict_baseline=bool(get("autotune_strict_baseline")),
    )
