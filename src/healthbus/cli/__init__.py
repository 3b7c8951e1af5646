"""The ``healthbus`` command (its contract: docs/contract.md)."""

from healthbus.cli._main import main

__all__ = ["main"]
