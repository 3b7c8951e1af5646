"""The coordinator's clock is the one every healthbus component shares.

See :mod:`healthbus.protocol.clock`: the core never reads a clock; the service reads and
waits for time only through it, so tests can drive it with
:class:`healthbus.protocol.testing.ManualClock`.
"""

from __future__ import annotations

from healthbus.protocol.clock import Clock, SystemClock

__all__ = ["Clock", "SystemClock"]
