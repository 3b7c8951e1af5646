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
import contextlib
import time
from datetime import datetime
from typing import Protocol, runtime_checkable

from healthbus.protocol._messages import utcnow

__all__ = ["Clock", "SystemClock", "earliest", "require_clock", "sleep_until_set"]


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


def require_clock(clock: object, where: str) -> Clock:
    """``clock`` itself if it is a :class:`Clock`, :class:`SystemClock` for None; else a TypeError.

    A bare function (``time.monotonic``, ``lambda: t[0]``) is refused with the way out, not
    adapted: it cannot ``sleep`` or tell the wall time, so half of a component would run on
    another clock. ``where`` names the parameter in the message (``"LocalCache(clock=...)"``).
    """
    if clock is None:
        return SystemClock()
    if isinstance(clock, Clock):
        return clock
    hint = (
        ": a bare function is no longer accepted; pass SystemClock() (the default) or, in tests, "
        "healthbus.protocol.testing.ManualClock"
        if callable(clock)
        else ""
    )
    raise TypeError(
        f"{where} expects a healthbus.protocol.clock.Clock (monotonic(), now(), sleep()), "
        f"got {type(clock).__name__}{hint}"
    )


def earliest(a: float | None, b: float | None) -> float | None:
    """The earlier of two optional moments on one clock (None: never)."""
    if a is None:
        return b
    return a if b is None else min(a, b)


async def sleep_until_set(clock: Clock, event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` passed on ``clock``; True if the event was set."""
    if event.is_set():
        return True
    if type(clock) is SystemClock:
        # The real clock is the event loop's: a timeout around the wait, no extra tasks (a
        # process holding hundreds of clients wakes their supervisors thousands of times
        # while they reconnect; two tasks per wait were a good part of its CPU).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await event.wait()
        return event.is_set()
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, sleeper):
            task.cancel()
        await asyncio.gather(waiter, sleeper, return_exceptions=True)
    return event.is_set()
