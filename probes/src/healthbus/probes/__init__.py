"""healthbus probe workers: one checker per dependency kind, and the worker that runs them.

A checker (:class:`Checker`) is built from a :class:`~healthbus.protocol.TargetConfig`
by :func:`build_checker`, keeps its client between checks, and turns every dependency
problem into a classified, redacted :class:`CheckResult`.
"""

from healthbus.probes._base import BaseChecker, Checker, CheckResult, DriverMissing
from healthbus.probes._checkers import build_checker

__all__ = [
    "BaseChecker",
    "CheckResult",
    "Checker",
    "DriverMissing",
    "build_checker",
]
