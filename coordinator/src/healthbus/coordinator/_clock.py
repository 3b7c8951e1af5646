"""Time as an interface: monotonic seconds for deadlines, wall clock for the wire.

The core never reads a clock; the service reads one through this protocol, so tests and
benchmarks can substitute their own.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol

from healthbus.protocol import utcnow


class Clock(Protocol):
    """A source of the current time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (deadlines, liveness)."""
        ...

    def now(self) -> datetime:
        """The wall-clock time, tz-aware UTC (timestamps that go on the wire)."""
        ...


class SystemClock:
    """The real clocks: :func:`time.monotonic` and :func:`healthbus.protocol.utcnow`."""

    monotonic = staticmethod(time.monotonic)
    now = staticmethod(utcnow)
