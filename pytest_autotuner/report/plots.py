"""The report's PNG plots, rendered with matplotlib's Agg backend and embedded as data: URIs.

They draw a ``PlotSeries`` (``series.py``, taken from the outcome once by the report view) and nothing else.
Figures are built with ``matplotlib.figure.Figure`` (no pyplot state), so nothing needs closing and plots of
concurrent sessions cannot draw into each other. Each figure gets its own Agg canvas: the user's matplotlib
backend is never switched.

Why one module of about 460 lines: one short function per figure, sharing the styling helpers at the top.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pytest_autotuner.core.measure.scoring import OBJECTIVE_METRICS
from pytest_autotuner.core.outcome.pareto import within_bound
from pytest_autotuner.report.text import safe

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from pytest_autotuner.core.outcome.trends import Trend
    from pytest_autotuner.report.series import PlotSeries

#: user text (task names, parameter values) is drawn as is, never parsed as mathtext ("$...$")
_PLAIN_TEXT: dict[Any, Any] = {"text.parse_math": False, "text.usetex": False}

__all__ = [
    "PlotImage",
    "convergence_figure",
    "objectives_figure",
    "render_plots",
    "strategy_comparison_plot",
    "tradeoff_figure",
    "trend_figure",
    "trend_plot",
]

logger = logging.getLogger(__name__)

DPI = 90
BLUE, ORANGE, RED, GREEN, GREY = "#2563eb", "#f59e0b", "#dc2626", "#16a34a", "#9ca3af"
_STRATEGY_COLORS = {"grid": "#7c3aed", "random": ORANGE, "bayesian": BLUE}


@dataclass(frozen=True)
class PlotImage:
    """One rendered plot, or the reason it could not be drawn."""

    name: str
    title: str
    uri: str | None
    seconds: float
    note: str = ""
    wide: bool = False  # spans the page's width


def _to_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, pil_kwargs={"compress_level": 3})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float, height: float, *, left: float = 0.7, bottom: float = 0.5) -> Figure:
    """A figure with fixed margins in inches (a layout engine costs more than all the drawing)."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # attaches itself to fig
    fig.subplots_adjust(left=left / width, right=1 - 0.15 / width, bottom=bottom / height, top=1 - 0.3 / height)
    return fig


def _style(ax: Axes) -> None:
    ax.grid(True, color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _axis_cap(values: list[float]) -> float:
    """Upper y limit that keeps the bulk readable when a few penalized values are enormous."""
    top = max(values)
    median = statistics.median(values)
    if median > 0 and top > 5 * median:
        return 3 * median
    return top


def convergence_figure(series: PlotSeries) -> Figure:
    """Objective score per trial, best so far, failures at the top edge, the random startup phase shaded, SGLang's
    defaults ringed."""
    fig = _figure(10.0, 3.6)
    ax = fig.add_subplot()
    _style(ax)
    trials = series.trials
    ok = [t for t in trials if t.measured and t.feasible and math.isfinite(t.value)]
    slo_hard = [t for t in trials if t.measured and not t.feasible and t.objective is not None]
    failed = [t for t in trials if not t.measured]
    plotted = [t.value for t in ok] + [float(t.objective) for t in slo_hard if t.objective is not None]
    if plotted:
        lo, hi = min(plotted), _axis_cap(plotted)
        pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
        ymin, ymax = lo - pad, hi + pad
    else:
        ymin, ymax = 0.0, 1.0
    inside = [t for t in ok if t.value <= ymax]
    above = [t for t in ok if t.value > ymax]
    ax.scatter([t.number for t in inside], [t.value for t in inside], s=18, color=BLUE, label="feasible trial",
               zorder=3)  # fmt: skip
    if above:
        ax.scatter([t.number for t in above], [ymax] * len(above), marker="^", s=26, color=BLUE, alpha=0.6,
                   label="off scale (SLO penalty)", zorder=3, clip_on=False)  # fmt: skip
    if slo_hard:
        ax.scatter([t.number for t in slo_hard], [min(float(t.objective or 0), ymax) for t in slo_hard],
                   marker="o", s=22, facecolors="none", edgecolors=ORANGE, label="hard SLO miss (raw objective)",
                   zorder=3, clip_on=False)  # fmt: skip
    if failed:
        ax.scatter([t.number for t in failed], [ymax] * len(failed), marker="x", s=30, color=RED,
                   label="failed trial", zorder=4, clip_on=False)  # fmt: skip
    defaults = next((t for t in inside if t.number == series.defaults), None)
    if defaults is not None:
        ax.scatter([defaults.number], [defaults.value], s=110, facecolors="none", edgecolors=GREEN, linewidths=1.5,
                   label="SGLang defaults", zorder=4)  # fmt: skip
    # best so far in the session's own order (meets SLOs, then feasible, then score): the line the choice follows
    steps = [(t.number, min(v, ymax)) for t, v in zip(trials, series.best_so_far, strict=True) if v is not None]
    if steps:
        ax.step([x for x, _ in steps], [y for _, y in steps], where="post", color=GREEN, linewidth=2,
                label="best so far", zorder=2)  # fmt: skip
    chosen = next((t for t in trials if t.number == series.chosen), None)
    if chosen is not None and math.isfinite(chosen.value):
        ax.scatter([chosen.number], [min(chosen.value, ymax)], marker="*", s=170, color=GREEN, zorder=5,
                   label="chosen best (confirmed)")  # fmt: skip
    n_random = series.startup_trials
    if n_random and trials:
        edge = trials[min(n_random, len(trials)) - 1].number + 0.5
        ax.axvspan(trials[0].number - 0.5, edge, color=GREY, alpha=0.18, label="random startup", zorder=0)
    ax.set_ylim(ymin, ymax)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"score ({series.objective})")
    ax.legend(loc="best", fontsize=7, frameon=False, ncol=2)
    return fig


