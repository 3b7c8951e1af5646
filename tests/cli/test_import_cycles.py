"""The CLI's modules import each other without a cycle.

An edge is any import of a ``healthbus.cli`` module, at module level or inside a function,
and the command modules ``_main`` dispatches to by name (``COMMANDS``): a command module
that imported ``_main`` back would close a cycle, so what commands share is in ``_common``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from healthbus.cli._main import COMMANDS

CLI = Path(__file__).resolve().parents[2] / "src" / "healthbus" / "cli"


def cli_imports(source: str) -> set[str]:
    """The ``healthbus.cli`` modules ``source`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("healthbus.cli."))
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("healthbus.cli."):
                found.add(node.module)
            elif node.module == "healthbus.cli":
                found.update(f"healthbus.cli.{a.name}" for a in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {f"healthbus.cli.{p.stem}": cli_imports(p.read_text()) for p in CLI.glob("_*.py")}
    graph["healthbus.cli._main"] |= {module for _, module in COMMANDS.values()}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt, [*path, node])
            if cycle is not None:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle is not None:
            return cycle
    return None


def test_the_cli_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "healthbus.cli._common" in graph["healthbus.cli._bench"]  # the walk sees the edges
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_one() -> None:
    """The checker itself: a command importing _main back is a cycle."""
    graph = import_graph()
    graph["healthbus.cli._bench"] = graph["healthbus.cli._bench"] | {"healthbus.cli._main"}
    assert find_cycle(graph) in (
        ["healthbus.cli._bench", "healthbus.cli._main", "healthbus.cli._bench"],
        ["healthbus.cli._main", "healthbus.cli._bench", "healthbus.cli._main"],
    )
