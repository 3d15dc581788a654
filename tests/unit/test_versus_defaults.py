"""The best configuration against SGLang's defaults (bayesian's first trial): terminal summary, report page,
results.json and the job summary say how much tuning gained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import latency_model, result, run_session, spec

from pytest_autotuner.core.metrics import BenchResult
from pytest_autotuner.core.spec import TaskSpec
from pytest_autotuner.core.trial import Deadline, FailureClass, Params, TrialFailure
from pytest_autotuner.report import write_report
from pytest_autotuner.report.plots import convergence_figure
from pytest_autotuner.report.summary import github_step_summary
from pytest_autotuner.report.text import defaults_line, format_gain, summary_lines

# SGLang's defaults moved into the factories' space (mem-fraction 0.85 is the nearest listed value, chunked
# prefill 4096 the nearest to H100's 8192)
DEFAULTS = {"tp-size": 1, "mem-fraction-static": 0.85, "schedule-policy": "fcfs", "chunked-prefill-size": 4096}


def by_latency(params: Params, deadline: Deadline) -> BenchResult:
    return result(latency_model(params))


def tuned(**optimization: object) -> TaskSpec:
    return spec(optimization={"max_iterations": 12, "confirm_runs": 1, **optimization})


def test_every_output_says_how_much_better_the_best_is_than_the_defaults(tmp_path: Path) -> None:
    out = run_session(tuned(), by_latency)
    defaults = out.defaults_trial
    assert defaults is not None and defaults.number == 0 and defaults.params == DEFAULTS
    assert out.best is not None and out.best.score.objective is not None
    base = latency_model(DEFAULTS)
    expected = (base - out.best.score.objective) / base
    assert expected > 0.1  # the synthetic landscape leaves room to gain
    assert out.gain_over_defaults == pytest.approx(expected)

    line = f"SGLang defaults (trial #0): {base:.3f} s in one run; the best is {expected:.0%} better"
    assert expected >= 0.1  # shown in whole percent
    assert f"  {line}" in summary_lines(out, None)
    page = write_report(out, tmp_path, runtime="sim")
    html = page.read_text()
    assert f'<p id="versus-defaults">{line}.</p>' in html
    assert f"<b>{expected * 100:.0f}% better</b><span>than SGLang defaults</span>" in html
    block = json.loads((page.parent / "results.json").read_text())["vs_defaults"]
    assert block["trial"] == 0 and block["params"] == DEFAULTS and block["failure"] is None
    assert block["objective"] == pytest.approx(base) and block["gain"] == pytest.approx(expected)
    assert f"({expected:.0%} better than SGLang defaults)" in github_step_summary([(out, page)], tmp_path)
    _handles, labels = convergence_figure(out).axes[0].get_legend_handles_labels()
    assert "SGLang defaults" in labels  # the defaults trial is ringed on the convergence plot


def test_for_a_maximized_objective_more_is_better() -> None:
    # throughput of the factories' cells is 100 tokens x concurrency / latency: highest where latency is lowest
    out = run_session(tuned(objective="maximize_throughput"), by_latency)
    assert out.best is not None
    gain = latency_model(DEFAULTS) / latency_model(out.best.params) - 1
    assert gain > 0.1 and out.gain_over_defaults == pytest.approx(gain, rel=1e-6)
    assert "better" in (defaults_line(out) or "")


def test_defaults_that_fail_are_named_with_their_failure() -> None:
    def oom_at_085(params: Params, deadline: Deadline) -> BenchResult:
        if params["mem-fraction-static"] == 0.85:
            raise TrialFailure(FailureClass.OOM, "CUDA out of memory. Tried to allocate 2.00 GiB\nTraceback ...")
        return result(latency_model(params))

    out = run_session(tuned(), oom_at_085)
    assert out.gain_over_defaults is None
    first_line = "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert defaults_line(out) == f"SGLang defaults (trial #0) failed: oom ({first_line})"


def test_defaults_that_win_are_called_the_best() -> None:
    def defaults_fastest(params: Params, deadline: Deadline) -> BenchResult:
        return result(0.5 if params == DEFAULTS else latency_model(params))

    out = run_session(tuned(), defaults_fastest)
    assert out.best is not None and out.best.params == DEFAULTS
    assert defaults_line(out) == "SGLang defaults (trial #0) are the best configuration found"


@pytest.mark.parametrize(("gain", "text"), [(0.2449, "24% better"), (0.096, "10% better"), (0.0312, "3.1% better"),
                                             (-0.0021, "0.2% worse"), (0.0, "0.0% better")])  # fmt: skip
def test_gains_under_ten_percent_keep_a_decimal(gain: float, text: str) -> None:
    assert format_gain(gain) == text


@pytest.mark.parametrize("optimization", [{"strategy": "random"}, {"start_from_defaults": False}])
def test_without_a_defaults_trial_nothing_is_claimed(optimization: dict[str, object], tmp_path: Path) -> None:
    out = run_session(tuned(**optimization), by_latency)
    assert out.defaults_trial is None and out.gain_over_defaults is None and defaults_line(out) is None
    assert not [line for line in summary_lines(out, None) if "SGLang defaults" in line]
    page = write_report(out, tmp_path, runtime="sim")
    assert json.loads((page.parent / "results.json").read_text())["vs_defaults"] is None
    assert "versus-defaults" not in page.read_text() and "than SGLang defaults" not in page.read_text()
    assert "SGLang defaults" not in convergence_figure(out).axes[0].get_legend_handles_labels()[1]
