"""The best configuration against SGLang's defaults: the defaults are confirmed like the best and compete in the
choice; every output says how much tuning gained, with the p-value of the per-run test."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from factories import latency_model, result, run_session, spec

from pytest_autotuner.core.measure.formatting import format_gain
from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, Params, TrialFailure
from pytest_autotuner.core.spec.task_spec import TaskSpec
from pytest_autotuner.report import write_report
from pytest_autotuner.report.plots import convergence_figure
from pytest_autotuner.report.summary import github_step_summary
from pytest_autotuner.report.terminal import summary_lines
from pytest_autotuner.report.text import defaults_line
from pytest_autotuner.report.view import report_view

# SGLang's defaults moved into the factories' space (mem-fraction 0.85 is the nearest listed value, chunked
# prefill 4096 the nearest to H100's 8192)
DEFAULTS = {"tp-size": 1, "mem-fraction-static": 0.85, "schedule-policy": "fcfs", "chunked-prefill-size": 4096}


def by_latency(params: Params, deadline: Deadline) -> BenchResult:
    return result(latency_model(params))


def tuned(**optimization: object) -> TaskSpec:
    return spec(optimization={"max_iterations": 12, "confirm_runs": 2, **optimization})


def test_every_output_says_how_much_better_the_best_is_than_the_defaults(tmp_path: Path) -> None:
    out = run_session(tuned(), by_latency)
    versus = out.defaults
    assert versus is not None and versus.trial.number == 0 and versus.trial.params == DEFAULTS
    assert versus.confirmation is not None and len(versus.confirmation.runs) == 2  # as many runs as the best
    assert out.best is not None and out.best.score.objective is not None and not versus.defaults_chosen
    base = latency_model(DEFAULTS)
    expected = (base - out.best.score.objective) / base
    assert expected > 0.1  # the synthetic landscape leaves room to gain
    assert versus.gain == pytest.approx(expected) and versus.p_value == 0.0 and versus.significant

    line = f"SGLang defaults (trial #0): {base:.3f} s (confirmed, 2 runs); the best is {expected:.0%} better, p = 0"
    assert f"  {line}" in summary_lines(report_view(out), None)
    page = write_report(report_view(out), tmp_path)
    html = page.read_text()
    assert f'<p id="versus-defaults">{line}.</p>' in html
    assert f"<b>{expected * 100:.0f}% better</b><span>than SGLang defaults (p = 0)</span>" in html
    block = json.loads((page.parent / "results.json").read_text())["vs_defaults"]
    assert block["trial"] == 0 and block["params"] == DEFAULTS and block["failure"] is None
    assert block["objective"] == pytest.approx(base) and block["gain"] == pytest.approx(expected)
    assert block["p_value"] == 0.0 and block["defaults_chosen"] is False and block["confirmation_runs"] == 2
    assert f"({expected:.0%} better than SGLang defaults, p = 0)" in github_step_summary(
        [(report_view(out), page)], tmp_path
    )
    _handles, labels = convergence_figure(report_view(out).series).axes[0].get_legend_handles_labels()
    assert "SGLang defaults" in labels  # the defaults trial is ringed on the convergence plot


def test_for_a_maximized_objective_more_is_better() -> None:
    # throughput of the factories' cells is 100 tokens x concurrency / latency: highest where latency is lowest
    out = run_session(tuned(objective="maximize_throughput"), by_latency)
    assert out.best is not None and out.defaults is not None
    gain = latency_model(DEFAULTS) / latency_model(out.best.params) - 1
    assert gain > 0.1 and out.defaults.gain == pytest.approx(gain, rel=1e-6)
    assert "better" in (defaults_line(out) or "")


def test_a_gain_within_noise_keeps_the_defaults_and_says_so() -> None:
    rng = random.Random(7)

    def noisy(params: Params, deadline: Deadline) -> BenchResult:
        # the tuned optimum is 1% faster than the defaults, run-to-run noise is 5%
        value = 1.0 if params == DEFAULTS else max(0.99, latency_model(params) - 0.9)
        return result(value * rng.gauss(1.0, 0.05))

    out = run_session(tuned(confirm_runs=3), noisy)
    assert out.defaults is not None and out.defaults.defaults_chosen and not out.defaults.significant
    assert out.best is not None and out.best.params == DEFAULTS and out.best.source_trial == 0
    line = defaults_line(out) or ""
    assert "tuning found nothing significantly better" in line and "not significant" in line
    assert "p = " in line


def test_defaults_that_fail_are_named_with_their_failure() -> None:
    def oom_at_085(params: Params, deadline: Deadline) -> BenchResult:
        if params["mem-fraction-static"] == 0.85:
            raise TrialFailure(FailureClass.OOM, "CUDA out of memory. Tried to allocate 2.00 GiB\nTraceback ...")
        return result(latency_model(params))

    out = run_session(tuned(), oom_at_085)
    assert out.defaults is not None and out.defaults.gain is None and not out.defaults.defaults_chosen
    first_line = "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert defaults_line(out) == f"SGLang defaults (trial #0) failed: oom ({first_line})"


def test_defaults_that_win_are_the_best() -> None:
    def defaults_fastest(params: Params, deadline: Deadline) -> BenchResult:
        return result(0.5 if params == DEFAULTS else latency_model(params))

    out = run_session(tuned(), defaults_fastest)
    assert out.best is not None and out.best.params == DEFAULTS
    line = defaults_line(out) or ""
    assert line.startswith("SGLang defaults (trial #0): 500.0 ms (confirmed, 2 runs); tuning found nothing")
    assert "worse, p = 1, not significant" in line
    assert any("found by trial #0" in s for s in summary_lines(report_view(out), None))


@pytest.mark.parametrize(("gain", "text"), [(0.2449, "24% better"), (0.096, "10% better"), (0.0312, "3.1% better"),
                                             (-0.0021, "0.2% worse"), (0.0, "0.0% better")])  # fmt: skip
def test_gains_under_ten_percent_keep_a_decimal(gain: float, text: str) -> None:
    assert format_gain(gain) == text


@pytest.mark.parametrize("optimization", [{"strategy": "random"}, {"start_from_defaults": False}])
def test_without_a_defaults_trial_nothing_is_claimed(optimization: dict[str, object], tmp_path: Path) -> None:
    out = run_session(tuned(**optimization), by_latency)
    assert out.defaults is None and defaults_line(out) is None
    assert not [line for line in summary_lines(report_view(out), None) if "SGLang defaults" in line]
    page = write_report(report_view(out), tmp_path)
    assert json.loads((page.parent / "results.json").read_text())["vs_defaults"] is None
    assert "versus-defaults" not in page.read_text() and "than SGLang defaults" not in page.read_text()
    assert "SGLang defaults" not in convergence_figure(report_view(out).series).axes[0].get_legend_handles_labels()[1]


def test_the_defaults_trial_leaves_flags_without_a_fixed_default_to_the_server() -> None:
    s = spec(
        parameters={"mem-fraction-static": [0.8, 0.85], "max-running-requests": [64, 144],
                    "enable-mixed-chunk": [True, False]},
        optimization={"max_iterations": 3, "confirm_runs": 1},
    )  # fmt: skip
    calls: list[Params] = []

    def record(params: Params, deadline: Deadline) -> BenchResult:
        calls.append(dict(params))
        return result(1.0)

    out = run_session(s, record)
    assert calls[0] == {"mem-fraction-static": 0.85, "enable-mixed-chunk": False}  # no sampled max-running-requests
    assert out.defaults is not None and out.defaults.trial.server_chose == ("max-running-requests",)
    assert out.defaults.defaults_chosen  # every configuration measures the same: nothing beats the defaults
    best_line = next(line for line in summary_lines(report_view(out), None) if line.startswith("  best: "))
    assert best_line.endswith("(found by trial #0; left to SGLang: max-running-requests=chosen by the server)")
