"""healthbus probe workers: one checker per dependency kind, and the worker that runs them.

A checker (:class:`Checker`) is built from a :class:`~healthbus.protocol.TargetConfig`
by :func:`build_checker`, keeps its client between checks, and turns every dependency
problem into a classified, redacted :class:`CheckResult`.
"""

from healthbus.probes._base import BaseChecker, Checker, CheckResult, DriverMissing
from healthbus.probes._checkers import build_checker
from healthbus.probes._schedule import TargetSchedule, hold_until
from healthbus.probes._sharding import Membership, assigned, owners
from healthbus.probes._worker import ProbeMetrics, ProbeWorker, default_worker_id
from healthbus.protocol.clock import Clock, SystemClock

__all__ = [
    "BaseChecker",
    "CheckResult",
    "Checker",
    "Clock",
    "DriverMissing",
    "Membership",
    "ProbeMetrics",
    "ProbeWorker",
    "SystemClock",
    "TargetSchedule",
    "assigned",
    "build_checker",
    "default_worker_id",
    "hold_until",
    "owners",
]
