"""Fixtures shared by the integration tests."""

from __future__ import annotations

import os

import pytest
from integration.cdp import find_chromium


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; skipped without it, except under CI (CI=true), where it is required."""
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required under CI (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (/usr/bin/chromium or chromium on PATH); apt-get install chromium")
    return binary


@pytest.fixture(scope="session", autouse=True)
def _kernel_engines_compiled() -> None:
    """Compile the kernel-table engines of the models the tests launch once, before any simulator process: a
    process that finds none compiles its own (seconds; over a test's 20 s readiness wait on a loaded runner)."""
    from pytest_autotuner.sim.cli import engine_config, parse_argv
    from pytest_autotuner.sim.perf_model import make_step_cost, plan_memory

    for model in ("meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"):
        cfg = engine_config(parse_argv(["--model-path", model]))
        plan_memory(cfg)
        make_step_cost(cfg)
