"""What the coordinator counts (read by the metrics collector and by tests) and how it
logs drops: plain ints in dicts on the hot path, rate-limited warnings.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from healthbus.bus import RateLimitedLog
from healthbus.coordinator._metrics import DECISION_BUCKETS
from healthbus.protocol.clock import Clock

log = logging.getLogger("healthbus.coordinator")

_NEVER: Final = 2**62


class Counters:
    """Results by outcome, drops by reason, transitions, handled messages, decision times.

    :meth:`wait_handled` lets a test or benchmark wait until a number of ProbeResult
    messages has been handled; the hot path only compares one int to wake it.
    """

    def __init__(self, clock: Clock) -> None:
        self.results: dict[str, int] = {"pass": 0, "warn": 0, "fail": 0}
        self.dropped: dict[str, int] = {}
        self.transitions: dict[tuple[str, str, str], int] = {}
        self.handled = 0
        """ProbeResult messages handled so far (decided or dropped)."""
        self.decision_buckets = [0] * (len(DECISION_BUCKETS) + 1)
        self.decision_sum = 0.0
        self.next_wake = _NEVER
        """The smallest ``handled`` count a waiter waits for (compare, then :meth:`wake`)."""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._drop_log = RateLimitedLog("dropped a message (%s): %s%s", clock, logger=log)

    def drop(self, reason: str, detail: str) -> None:
        """Count a dropped message and log it (rate-limited)."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self._drop_log(reason, detail)

    def observe(self, seconds: float) -> None:
        """Record one sampled decision time."""
        self.decision_sum += seconds
        for i, bound in enumerate(DECISION_BUCKETS):
            if seconds <= bound:
                self.decision_buckets[i] += 1
                return
        self.decision_buckets[-1] += 1

    def transition(self, target: str, previous: str, state: str) -> None:
        """Count one decided StateChanged."""
        key = (target, previous, state)
        self.transitions[key] = self.transitions.get(key, 0) + 1

    async def wait_handled(self, n: int, timeout: float) -> None:
        """Wait until ``n`` ProbeResult messages in total have been handled."""
        if self.handled >= n:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        self.next_wake = min(self.next_wake, n)
        async with asyncio.timeout(timeout):
            await fut

    def wake(self) -> None:
        """Resolve the waiters whose count has been reached."""
        keep = []
        for n, fut in self._waiters:
            if fut.done():
                continue
            if self.handled >= n:
                fut.set_result(None)
            else:
                keep.append((n, fut))
        self._waiters = keep
        self.next_wake = min((n for n, _ in keep), default=_NEVER)

    def cancel_waiters(self) -> None:
        """Cancel every waiter (the service stopped)."""
        for _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters = []
        self.next_wake = _NEVER
