"""Small helpers every fixture uses: ``require`` and ``free_port``."""

from __future__ import annotations

import importlib.util
import os
from typing import NoReturn

import pytest

from healthbus.bus.embedded import find_binary, free_port

__all__ = ["free_port", "in_ci", "require", "unavailable"]


def in_ci() -> bool:
    """True when the environment says we run in CI (``CI=true``): missing servers then fail."""
    return os.environ.get("CI", "").strip().lower() == "true"


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require(name: str, reason: str) -> str:
    """Make sure the binary or importable module ``name`` exists, else skip (fail under CI).

    Returns the binary's path (or the module name). A skip locally keeps a laptop without
    e.g. PostgreSQL usable; under ``CI=true`` the same gap fails, so CI never goes green
    by skipping.
    """
    path = find_binary(name)
    if path is None and not _module_available(name):
        unavailable(f"{name} is not available: {reason}")
    return path or name


def unavailable(message: str) -> NoReturn:
    """Skip the test because a dependency is missing, or fail under ``CI=true``."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: missing test dependencies fail instead of skipping)", pytrace=False)
    pytest.skip(message)
