"""The import graph of ``src/racer`` keeps its shape (docs/architecture.md).

Every import counts: at module level, inside functions, under ``TYPE_CHECKING``,
absolute and relative. Three promises:

- no import cycle;
- no module imports another module's private (``_underscore``) name;
- the pure statistics import no layer above them (command line, gateway, evaluation,
  own-data loop, batch routing), not even through another module.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from conftest import REPO_ROOT

SOURCE = REPO_ROOT / "src" / "racer"
PURE = ("bounds", "sets", "fwer", "ltt", "losses", "calibration", "policies", "aggregate")
LAYERS_ABOVE = ("cli", "serve", "evaluation", "owndata", "batch")


@dataclass
class ImportGraph:
    """Edges ``importer -> imported -> first line`` between racer modules, and the private
    names imported from another module (``importer, "module:name", line``)."""

    root: Path
    files: dict[str, Path]
    edges: dict[str, dict[str, int]] = field(default_factory=dict)
    private: list[tuple[str, str, int]] = field(default_factory=list)


def _module_names(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package) for every ``.py`` file under ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _owner(name: str, modules: dict) -> str | None:
    """The longest prefix of a dotted name that is a module of the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` reads from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def import_graph(root: Path = SOURCE) -> ImportGraph:
    """Parse every module under ``root`` (no import is executed) into an :class:`ImportGraph`."""
    modules = _module_names(root)
    package = root.name
    graph = ImportGraph(root, {name: path for name, (path, _) in modules.items()})
    for module, (path, is_package) in modules.items():
        edges = graph.edges.setdefault(module, {})

        def add(target: str | None, line: int, module: str = module, edges: dict = edges) -> None:
            if target is not None and target != module:
                edges.setdefault(target, line)

        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == package:
                        add(_owner(alias.name, modules), node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = _base(module, is_package, node)
                if base.split(".")[0] != package:
                    continue
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    if submodule in modules:
                        add(submodule, node.lineno)
                    else:
                        add(_owner(base, modules), node.lineno)
                    if _is_private(alias.name) and _owner(base, modules) != module:
                        graph.private.append((module, f"{base}:{alias.name}", node.lineno))
    return graph


def _strongly_connected(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, {}):
            if target not in index:
                visit(target)
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def _path(edges: dict[str, dict[str, int]], start: str, goals: set[str]) -> list[str] | None:
    """A shortest import chain from ``start`` to a module in ``goals`` (breadth first)."""
    before: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(edges.get(node, {})):
            if target in goals:
                chain = [target, node]
                while before[chain[-1]] is not None:
                    chain.append(before[chain[-1]])
                return chain[::-1]
            if target not in before:
                before[target] = node
                queue.append(target)
    return None


def _describe(graph: ImportGraph, chain: list[str]) -> str:
    """``a (a.py:12) -> b (b.py:40) -> c``: each arrow with the line of its import."""
    steps = []
    for importer, imported in zip(chain, chain[1:], strict=False):
        where = graph.files[importer].relative_to(graph.root.parent).as_posix()
        steps.append(f"{importer} ({where}:{graph.edges[importer][imported]})")
    return " -> ".join([*steps, chain[-1]])


def import_cycles(graph: ImportGraph) -> list[str]:
    """One readable cycle per strongly connected component of the import graph."""
    cycles = []
    for component in _strongly_connected(graph.edges):
        inside = {m: {t: line for t, line in graph.edges[m].items() if t in component}
                  for m in component}  # fmt: skip
        chain = _path(inside, component[0], {component[0]})
        cycles.append(_describe(graph, chain))
    return cycles


def _in(module: str, names: tuple[str, ...]) -> bool:
    return any(
        module == f"racer.{name}" or module.startswith((f"racer.{name}.", f"racer.{name}_"))
        for name in names
    )


def layer_violations(graph: ImportGraph) -> list[str]:
    """For each pure statistics module that reaches a layer above it, the import chain."""
    above = {module for module in graph.edges if _in(module, LAYERS_ABOVE)}
    found = []
    for module in sorted(graph.edges):
        if _in(module, PURE):
            chain = _path(graph.edges, module, above)
            if chain is not None:
                found.append(_describe(graph, chain))
    return found


GRAPH = import_graph()


def test_the_graph_reads_every_kind_of_import():
    edges = GRAPH.edges
    assert "racer.version" in edges["racer"]  # module level, absolute
    assert "racer.artifact" in edges["racer"]  # under TYPE_CHECKING
    assert "racer.routers" in edges["racer.evaluation.scoring"]  # inside a function
    assert "racer.cli.batch" in edges["racer.cli"]  # "from racer.cli import batch"
    assert len(edges) == len(list(SOURCE.rglob("*.py")))


def test_the_checks_find_a_cycle_a_private_import_and_a_layer_breach(tmp_path):
    package = tmp_path / "racer"
    (package / "policies").mkdir(parents=True)
    (package / "__init__.py").write_text("from . import sets\n")
    (package / "sets.py").write_text("def f():\n    from .policies.family import _step\n")
    (package / "policies" / "__init__.py").write_text("")
    (package / "policies" / "family.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import racer.cli.app\n"
    )
    (package / "cli").mkdir()
    (package / "cli" / "__init__.py").write_text("")
    (package / "cli" / "app.py").write_text("from racer.sets import f\nfrom racer import __all__\n")
    graph = import_graph(package)
    assert import_cycles(graph) == [
        "racer (racer/__init__.py:1) -> racer.sets (racer/sets.py:2) -> racer.policies.family "
        "(racer/policies/family.py:3) -> racer.cli.app (racer/cli/app.py:2) -> racer"
    ]
    assert graph.private == [("racer.sets", "racer.policies.family:_step", 2)]  # not __all__
    assert layer_violations(graph) == [
        "racer.policies.family (racer/policies/family.py:3) -> racer.cli.app",
        "racer.sets (racer/sets.py:2) -> racer.policies.family (racer/policies/family.py:3) "
        "-> racer.cli.app",
    ]


def test_no_import_cycle():
    cycles = import_cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_imports_another_modules_private_name():
    assert not GRAPH.private, "private names imported from another module:\n" + "\n".join(
        f"{module} imports {name} (line {line})" for module, name, line in GRAPH.private
    )


def test_pure_statistics_import_no_layer_above_them():
    found = layer_violations(GRAPH)
    assert not found, "pure statistics reach a layer above them:\n" + "\n".join(found)
