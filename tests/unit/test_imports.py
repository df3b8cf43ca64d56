"""No import cycles between the modules of chatd, chatctl and chat.

A cycle means two modules cannot be understood (or loaded, or replaced) one without the other,
so the wings of issue 24 would not be wings. Every import counts, at any depth: one inside a
function only defers the cycle to run time. ``from chatd.x import y`` is an edge to ``chatd.x.y``
when that is a module, else to ``chatd.x``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from support.paths import REPO

PACKAGES = ("chatd", "chatctl", "chat")

#: Cycles tolerated, each as its modules in order (each imports the next, the last the first):
#: none since issue 24 removed the last (config <-> preflight, the lifecycle tangle). Any import
#: that closes a cycle and is not one of these edges fails the test.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def module_files() -> dict[str, Path]:
    """Every module of PACKAGES by dotted name (a package by its ``__init__.py``)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of PACKAGES that module ``name`` (its source at ``path``) imports."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package this module is in (or is)
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in modules else base)
    return {target for target in targets if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def components(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each module's strongly connected component (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    comp: dict[str, int] = {}
    stack: list[str] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, edges = work[-1]
            child = next((e for e in edges if e not in index or e not in comp), None)
            if child is not None and child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                work.append((child, iter(sorted(graph[child]))))
                continue
            if child is not None:  # on the stack: a back edge
                low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    comp[member] = index[node]
                    if member == node:
                        break
    return comp


def path_between(graph: dict[str, set[str]], start: str, goal: str) -> list[str]:
    """A shortest import path from ``start`` to ``goal`` (breadth first)."""
    came = {start: start}
    frontier = [start]
    while goal not in came:
        assert frontier, f"no import path from {start} to {goal}"
        reached = []
        for node in frontier:
            for target in sorted(graph[node]):
                if target not in came:
                    came[target] = node
                    reached.append(target)
        frontier = reached
    path = [goal]
    while path[-1] != start:
        path.append(came[path[-1]])
    return path[::-1]


def cycle_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Every import that is part of some cycle (both ends in one strongly connected component)."""
    comp = components(graph)
    return {(a, b) for a, targets in graph.items() for b in targets if comp[a] == comp[b]}


def known_edges() -> set[tuple[str, str]]:
    """The imports that make up KNOWN_CYCLES."""
    return {(cycle[i], cycle[(i + 1) % len(cycle)])
            for cycle in KNOWN_CYCLES for i in range(len(cycle))}


def test_imports_count_at_every_depth_and_resolve_modules(tmp_path):
    modules = dict.fromkeys(["chatd", "chatd.a", "chatd.b", "chatd.c", "chatd.pkg", "chatd.pkg.d"])
    source = tmp_path / "a.py"
    source.write_text("import os\nfrom chatd import b\n"
                      "def late():\n    from chatd.pkg import d, helper\n"
                      "    if True:\n        import chatd.c\n")
    assert imported("chatd.a", source, modules) == {"chatd.b", "chatd.c", "chatd.pkg.d",
                                                    "chatd.pkg"}
    source.write_text("from . import b\nfrom .pkg.d import thing\n")
    assert imported("chatd.a", source, modules) == {"chatd.b", "chatd.pkg.d"}


def test_a_cycle_is_found_and_shown_as_a_path():
    graph = {"x": {"y"}, "y": {"z"}, "z": {"x", "w"}, "w": set()}
    assert cycle_edges(graph) == {("x", "y"), ("y", "z"), ("z", "x")}
    assert path_between(graph, "y", "x") == ["y", "z", "x"]


def test_every_module_is_in_the_graph():
    graph = import_graph()
    assert {"chatd.cli", "chatd.core.hub", "chatctl.cli", "chat.cli"} <= set(graph)
    assert graph["chatd.cli"] and all(target in graph for t in graph.values() for target in t)


def test_no_new_import_cycles():
    graph = import_graph()
    new = sorted(cycle_edges(graph) - known_edges())
    cycles = [" -> ".join([a, *path_between(graph, b, a)]) for a, b in new]
    assert not new, "import cycles:\n" + "\n".join(cycles)


#: What core must never import (issue 24): core speaks events and knows no protocol (line), no
#: transport (net: TLS, listeners), no process (lifecycle), no operator side (admin) and no
#: cluster (core/bus.py is its interface); each of those plugs into core, not the reverse.
CORE = "chatd.core"
NOT_IN_CORE = ("chatd.line", "chatd.net", "chatd.lifecycle", "chatd.admin", "chatd.cluster")


def test_core_imports_no_wing():
    """Each core module's own import statements, anywhere in it (a function's too)."""
    modules = module_files()
    wrong = sorted(f"{name} imports {target}" for name, path in modules.items()
                   if name == CORE or name.startswith(CORE + ".")
                   for target in imported(name, path, modules)
                   if any(target == wing or target.startswith(wing + ".") for wing in NOT_IN_CORE))
    assert not wrong, "core imports a wing:\n" + "\n".join(wrong)
