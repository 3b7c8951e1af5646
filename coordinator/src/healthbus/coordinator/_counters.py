"""What the coordinator counts (read by the metrics collector and by tests) and how it
logs drops: plain ints in dicts on the hot path, rate-limited warnings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from healthbus.coordinator._metrics import DECISION_BUCKETS

log = logging.getLogger("healthbus.coordinator")

#: One log line per drop reason per this many seconds, with the count in between.
DROP_LOG_INTERVAL: Final = 10.0

_NEVER: Final = 2**62


class RateLimitedLog:
    """Logs at most once per key per interval, saying how many were suppressed."""

    def __init__(self, template: str, monotonic: Callable[[], float], interval: float = DROP_LOG_INTERVAL) -> None:
        self.template = template
        self.interval = interval
        self._monotonic = monotonic
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, reason: str, detail: str) -> None:
        now = self._monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last[reason] = now
        more = self._suppressed.pop(reason, 0)
        extra = f" ({more} more since the last such message)" if more else ""
        log.warning(self.template, reason, detail, extra)


class Counters:
    """Results by outcome, drops by reason, transitions, handled messages, decision times.

    :meth:`wait_handled` lets a test or benchmark wait until a number of ProbeResult
    messages has been handled; the hot path only compares one int to wake it.
    """

    def __init__(self, monotonic: Callable[[], float]) -> None:
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
        self._drop_log = RateLimitedLog("dropped a message (%s): %s%s", monotonic=monotonic)

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
