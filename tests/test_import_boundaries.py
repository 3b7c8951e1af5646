"""No module imports a private (``_``-prefixed) module of another distribution.

Each distribution (``protocol/``, ``bus/``, ``probes/``, ``coordinator/``, ``subscribers/``,
``bench/`` and the root ``healthbus`` command in ``src/``) is used by the others only through its public
modules, so its private modules can change without breaking a neighbour. The unit tests of
one package (``tests/<package>/``) may look inside that package's own distribution; every
other test (harness, chaos, end-to-end, helpers) uses public modules only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = {  # distribution directory → its source root
    "protocol": ROOT / "protocol" / "src",
    "bus": ROOT / "bus" / "src",
    "probes": ROOT / "probes" / "src",
    "coordinator": ROOT / "coordinator" / "src",
    "subscribers": ROOT / "subscribers" / "src",
    "bench": ROOT / "bench" / "src",
    "healthbus": ROOT / "src",
}


def package_owners() -> dict[str, str]:
    """``healthbus.<package>`` → the distribution whose source holds it."""
    owners: dict[str, str] = {}
    for dist, src in SOURCE_ROOTS.items():
        for package in (src / "healthbus").iterdir():
            if (package / "__init__.py").is_file():
                assert package.name not in owners, f"healthbus.{package.name} is in two distributions"
                owners[package.name] = dist
    return owners


OWNERS = package_owners()


def imported_modules(source: str) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every absolute import in ``source``, ``from a import b`` giving ``a`` and ``a.b``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def private_module_of(name: str) -> tuple[str, str] | None:
    """(distribution, module) when ``name`` reaches into a private module of a healthbus package."""
    parts = name.split(".")
    if len(parts) < 3 or parts[0] != "healthbus" or parts[1] not in OWNERS:
        return None
    for i in range(2, len(parts)):
        if parts[i].startswith("_") and not parts[i].startswith("__"):
            return OWNERS[parts[1]], ".".join(parts[: i + 1])
    return None


def python_files() -> Iterator[tuple[Path, str | None]]:
    """Every module of the workspace with the distribution it may look inside (None: public only)."""
    for dist, src in SOURCE_ROOTS.items():
        for path in sorted((src / "healthbus").rglob("*.py")):
            yield path, dist
    for path in sorted((ROOT / "tests").rglob("*.py")):
        first = path.relative_to(ROOT / "tests").parts[0]
        yield path, OWNERS.get(first)


def violations() -> list[str]:
    found = []
    for path, own in python_files():
        for line, name in imported_modules(path.read_text()):
            private = private_module_of(name)
            if private is not None and private[0] != own:
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {private[1]} (private to {private[0]}/)")
    return sorted(set(found))


def test_every_distribution_is_known() -> None:
    """The walk covers every distribution there is (a new one must be added above)."""
    on_disk = {p.parent.name for p in ROOT.glob("*/pyproject.toml")} | {"healthbus"}
    assert on_disk == set(SOURCE_ROOTS)
    assert {"protocol", "bus", "probes", "coordinator", "subscribers", "cli", "bench"} <= set(OWNERS)


def test_no_module_imports_a_private_module_of_another_distribution() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from healthbus.subscribers._bus import connect", "healthbus.subscribers._bus"),
        ("import healthbus.coordinator._core._decider", "healthbus.coordinator._core"),
        ("from healthbus.cli import _main", "healthbus.cli._main"),
        ("from healthbus.bus import connect", None),
        ("from healthbus.bus.embedded import EmbeddedNats", None),
        ("import healthbus.subscribers.__init__", None),
    ],
)
def test_the_walk_sees_private_imports(source: str, expected: str | None) -> None:
    """The checker itself: each import form is caught, public ones pass."""
    found = {p[1] for _, name in imported_modules(source) if (p := private_module_of(name)) is not None}
    assert found == ({expected} if expected else set())
