"""The report page in a real headless Chromium: no errors, no outside requests, plots drawn, no injected script.

Needs Debian's ``chromium`` package; skipped without it, except under CI (CI=true), where it is required.
The screenshot is kept under ``reports/test-artifacts/`` for the CI artifact.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import factories
import pytest
from integration.cdp import headless_chromium, load_page

from pytest_autotuner.core.measure.metrics import BenchResult
from pytest_autotuner.core.measure.trial import Deadline, FailureClass, Params, TrialFailure
from pytest_autotuner.core.outcome.outcome import TaskOutcome
from pytest_autotuner.core.outcome.task import TaskOptions, run_task
from pytest_autotuner.report import write_index, write_report
from pytest_autotuner.report.view import report_view

SCRIPT_PAYLOAD = "<script>window.__pwned=1</script>"
ATTR_PAYLOAD = '"><img src=x onerror="window.__pwned=2">'


def hostile_session() -> TaskOutcome:
    """A real session whose task name, a parameter value and a failure's log tail carry HTML payloads."""
    spec = factories.spec(
        task_name=f"report-xss {SCRIPT_PAYLOAD}",
        parameters={"mem-fraction-static": [0.7, 0.8, 0.9], "schedule-policy": ["fcfs", ATTR_PAYLOAD],
                    "chunked-prefill-size": [512, 2048]},
        optimization={"max_iterations": 10, "n_initial_random": 4, "confirm_runs": 1},
        slo={"latency": {"p99": {"threshold": 1.3}}},
        runtime="sim",
    )  # fmt: skip

    def evaluate(params: Params, deadline: Deadline) -> BenchResult:
        if params["mem-fraction-static"] == 0.9:
            raise TrialFailure(FailureClass.OOM, f"CUDA out of memory {ATTR_PAYLOAD}",
                               log_tail=f"loading weights\n{SCRIPT_PAYLOAD}\n{ATTR_PAYLOAD}\n")  # fmt: skip
        latency = 1.0 + abs(float(params["mem-fraction-static"]) - 0.8) + int(params["chunked-prefill-size"]) / 10000
        return factories.result(latency, spread=0.2)

    return run_task(spec, TaskOptions(runtime="sim", seed=3, study_name="browser"), evaluate, None)


async def inspect_page(chromium: str, page_url: str, tmp_path: Path, screenshot: Path) -> dict[str, Any]:
    async with headless_chromium(chromium, tmp_path / "profile") as port, load_page(port, page_url) as loaded:
        page = loaded.page
        return {
            "errors": page.console_errors(),
            "urls": page.requested_urls(),
            "pwned": await page.evaluate("typeof window.__pwned === 'undefined' ? null : window.__pwned"),
            "images": await page.evaluate("[...document.images].map(i => [i.alt, i.complete, i.naturalWidth])"),
            "text": await page.evaluate("document.body.innerText"),
            "screenshot": await loaded.screenshot(screenshot),
        }


def test_report_page_loads_offline_without_errors_or_injected_script(
    chromium: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    result = hostile_session()
    page = write_report(report_view(result), tmp_path / "reports")
    artifacts = request.config.rootpath / "reports" / "test-artifacts"
    seen = asyncio.run(asyncio.wait_for(
        inspect_page(chromium, page.as_uri(), tmp_path, artifacts / "report.png"), timeout=45))  # fmt: skip
    print(f"screenshot: {seen['screenshot']}")

    assert seen["errors"] == []
    outside = [u for u in seen["urls"] if not (u == page.as_uri() or u.startswith("data:"))]
    assert outside == [], "the page must not load anything but itself and data: URIs"
    assert seen["pwned"] is None, "an injected payload ran"
    assert len(seen["images"]) >= 3
    assert all(complete and width > 0 for _alt, complete, width in seen["images"]), seen["images"]
    assert SCRIPT_PAYLOAD in seen["text"]  # shown as text, in the title and the log tail
    assert ATTR_PAYLOAD in seen["text"]  # shown as text, in the trials table and the failure
    # SGLang's defaults here (mem-fraction 0.874 -> 0.9) hit the OOM above: the page says so instead of a gain
    assert "SGLang defaults (trial #0) failed: oom (CUDA out of memory" in seen["text"]
    assert seen["screenshot"].stat().st_size > 10_000


async def deploy_links_and_text(chromium: str, profile: Path, page: Path) -> tuple[list[str], list[str], str]:
    async with headless_chromium(chromium, profile) as port, load_page(port, page.as_uri()) as loaded:
        links = await loaded.page.evaluate("[...document.querySelectorAll('#deploy a')].map(a => a.href)")
        text = await loaded.page.evaluate("document.body.innerText")
        return loaded.page.console_errors(), links, text


def test_report_shows_deploy_files_time_breakdown_and_importance(chromium: str, tmp_path: Path) -> None:
    result = hostile_session()
    page = write_report(report_view(result), tmp_path / "reports")
    errors, links, text = asyncio.run(asyncio.wait_for(deploy_links_and_text(chromium, tmp_path / "p", page), 45))
    assert errors == []
    targets = [Path(unquote(urlparse(link).path)) for link in links]
    assert [t.name for t in targets] == ["launch.sh", "docker-run.sh", "compose.yaml", "kubernetes.yaml"]
    assert all(t.is_file() and t.parent == page.parent / "deploy" for t in targets)
    assert "python3 -m sglang.launch_server --model-path llama-3-2-1b-instruct" in text
    assert "Where a request's time goes: the best and SGLang's defaults" in text
    assert "before first token (queue + prefill)" in text
    assert "Parameter importance" in text and "not enough trials" not in text  # 8 feasible trials: drawn


def test_report_says_when_too_few_trials_for_importance(chromium: str, tmp_path: Path) -> None:
    spec = factories.spec(task_name="few", optimization={"max_iterations": 3, "n_initial_random": 2})
    result = run_task(spec, TaskOptions(seed=1, study_name="few"), lambda p, d: factories.result(1.0), None)
    page = write_report(report_view(result), tmp_path / "reports")
    errors, _links, text = asyncio.run(asyncio.wait_for(deploy_links_and_text(chromium, tmp_path / "p", page), 45))
    assert errors == []
    assert "not enough trials for parameter importance: only " in text
    assert "fANOVA needs at least 6 feasible measured trials" in text


def test_index_page_links_resolve_in_the_browser(chromium: str, tmp_path: Path) -> None:
    result = hostile_session()
    reports = tmp_path / "reports"
    index = write_index([(report_view(result), write_report(report_view(result), reports))], reports)

    async def hrefs() -> tuple[list[str], Any]:
        async with headless_chromium(chromium, tmp_path / "profile") as port, load_page(port, index.as_uri()) as loaded:
            links = await loaded.page.evaluate("[...document.links].map(a => a.href)")
            return loaded.page.console_errors(), links

    errors, links = asyncio.run(asyncio.wait_for(hrefs(), timeout=30))
    assert errors == []
    assert len(links) == 1
    target = Path(unquote(urlparse(links[0]).path))
    assert target == reports / result.spec.slug / "index.html"
    assert target.is_file()
