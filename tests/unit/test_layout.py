"""The package layout: no import circles between fxray's modules, and a short top level.

Every import counts, also one inside a function (the usual way to hide a circle), except those
under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fxray"
TOP_LEVEL = {"__init__.py", "_version.py", "client.py", "demo.py", "platform.py", "settings.py"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "versions" not in p.parts}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """The fxray modules ``module`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    found: set[str] = set()
    known = _modules()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "fxray")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "fxray":
                return
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = _imports(tree, name, path.name == "__init__.py")
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_module_imports_another_that_imports_it_back() -> None:
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from fxray.events import cloudevent as ev", {"fxray.events.cloudevent"}),
        ("def f():\n    from fxray.store import NotFound", {"fxray.store"}),
        ("if TYPE_CHECKING:\n    from fxray.platform import Platform", set()),
        ("from .runs import RunSpec", {"fxray.runtime.runs"}),
    ],
)
def test_imports_are_read_as_the_graph_needs(source: str, expected: set[str]) -> None:
    tree = ast.parse(source)
    assert _imports(tree, "fxray.runtime.runner", is_package=False) == expected


def test_the_top_level_holds_only_the_entry_points() -> None:
    loose = {p.name for p in PACKAGE.glob("*.py")}
    assert loose == TOP_LEVEL


def _layout_block(path: Path, heading: str) -> set[str]:
    """The names of fxray's direct children in the first code block after ``heading``."""
    text = path.read_text(encoding="utf-8")
    block = text[text.index(heading) :]
    block = block[block.index("```") + 3 :]
    block = block[: block.index("```")]
    names = set()
    for line in block.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            names.add(line.split()[0])
    return names


@pytest.mark.parametrize(
    ("document", "heading"),
    [("README.md", "## Layout"), ("docs/architecture.md", "## The packages")],
)
def test_the_documented_layout_is_the_package(document: str, heading: str) -> None:
    documented = _layout_block(PACKAGE.parent / document, heading)
    packages = {f"{p.parent.name}/" for p in PACKAGE.glob("*/__init__.py")}
    modules = {p.name for p in PACKAGE.glob("*.py") if not p.name.startswith("_")}
    assert {n for n in documented if n.endswith("/")} == packages
    assert modules <= documented <= packages | modules | {"__init__.py"}
