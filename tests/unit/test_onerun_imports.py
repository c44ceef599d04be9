"""The architecture, read from the source: no import cycles inside onerun, and click only
at the edge (the CLI module).

The graph is built with ``ast``, not by importing: every ``import`` and ``from ... import``
of an onerun module anywhere in a module counts, inside functions and under
``TYPE_CHECKING`` too, since a lazy import still ties the two modules together. A package's
``__init__`` is a module of its own. A package's ``__init__`` runs before any of its
submodules, but that implicit edge is not counted: only the modules an import names.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onerun

PACKAGE = Path(onerun.__file__).parent
CLI_MODULES = ("onerun.cli",)  # the CLI module, or the modules of an onerun/cli/ package


@dataclass(frozen=True)
class Import:
    """One import statement's target, and where it is written."""

    target: str
    line: int


def module_files() -> dict[str, Path]:
    """Every module of the onerun package by dotted name (a package by its __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _defined_in(tree: ast.Module) -> set[str]:
    """Names a package's __init__ binds itself (def, class, assignment)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _owning_module(dotted: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``dotted`` that is an onerun module."""
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(name: str, modules: dict[str, Path],
               trees: dict[str, ast.Module]) -> Iterator[Import]:
    """The onerun modules ``name`` imports, each with the line of its import."""
    for node in ast.walk(trees[name]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _owning_module(alias.name, modules)
                if target is not None:
                    yield Import(target, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package this module is in
                package = name if _is_package(name, modules) else name.rpartition(".")[0]
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base not in modules:
                owner = _owning_module(base, modules)
                if owner is not None:
                    yield Import(owner, node.lineno)
                continue
            own_names = _defined_in(trees[base]) if _is_package(base, modules) else set()
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                # `from pkg import name`: the submodule when name is one, unless the
                # package's __init__ binds that name itself (then the __init__ is used).
                if submodule in modules and alias.name not in own_names:
                    yield Import(submodule, node.lineno)
                else:
                    yield Import(base, node.lineno)


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line of its first import}; self-imports left out."""
    modules = module_files()
    trees = {name: ast.parse(path.read_text(encoding="utf-8"), str(path))
             for name, path in modules.items()}
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name in modules:
        for found in imports_of(name, modules, trees):
            if found.target != name:
                graph[name].setdefault(found.target, found.line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm: the components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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
            visit(node)
    return sorted(found)


def shortest_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, within the component."""
    start = component[0]
    inside = set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node]):
            if nxt == start:
                return [*paths[node], start]
            if nxt in inside and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"{component} is not strongly connected")  # pragma: no cover


def describe_cycle(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    """``a (line 3) -> b (line 9) -> a``: each step with the line of its import."""
    steps = [f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(cycle)]
    return " -> ".join([*steps, cycle[-1]])


def cycles_report(graph: dict[str, dict[str, int]]) -> list[str]:
    return [f"{', '.join(component)}: {describe_cycle(graph, shortest_cycle(graph, component))}"
            for component in strongly_connected(graph)]


def test_the_graph_sees_lazy_imports_and_submodules() -> None:
    """The builder itself: an import inside a function counts, and `from onerun.pkg import
    module` points at the submodule (else the cycle test below could pass by blindness)."""
    graph = import_graph()
    assert "onerun.cli" in graph["onerun.entry"]  # imported inside main()
    assert "onerun.runtime.probe" in graph["onerun.entry"]  # likewise
    assert "onerun.database.classify" in graph["onerun.database"]  # a package's __init__
    assert "onerun.errors" in graph["onerun.settings.declaration"]


def test_cycle_finder_reports_each_cycle_with_its_import_lines() -> None:
    graph = {"a": {"b": 3}, "b": {"c": 5, "a": 9}, "c": {}, "d": {"e": 1}, "e": {"d": 2}}
    assert strongly_connected(graph) == [["a", "b"], ["d", "e"]]
    assert cycles_report(graph) == ["a, b: a (line 3) -> b (line 9) -> a",
                                    "d, e: d (line 1) -> e (line 2) -> d"]


def test_no_import_cycles_in_onerun() -> None:
    report = cycles_report(import_graph())
    assert not report, "import cycles in onerun (component: one cycle through it):\n  " + \
        "\n  ".join(report)


def _imports_click(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            lines += [node.lineno for alias in node.names if alias.name.split(".")[0] == "click"]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module and \
                node.module.split(".")[0] == "click":
            lines.append(node.lineno)
    return lines


def test_click_is_imported_only_by_the_cli() -> None:
    modules = module_files()
    offenders = {}
    for name, path in modules.items():
        lines = _imports_click(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        at_the_edge = any(name == cli or name.startswith(f"{cli}.") for cli in CLI_MODULES)
        if lines and not at_the_edge:
            offenders[name] = lines
    assert "onerun.cli" in modules
    assert not offenders, f"click imported outside the CLI (module: lines): {offenders}"


def test_nothing_imports_the_cli_but_the_entry_point() -> None:
    """The CLI is the edge: modules are called by it, never the reverse."""
    graph = import_graph()
    importers = sorted(name for name, targets in graph.items()
                       if any(t in CLI_MODULES for t in targets)
                       and name not in CLI_MODULES and name != "onerun.entry")
    assert importers == []
