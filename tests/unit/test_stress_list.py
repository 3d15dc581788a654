"""``.ci/stress-timed-tests`` covers every test file that starts a server or a subprocess (its default list)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / ".ci" / "stress-timed-tests"
# what starts a process or a server in this suite: subprocess calls, pytest in a subprocess, the simulator as a
# process, a runtime's launch, an HTTP server in the test, Docker, a browser
STARTS = re.compile(
    r"subprocess\.(run|Popen|check_output|check_call)|runpytest_subprocess|SimProcess\(|\.launch\("
    r"|HTTPServer|web\.Application|AppRunner|docker\.from_env|find_chromium"
)


def default_list() -> list[str]:
    text = SCRIPT.read_text()
    block = re.search(r"^default_tests=\(\n(.*?)^\)", text, re.S | re.M)
    assert block is not None, f"{SCRIPT}: no default_tests=( ... ) block"
    return block.group(1).split()


def starting_files() -> list[str]:
    files = sorted((ROOT / "tests").rglob("test_*.py"))
    return [str(f.relative_to(ROOT)) for f in files if f != Path(__file__) and STARTS.search(f.read_text())]


def test_the_stress_script_runs_every_test_file_that_starts_a_server_or_a_subprocess() -> None:
    found = starting_files()
    assert "tests/integration/test_sim_timing.py" in found and "tests/unit/test_journal.py" in found  # the scan works
    missing = sorted(set(found) - set(default_list()))
    assert not missing, f"{SCRIPT}: add to default_tests (and its header comment): {missing}"


def test_every_listed_file_exists() -> None:
    assert [name for name in default_list() if not (ROOT / name).is_file()] == []
