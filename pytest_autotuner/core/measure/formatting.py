"""How numbers, parameters and tables read in every output (terminal, report, job summary, verdict text).

One implementation each, so a value prints the same wherever it appears.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pytest_autotuner.core.measure.scoring import OBJECTIVE_METRICS
from pytest_autotuner.core.measure.trial import ParamValue

__all__ = [
    "describe_params",
    "format_gain",
    "format_limit",
    "format_objective",
    "format_p",
    "format_seconds",
    "text_table",
]


def format_seconds(value: float | None) -> str:
    """'153.2 ms', '1.234 s', 'n/a' (unknown) or 'no samples' (NaN: nothing measured)."""
    if value is None or math.isinf(value):
        return "n/a"
    if math.isnan(value):
        return "no samples"
    return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:.3f} s"


def format_objective(value: float | None, objective: str) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    _metric, unit = OBJECTIVE_METRICS[objective]
    if unit == "s":
        return format_seconds(value)
    if unit == "req/s":  # capacities are small numbers: 3 significant digits
        return f"{value:.3g} {unit}"
    return f"{value:,.0f} {unit}"


def format_limit(seconds: float) -> str:
    """An SLO threshold as an operator writes it: '200 ms', '1.5 s'."""
    return f"{seconds * 1000:.4g} ms" if seconds < 1 else f"{seconds:.4g} s"


def format_gain(gain: float) -> str:
    """'24% better', '0.3% worse': a relative change in the objective's favour (positive) or against it."""
    size = f"{abs(gain):.0%}" if abs(gain) >= 0.095 else f"{abs(gain):.1%}"
    return f"{size} {'better' if gain >= 0 else 'worse'}"


def format_p(p_value: float) -> str:
    return "n/a" if math.isnan(p_value) else f"{p_value:.2g}"


def describe_params(params: Mapping[str, ParamValue]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def text_table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Rows (the first is the header) as left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
