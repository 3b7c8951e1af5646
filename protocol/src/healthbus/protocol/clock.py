"""Time as one interface for every healthbus component: tell it, and wait for it.

Each component (coordinator, probe worker, subscriber library) reads and waits for time
only through a :class:`Clock`, so a test can drive it with
:class:`healthbus.protocol.testing.ManualClock` instead of waiting real seconds:

* ``monotonic()`` — seconds on a clock that never goes back: deadlines, schedules,
  liveness, lease validity;
* ``now()`` — the wall clock, tz-aware UTC: only for timestamps that go on the wire;
* ``await sleep(seconds)`` — wait until ``monotonic()`` has moved on by ``seconds``.

What is *not* on the clock: timeouts of I/O with a real server (a JetStream ack, a
request's reply, a checker's hard timeout). Those measure the server, not the rules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, runtime_checkable

from healthbus.protocol._messages import utcnow

__all__ = ["Clock", "SystemClock", "as_clock", "sleep_until_set"]


@runtime_checkable
class Clock(Protocol):
    """A source of the current time that can also wait for it."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (deadlines, liveness)."""
        ...

    def now(self) -> datetime:
        """The wall-clock time, tz-aware UTC (timestamps that go on the wire)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on :meth:`monotonic` (at once for ``<= 0``)."""
        ...


class SystemClock:
    """The real clocks: :func:`time.monotonic`, :func:`healthbus.protocol.utcnow` and :func:`asyncio.sleep`."""

    monotonic = staticmethod(time.monotonic)
    now = staticmethod(utcnow)

    async def sleep(self, seconds: float) -> None:
        """:func:`asyncio.sleep`."""
        await asyncio.sleep(max(0.0, seconds))


class _MonotonicOnly:
    """A bare monotonic function given where a Clock is expected (the older form)."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic

    def monotonic(self) -> float:
        """The function's reading."""
        return self._monotonic()

    now = staticmethod(utcnow)

    async def sleep(self, seconds: float) -> None:
        """:func:`asyncio.sleep`."""
        await asyncio.sleep(max(0.0, seconds))


def as_clock(clock: Clock | Callable[[], float] | None) -> Clock:
    """``clock`` as a :class:`Clock`: None is the system clock; a bare monotonic function
    (the form the subscriber library took before) tells time with it and sleeps for real."""
    if clock is None:
        return SystemClock()
    if isinstance(clock, Clock):
        return clock
    return _MonotonicOnly(clock)


async def sleep_until_set(clock: Clock, event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` passed on ``clock``; True if the event was set."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, sleeper):
            task.cancel()
        await asyncio.gather(waiter, sleeper, return_exceptions=True)
    return event.is_set()