def importance_figure(importances: Mapping[str, float]) -> Figure:
    names = list(importances)[::-1]
    fig = _figure(4.6, 0.45 * len(names) + 1.0, left=1.6)
    ax = fig.add_subplot()
    _style(ax)
    ax.barh(names, [importances[n] for n in names], color=BLUE)
    ax.set_xlabel("importance (fANOVA, normalized)")
    ax.set_xlim(0, max(1e-9, max(importances.values())) * 1.1)
    return fig


def _short(text: str, limit: int = 14) -> str:
    return safe(text, limit)


def _numeric(values: Sequence[object]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def parameter_figure(series: PlotSeries) -> Figure | None:
    """Objective against each parameter, one panel per parameter; categories at evenly spaced positions."""
    trials = [t for t in series.trials if t.measured and t.objective is not None]
    names = list(series.parameters)
    if not trials or not names:
        return None
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = _figure(min(10.0, 3.2 * ncols), 2.5 * nrows)
    fig.subplots_adjust(hspace=0.45, wspace=0.08)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for index, name in enumerate(names):
        ax = axes[index // ncols][index % ncols]
        _style(ax)
        points = [(t.params[name], float(t.objective or 0), t.meets_slos) for t in trials if name in t.params]
        values = [p[0] for p in points]
        if _numeric(values):
            xs: list[float] = [float(v) for v in values]
        else:
            choices: list[object] = list(series.choices.get(name, ()))
            choices += [v for v in dict.fromkeys(values) if v not in choices]
            xs = [float(choices.index(v)) for v in values]
            ax.set_xticks(range(len(choices)), [_short(str(c)) for c in choices], fontsize=8)
            ax.set_xlim(-0.5, len(choices) - 0.5)
        colors = [BLUE if meets else ORANGE for _v, _o, meets in points]
        ax.scatter(xs, [p[1] for p in points], s=14, c=colors, alpha=0.75)
        ax.set_title(name, fontsize=9)
    for index in range(len(names), nrows * ncols):
        axes[index // ncols][index % ncols].set_visible(False)
    axes[0][0].set_ylabel(series.objective, fontsize=8)
    return fig


def pareto_figure(series: PlotSeries) -> Figure | None:
    """Mean E2E latency against output throughput for every measured trial; the Pareto front highlighted."""
    points = {t.number: (t.latency, t.throughput) for t in series.trials
              if t.measured and math.isfinite(t.latency) and math.isfinite(t.throughput)}  # fmt: skip
    if not points:
        return None
    front = [points[n] for n in series.front]
    fig = _figure(5.0, 3.4)
    ax = fig.add_subplot()
    _style(ax)
    ax.scatter([p[1] for p in points.values()], [p[0] for p in points.values()], s=16, color=GREY,
               label="measured trial")  # fmt: skip
    ax.plot([p[1] for p in front], [p[0] for p in front], "-o", color=RED, markersize=5, linewidth=1.5,
            label="Pareto front")  # fmt: skip
    source = points.get(series.chosen) if series.chosen is not None else None
    if source is not None:
        ax.scatter([source[1]], [source[0]], marker="*", s=160, color=GREEN, zorder=5, label="best (chosen)")
    ax.set_xlabel("output throughput (tok/s, mean over cells)")
    ax.set_ylabel("mean E2E latency (s)")
    ax.legend(fontsize=7, frameon=False)
    return fig


def tradeoff_figure(series: PlotSeries) -> Figure | None:
    """Tokens/s per user against tokens/s per GPU; the frontier in red, the best's points starred."""
    points = series.tradeoff or ()
    if not points:
        return None
    front = series.tradeoff_front
    fig = _figure(5.0, 3.4)
    ax = fig.add_subplot()
    _style(ax)
    ax.scatter([p.per_gpu for p in points], [p.per_user for p in points], s=14, color=GREY,
               label="configuration x load")  # fmt: skip
    ax.plot([p.per_gpu for p in front], [p.per_user for p in front], "-o", color=RED, markersize=4, linewidth=1.4,
            label="frontier")  # fmt: skip
    mine = [p for p in points if p.trial == series.chosen]
    if mine:
        ax.scatter([p.per_gpu for p in mine], [p.per_user for p in mine], marker="*", s=140, color=GREEN, zorder=5,
                   label="best, at each load")  # fmt: skip
        for p in mine:
            ax.annotate(p.load, (p.per_gpu, p.per_user), fontsize=7, color=BLUE, xytext=(4, 4),
                        textcoords="offset points")  # fmt: skip
    ax.set_xlabel("output tokens/s per GPU")
    ax.set_ylabel("output tokens/s per user (1 / TPOT)")
    ax.legend(fontsize=7, frameon=False)
    return fig


def calibration_figure(series: PlotSeries) -> Figure | None:
    """``optimization.screening``: each real trial's mean TTFT and TPOT per cell against the screen's prediction
    for it (log axes), the diagonal (a model that knew the server) and the fitted factor (measured / predicted),
    with the rank agreement in the title; trials the screen picked are marked."""
    calibration = series.calibration
    if calibration is None or not calibration.observations:
        return None
    picked = series.screened
    fig = _figure(7.6, 3.2, left=0.09, bottom=0.17)
    tau = "n/a" if calibration.tau is None else f"{calibration.tau:.2f}"
    fig.suptitle(f"the server against the simulator over {calibration.trials} trials: rank agreement tau = {tau}",
                 fontsize=8)  # fmt: skip
    for index, (metric, factor, label) in enumerate(
        (("ttft", calibration.prefill, "mean TTFT (s)"), ("tpot", calibration.decode, "mean TPOT (s)"))
    ):
        ax = fig.add_subplot(1, 2, index + 1)
        _style(ax)
        points = [
            (predicted[metric], obs.measured[cell][metric], obs.trial in picked)
            for obs in calibration.observations
            for cell, predicted in obs.predicted.items()
            if cell in obs.measured
            and all(v is not None and math.isfinite(v) and v > 0
                    for v in (predicted.get(metric), obs.measured[cell].get(metric)))
        ]  # fmt: skip
        if not points:
            ax.set_title(f"{label}: nothing to compare", fontsize=8)
            continue
        for mine, color, name in ((False, GREY, "search trial"), (True, BLUE, "picked by the screen")):
            chosen = [(x, y) for x, y, m in points if m == mine]
            if chosen:
                ax.scatter([x for x, _ in chosen], [y for _, y in chosen], s=16, color=color, label=name)
        low = min(min(x, y) for x, y, _ in points) / 1.5
        high = max(max(x, y) for x, y, _ in points) * 1.5
        ax.plot([low, high], [low, high], "--", color=GREY, linewidth=1, label="measured = predicted")
        if factor is not None:
            ax.plot([low, high], [low * factor, high * factor], "-", color=RED, linewidth=1,
                    label=f"fitted x{factor:.3g}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"predicted {label}", fontsize=8)
        ax.set_ylabel(f"measured {label}", fontsize=8)
        ax.legend(fontsize=6, frameon=False)
    return fig


def objectives_figure(series: PlotSeries) -> Figure | None:
    """A multi-objective search's trials in objective space (one panel per pair of objectives): the Pareto front
    in red, dominated trials faded, the configuration the select rule chose starred, each ``within`` bound dashed."""
    pareto = series.pareto
    if pareto is None or not pareto.considered:
        return None
    names = pareto.objectives
    pairs = [(0, 1)] if len(names) == 2 else [(0, 1), (0, 2), (1, 2)]
    fig = _figure(5.0 * len(pairs), 3.6, left=0.9, bottom=0.6)
    fig.subplots_adjust(wspace=0.35)
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    front = {t.number for t in pareto.front}
    chosen = series.chosen
    bounds = {names.index(name): tol for name, tol in pareto.rule.within.items()}
    for ax, (i, j) in zip(axes, pairs, strict=True):
        _style(ax)
        dominated = [t for t in pareto.considered if t.number not in front]
        ax.scatter([t.values[i] for t in dominated], [t.values[j] for t in dominated], s=16, color=GREY, alpha=0.3,
                   label="dominated trial", gid="dominated")  # fmt: skip
        on_front = sorted(pareto.front, key=lambda t: t.values[i])
        ax.plot([t.values[i] for t in on_front], [t.values[j] for t in on_front], "o", color=RED, markersize=5,
                label="Pareto front", gid="front")  # fmt: skip
        for t in on_front:
            ax.annotate(f"#{t.number}", (t.values[i], t.values[j]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        star = [t for t in pareto.considered if t.number == chosen]
        if star:
            ax.scatter([star[0].values[i]], [star[0].values[j]], marker="*", s=180, color=GREEN, zorder=5,
                       label="chosen (confirmed)", gid="chosen")  # fmt: skip
        for axis, index in (("x", i), ("y", j)):
            if index in bounds:
                best = [t.values[index] for t in pareto.front]
                direction = pareto.directions[index]
                edge = within_bound(max(best) if direction == "maximize" else min(best), bounds[index], direction)
                line = ax.axvline if axis == "x" else ax.axhline
                line(edge, color=ORANGE, linestyle="--", linewidth=1.2, label=f"select: within {bounds[index]:.0%}")
        ax.set_xlabel(_axis_label(names[i]), fontsize=8)
        ax.set_ylabel(_axis_label(names[j]), fontsize=8)
    axes[0].legend(fontsize=7, frameon=False)
    return fig


def _axis_label(objective: str) -> str:
    unit = OBJECTIVE_METRICS[objective][1]
    better = "higher" if objective.startswith("maximize") else "lower"
    return f"{objective} ({unit}, {better} is better)"


def strategy_comparison_plot(sessions: Sequence[PlotSeries]) -> str | None:
    """Best-so-far score against trial for sessions over the same space with different strategies."""
    return _timed("strategies", "strategy comparison", lambda: _strategy_figure(sessions), "").uri


def _strategy_figure(sessions: Sequence[PlotSeries]) -> Figure:
    fig = _figure(6.5, 3.2)
    ax = fig.add_subplot()
    _style(ax)
    values = [v for series in sessions for v in series.best_so_far if v is not None]
    top = _axis_cap(values) if values else math.inf  # a leader with an SLO penalty would squash the rest
    for series in sessions:
        steps = [(position, min(v, top)) for position, v in enumerate(series.best_so_far, start=1) if v is not None]
        ax.step([x for x, _ in steps], [y for _, y in steps], where="post", linewidth=2,
                color=_STRATEGY_COLORS.get(series.strategy),
                label=f"{series.strategy} ({safe(series.task, 60)})")  # fmt: skip
    ax.set_xlabel("trials evaluated")
    ax.set_ylabel(f"best score ({sessions[0].objective})")
    ax.legend(fontsize=7, frameon=False)
    return fig


def _timed(name: str, title: str, build: Callable[[], Figure | None], note: str, *, wide: bool = False) -> PlotImage:
    """One plot, drawn with user text taken literally; a plot that cannot be drawn says why instead of failing
    the report."""
    started = time.perf_counter()
    try:
        with matplotlib.rc_context(_PLAIN_TEXT):
            fig = build()
            uri = _to_uri(fig) if fig is not None else None
    except Exception as err:  # a report must survive one bad plot
        logger.warning("plot %s failed: %s", name, err)
        uri, note = None, f"could not be drawn: {type(err).__name__}: {err}"
    return PlotImage(name, title, uri, time.perf_counter() - started, "" if uri else note, wide)


def render_plots(series: PlotSeries) -> list[PlotImage]:
    """Every plot of a session's page, each timed (the benchmark reads the breakdown)."""
    importances = series.importances
    plots = [
        _timed("convergence", "Convergence (score per trial)", lambda: convergence_figure(series), "no trials",
               wide=True),
        *([_timed("objectives", "Pareto front (dominated trials faded)", lambda: objectives_figure(series),
                  "no measured trials", wide=True)] if series.pareto is not None else []),
        _timed("importance", "Parameter importance",
               lambda: importance_figure(importances) if importances else None,
               series.importance_note or "the importance could not be computed"),
        _timed("pareto", "Latency against throughput", lambda: pareto_figure(series), "no measured trials"),
        *([_timed("tradeoff", "Tokens/s per user against tokens/s per GPU", lambda: tradeoff_figure(series),
                  "no cell with a throughput and a TPOT")] if series.tradeoff is not None else []),
        _timed("parameters", "Objective against each parameter (blue: meets SLOs, orange: misses)",
               lambda: parameter_figure(series), "no measured trials", wide=True),
        *([_timed("calibration", "The simulator's predictions against the measured trials (screening)",
                  lambda: calibration_figure(series), "no trial the simulator could predict", wide=True)]
          if series.calibration is not None else []),
    ]  # fmt: skip
    logger.debug("plots: %s", {p.name: round(p.seconds, 3) for p in plots})
    return plots


def trend_figure(series: Sequence[Trend], changed_at: Sequence[int]) -> Figure | None:
    """One small panel per metric over runs: the value (regressions as red crosses), the baseline's value
    (dashed), the SLO's threshold (dotted) and a vertical line before each run on another fingerprint."""
    if not series or not series[0].runs:
        return None
    ncols = min(3, len(series))
    nrows = math.ceil(len(series) / ncols)
    fig = _figure(10.0, 2.4 * nrows, left=0.8)
    fig.subplots_adjust(hspace=0.6, wspace=0.35)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for index, trend in enumerate(series):
        ax = axes[index // ncols][index % ncols]
        _style(ax)
        xs = [r for r, v in zip(trend.runs, trend.values, strict=True) if v is not None]
        ys = [v for v in trend.values if v is not None]
        ax.plot(xs, ys, "-o", color=BLUE, markersize=4, linewidth=1.5, label="confirmed value", gid="values")
        marked = zip(trend.runs, trend.values, trend.regressed, strict=True)
        bad = [(r, v) for r, v, reg in marked if reg and v is not None]
        if bad:
            ax.scatter([r for r, _v in bad], [v for _r, v in bad], marker="X", s=70, color=RED, zorder=5,
                       label="regression", gid="regressions")  # fmt: skip
        base = [(r, b) for r, b in zip(trend.runs, trend.baselines, strict=True) if b is not None]
        if base:
            ax.step([r for r, _b in base], [b for _r, b in base], where="mid", color=GREEN, linestyle="--",
                    linewidth=1.2, label="baseline", gid="baseline")  # fmt: skip
        limits = [(r, t) for r, t in zip(trend.runs, trend.thresholds, strict=True) if t is not None]
        if limits:
            ax.step([r for r, _t in limits], [t for _r, t in limits], where="mid", color=ORANGE, linestyle=":",
                    linewidth=1.2, label="SLO threshold", gid="threshold")  # fmt: skip
        for run in changed_at:
            ax.axvline(run - 0.5, color=GREY, linestyle="-.", linewidth=1, gid="fingerprint-change")
        ax.set_title(safe(trend.title, 60), fontsize=8)
        if len(trend.runs) <= 12:
            ax.set_xticks(list(trend.runs))
        ax.set_xlim(0.5, len(trend.runs) + 0.5)
        ax.tick_params(labelsize=7)
    for index in range(len(series), nrows * ncols):
        axes[index // ncols][index % ncols].set_visible(False)
    legend: dict[str, Any] = {}
    for ax in fig.axes:
        handles, labels = ax.get_legend_handles_labels()
        legend.update({label: handle for handle, label in zip(handles, labels, strict=True) if label not in legend})
    if changed_at:
        legend["fingerprint changed"] = Line2D([], [], color=GREY, linestyle="-.", linewidth=1)
    fig.legend(list(legend.values()), list(legend), loc="lower right", ncol=len(legend), fontsize=7, frameon=False)
    fig.supxlabel("run (oldest first)", fontsize=8, x=0.1, ha="left")
    return fig


def trend_plot(series: Sequence[Trend], changed_at: Sequence[int]) -> PlotImage:
    """The trend plot of a history, or why it could not be drawn."""
    return _timed("trends", "Trends over runs", lambda: trend_figure(series, changed_at), "no runs recorded", wide=True)
