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
