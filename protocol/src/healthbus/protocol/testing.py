"""Test helpers shared by every healthbus distribution.

:class:`ManualClock` is a :class:`healthbus.protocol.clock.Clock` whose time moves only
when a test says so::

    clock = ManualClock()
    service = CoordinatorService(config, nc, clock=clock)
    await service.start()
    await clock.advance(5.0)   # the service's timers and lease loop run as if 5 s passed
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import datetime, timedelta

from healthbus.protocol._messages import utcnow

__all__ = ["ManualClock"]

#: Event-loop turns given to the tasks a step of :meth:`ManualClock.advance` woke.
_SETTLE_TURNS = 20
#: Deadlines this close past the target of an advance are due: ``a + (b - a)`` can come
#: out a rounding error above ``b``, and a real clock would have moved past it anyway.
_ROUNDING = 1e-9


class ManualClock:
    """Monotonic and wall time that move together, only by :meth:`advance` or :meth:`skip`.

    ``sleep`` parks the caller until the clock reaches its deadline. ``advance`` moves
    the clock deadline by deadline, waking each sleeper in order and giving the woken
    tasks a few turns of the event loop (enough for them to run to their next ``await``
    on the clock or on I/O), so a timer that re-arms itself within the advanced span
    fires again. ``skip`` moves the clock without waking anyone: time that passed while
    the process was frozen (``SIGSTOP``, a long GC pause).
    """

    def __init__(self, *, start: datetime | None = None, monotonic: float = 1_000.0) -> None:
        self._mono = monotonic
        self._wall0 = start if start is not None else utcnow()
        self._mono0 = monotonic
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._parked = asyncio.Condition()  # bound to a loop at first use

    def monotonic(self) -> float:
        """The manual monotonic time (seconds)."""
        return self._mono

    def now(self) -> datetime:
        """The manual wall time: ``start`` plus the time advanced since."""
        return self._wall0 + timedelta(seconds=self._mono - self._mono0)

    async def sleep(self, seconds: float) -> None:
        """Park until the clock has moved on by ``seconds`` (yield once for ``<= 0``)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._order), fut))
        await self._notify()
        await fut

    @property
    def sleepers(self) -> int:
        """How many tasks are parked on this clock now."""
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    async def wait_sleepers(self, n: int, timeout: float = 10.0) -> None:
        """Wait (in real time, at most ``timeout``) until at least ``n`` tasks are parked."""
        cond = self._parked
        async with asyncio.timeout(timeout), cond:
            await cond.wait_for(lambda: self.sleepers >= n)

    def skip(self, seconds: float) -> None:
        """Move the clock on by ``seconds`` without waking anyone (a frozen process)."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._mono += seconds

    async def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds``, waking every sleeper due on the way, in order."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        target = self._mono + seconds
        while True:
            self._drop_cancelled()
            if not self._sleepers or self._sleepers[0][0] > target + _ROUNDING:
                break
            # A sleeper woken is past its deadline, as on a real clock: one due a rounding
            # error past ``target`` moves the clock that far, or it would find its deadline
            # still ahead, sleep the remainder and be woken again, for ever.
            self._mono = max(self._mono, self._sleepers[0][0])
            limit = self._mono + _ROUNDING
            while self._sleepers and self._sleepers[0][0] <= limit:
                when, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    self._mono = max(self._mono, when)
                    fut.set_result(None)
            await _settle()
        self._mono = max(self._mono, target)
        await _settle()

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    async def _notify(self) -> None:
        cond = self._parked
        async with cond:
            cond.notify_all()


async def _settle() -> None:
    for _ in range(_SETTLE_TURNS):
        await asyncio.sleep(0)
