"""Baseline files next to their spec: ``tuning_specs/<stem>.baseline.json``, read and written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_autotuner.core.outcome.baseline import Baseline, parse_baseline
from pytest_autotuner.files import write_atomically

__all__ = ["baseline_path", "load_baseline", "write_baseline"]


def baseline_path(spec_path: Path) -> Path:
    """``tuning_specs/<stem>.baseline.json`` next to the spec."""
    stem = spec_path.name.split(".")[0]
    return spec_path.with_name(f"{stem}.baseline.json")


def load_baseline(path: Path) -> Baseline | None:
    """The baseline, None when there is none; ValueError naming the file, field and value when unreadable."""
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; fix or delete it") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); fix or delete it") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror})") from None
    return parse_baseline(document, str(path))


def write_baseline(path: Path, baseline: Baseline) -> None:
    # capacity_runs (and _resolution) only for maximize_goodput: other baselines stay byte-compatible with readers
    # that predate them
    omit = {name for name in ("capacity_runs", "capacity_resolution") if getattr(baseline, name) is None} or None
    write_atomically(path, json.dumps(baseline.model_dump(mode="json", exclude=omit), indent=1) + "\n")
