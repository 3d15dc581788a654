"""The suite's own layout: two test modules of one basename stop pytest's collection (rootdir-less imports),
which failed a clean clone's CI once; every test module's name is unique across tests/."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).parents[1]


def test_every_test_module_has_a_unique_basename() -> None:
    names = Counter(path.name for path in TESTS.rglob("test_*.py") if "__pycache__" not in path.parts)
    assert names, "no test modules found"
    assert [name for name, count in names.items() if count > 1] == []
