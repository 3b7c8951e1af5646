"""scripts/mutation's test selection ([tool.mutmut] in pyproject.toml) names files that exist,
and every pure test of the decision core among them: a deleted or renamed test file would
otherwise stop the mutation run at its first step, and a new one would be left out."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _selection() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    selection: list[str] = config["tool"]["mutmut"]["pytest_add_cli_args_test_selection"]
    return selection


def test_every_selected_test_path_exists() -> None:
    missing = [path for path in _selection() if not (ROOT / path).exists()]
    assert missing == []


def test_every_pure_core_test_is_selected() -> None:
    core = {f"tests/coordinator/{p.name}" for p in (ROOT / "tests" / "coordinator").glob("test_core*.py")}
    assert core - set(_selection()) == set()
