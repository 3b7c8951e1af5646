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
from datetime import datetime
from typing import Protocol, runtime_checkable

from healthbus.protocol._messages import utcnow

__all__ = ["Clock", "Nap", "SystemClock", "earliest", "require_clock", "sleep_until_set"]


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
    return await Nap(clock, event).until(clock.monotonic() + seconds)


class Nap:
    """Waits for an event or a moment on a clock, like :func:`sleep_until_set`, with a moment that
    can be moved while it waits (:meth:`move_to`): a task that sleeps until its next round can
    have that round brought forward or put off by others without being woken for it."""

    def __init__(self, clock: Clock, event: asyncio.Event) -> None:
        self._clock = clock
        self._event = event
        self._timeout: asyncio.Timeout | None = None  # the real clock's wait, while waiting
        self._moved: asyncio.Event | None = None  # another clock's, while waiting
        self.deadline = 0.0
        """The moment (on ``clock.monotonic()``) the current or last wait ends at, unless the event is set."""

    async def until(self, deadline: float) -> bool:
        """Wait until the event is set or ``clock.monotonic()`` reaches ``deadline``; True if set."""
        if self._event.is_set():
            return True
        self.deadline = deadline
        if type(self._clock) is SystemClock:
            # The real clock is the event loop's: a timeout around the wait, no extra tasks (a
            # process holding hundreds of clients wakes their supervisors thousands of times
            # while they reconnect; two tasks per wait were a good part of its CPU).
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout_at(loop.time() + (deadline - self._clock.monotonic())) as timeout:
                    self._timeout = timeout
                    await self._event.wait()
            except TimeoutError:
                pass
            finally:
                self._timeout = None
            return self._event.is_set()
        while True:
            moved = self._moved = asyncio.Event()
            waiter = asyncio.ensure_future(self._event.wait())
            mover = asyncio.ensure_future(moved.wait())
            sleeper = asyncio.ensure_future(self._clock.sleep(self.deadline - self._clock.monotonic()))
            try:
                await asyncio.wait((waiter, mover, sleeper), return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._moved = None
                for task in (waiter, mover, sleeper):
                    task.cancel()
                await asyncio.gather(waiter, mover, sleeper, return_exceptions=True)
            if self._event.is_set():
                return True
            if not moved.is_set():
                return False  # the clock reached the deadline

    def move_to(self, deadline: float) -> bool:
        """End the current wait at ``deadline`` instead (earlier or later); False if none is under way."""
        if self._timeout is not None:
            loop = asyncio.get_running_loop()
            self._timeout.reschedule(loop.time() + (deadline - self._clock.monotonic()))
        elif self._moved is not None:
            self._moved.set()
        else:
            return False
        self.deadline = deadline
        return True
