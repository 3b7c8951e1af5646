"""The ``healthbus`` command (DESIGN section 7, contract)."""

from healthbus.cli._main import main

__all__ = ["main"]
