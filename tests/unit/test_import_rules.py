"""The layers of the package, read from its source: the core imports no edge, the renderers do not reach back into
the search, and no two packages import each other (a cycle, planted or grown, fails here with its path).

Imports under ``if TYPE_CHECKING:`` are annotations only and do not count; imports inside functions do (they run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "pytest_autotuner"

#: what the renderers may not import: what only the search knows is recorded on the outcome instead
RENDERERS = ("pytest_autotuner.report",)
SEARCH_MODULES = (
    "pytest_autotuner.core.outcome.session",
    "pytest_autotuner.core.search.samplers",
    "pytest_autotuner.core.search.space",
    "pytest_autotuner.core.search.study",
)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str) -> Iterator[str]:
    """Absolute names a module imports at run time (``if TYPE_CHECKING:`` blocks skipped)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                yield ".".join([*base, node.module] if node.module else base)
            elif node.module:
                yield node.module
                yield from (f"{node.module}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules of the same top package it imports (from ``root``, a package folder)."""
    top = root.name
    modules: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(), str(path))
        found = set()
        for imported in _imports(tree, package + ".x"):
            if imported.split(".")[0] == top:
                while imported and imported not in modules:
                    imported = imported.rpartition(".")[0]
                if imported and imported != name:
                    found.add(imported)
        graph[name] = found
    return graph


def layer_of(module: str, depth: int = 2) -> str:
    """``pytest_autotuner.core.measure.metrics`` -> ``pytest_autotuner.core``; a top module is its own layer."""
    return ".".join(module.split(".")[:depth])


