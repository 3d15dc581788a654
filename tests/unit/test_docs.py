"""The README is a short guide and docs/ its reference: links resolve, options and spec fields named exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_autotuner.core.spec.task_spec import TaskSpec

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def known_options() -> set[str]:
    source = (ROOT / "pytest_autotuner" / "options.py").read_text()
    return set(re.findall(r'"(--autotune[a-z-]*)"', source))


def test_the_readme_is_a_guide_under_200_lines_that_links_every_reference_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, f"README does not link docs/{page.name}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links {target}, which does not exist"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_command_line_option_named_exists(page: Path) -> None:
    named = set(re.findall(r"--autotune(?:-[a-z]+)*", page.read_text()))
    unknown = named - known_options()
    assert not unknown, f"{page.relative_to(ROOT)} names options the plugin does not have: {sorted(unknown)}"


def test_the_first_spec_in_the_readme_is_a_valid_spec() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## A first spec", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    TaskSpec.model_validate_json(block)


def test_the_spec_field_tables_are_the_schemas() -> None:
    from pytest_autotuner.core.spec.task_spec import spec_json_schema
    from pytest_autotuner.schema.tables import field_tables

    page = (ROOT / "docs" / "spec-fields.md").read_text()
    assert page == field_tables(spec_json_schema()), (
        "docs/spec-fields.md is stale: python -m pytest_autotuner.schema --tables docs/spec-fields.md"
    )