def package_cycle(graph: Mapping[str, set[str]], depth: int = 2) -> list[str] | None:
    """A cycle among the layers (packages at ``depth``), as the path that closes it; None when there is none."""
    edges: dict[str, set[str]] = {}
    for module, imported in graph.items():
        for other in imported:
            a, b = layer_of(module, depth), layer_of(other, depth)
            if a != b and a != layer_of(module, 1) and b != layer_of(other, 1):
                edges.setdefault(a, set()).add(b)
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [*path, nxt]
            if nxt not in state:
                found = visit(nxt, [*path, nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE)


def test_the_core_imports_no_edge(graph: dict[str, set[str]]) -> None:
    leaks = {
        # the package root holds only ``__version__`` (its own test below keeps it so)
        module: sorted(i for i in imported if not i.startswith("pytest_autotuner.core") and i != "pytest_autotuner")
        for module, imported in graph.items()
        if module.startswith("pytest_autotuner.core")
    }
    assert {m: i for m, i in leaks.items() if i} == {}


def test_the_package_root_imports_nothing(graph: dict[str, set[str]]) -> None:
    assert graph["pytest_autotuner"] == set()


def test_renderers_read_the_outcome_not_the_search(graph: dict[str, set[str]]) -> None:
    reaching = {
        module: sorted(i for i in imported if i.startswith(SEARCH_MODULES))
        for module, imported in graph.items()
        if module.startswith(RENDERERS)
    }
    assert {m: i for m, i in reaching.items() if i} == {}


#: the renderers, which read only the report view (``report/view.py``), and the builders the view alone runs
VIEW_RENDERERS = ("html", "plots", "summary", "terminal")
VIEW_BUILDERS = ("data", "explain", "rows", "series", "tradeoff", "view")


def _every_import(path: Path) -> set[str]:
    """What a module imports, annotations included (a renderer that only names ``TaskOutcome`` in a signature
    still takes the outcome)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_renderers_read_only_the_report_view(graph: dict[str, set[str]]) -> None:
    """No renderer takes the outcome or runs a builder: what it shows was computed once, in the view (the types
    of the view and its plot series may be named)."""
    allowed = {"pytest_autotuner.report.view.ReportView", "pytest_autotuner.report.series.PlotSeries"}
    reaching = {}
    for name in VIEW_RENDERERS:
        imported = _every_import(PACKAGE / "report" / f"{name}.py") - allowed
        reaching[name] = sorted(
            i for i in imported
            if i.startswith("pytest_autotuner.core.outcome.outcome")
            or any(i.startswith(f"pytest_autotuner.report.{b}") for b in VIEW_BUILDERS)
        )  # fmt: skip
    assert {m: i for m, i in reaching.items() if i} == {}
    plugin = _every_import(PACKAGE / "plugin.py")
    assert not any(i.startswith(f"pytest_autotuner.report.{b}") for i in plugin for b in VIEW_BUILDERS if b != "view")


def test_no_two_packages_import_each_other(graph: dict[str, set[str]]) -> None:
    assert package_cycle(graph) is None
    core = {m: {i for i in imported if i.startswith("pytest_autotuner.core.")} for m, imported in graph.items()
            if m.startswith("pytest_autotuner.core.")}  # fmt: skip
    assert package_cycle(core, depth=3) is None  # the core's own packages


#: the core's packages, each importing only those before it
CORE_ORDER = ("spec", "measure", "search", "outcome")


def test_the_core_packages_import_only_those_before_them(graph: dict[str, set[str]]) -> None:
    inside = [m for m in graph if m.startswith("pytest_autotuner.core.")]
    assert {m.split(".")[2] for m in inside} == set(CORE_ORDER)  # every core module lives in one of them
    backwards = sorted(
        f"{module} -> {other}"
        for module in inside
        for other in graph[module]
        if other.startswith("pytest_autotuner.core.")
        and CORE_ORDER.index(other.split(".")[2]) > CORE_ORDER.index(module.split(".")[2])
    )
    assert backwards == []


def _write(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


@pytest.mark.parametrize(
    "files",
    [
        {"pkg/__init__.py": "", "pkg/a/__init__.py": "", "pkg/a/m.py": "from pkg.b import n\n",
         "pkg/b/__init__.py": "", "pkg/b/n.py": "def f():\n    from pkg.a.m import x\n"},  # a function-level import
        {"pkg/__init__.py": "", "pkg/a/__init__.py": "from . import m\n", "pkg/a/m.py": "from ..c import o\n",
         "pkg/b/__init__.py": "", "pkg/b/n.py": "import pkg.a.m\n",
         "pkg/c/__init__.py": "", "pkg/c/o.py": "from pkg.b.n import y\n"},  # relative imports, three packages
    ],
)  # fmt: skip
def test_a_planted_cycle_is_found_with_its_path(tmp_path: Path, files: Mapping[str, str]) -> None:
    cycle = package_cycle(import_graph(_write(tmp_path, files)))
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) >= 3


def test_annotation_only_imports_are_no_cycle(tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": "",
        "pkg/a/__init__.py": "",
        "pkg/a/m.py": "from pkg.b import n\n",
        "pkg/b/__init__.py": "",
        "pkg/b/n.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a.m import x\n",
    }
    assert package_cycle(import_graph(_write(tmp_path, files))) is None


#: what a pure core may not import (files, processes, sockets, threads and signals belong to the edges)
IMPURE_IMPORTS = ("os", "fcntl", "threading", "concurrent", "subprocess", "socket", "signal", "shutil", "tempfile")
#: calls that read or write a file, by name (``open``) or by method (``Path.read_text`` ...); ``os.replace`` and
#: the like are caught by the ``os`` import (a method named ``replace`` is str's or dataclasses')
FILE_CALLS = ("open", "read_text", "read_bytes", "write_text", "write_bytes", "mkdir", "unlink", "rename", "rmdir")


def impurities(path: Path) -> set[str]:
    """The impure modules a file imports (top name) and the file calls it makes."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for name in _imports(tree, "x.y"):
        if name.split(".")[0] in IMPURE_IMPORTS:
            found.add(name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in FILE_CALLS:
                found.add(name)
    return found


def test_the_core_touches_no_file_process_socket_or_thread() -> None:
    found = {}
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        impure = impurities(path)
        if impure:
            found[module] = impure
    assert found == {}  # the session's evaluations run in the edge's threads (pytest_autotuner/threads.py)


def test_a_planted_file_read_or_thread_is_found(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("import threading\nfrom os import path\n\ndef f(p):\n    return p.read_text() + open(p).read()\n")
    assert impurities(path) == {"threading", "os", "read_text", "open"}
