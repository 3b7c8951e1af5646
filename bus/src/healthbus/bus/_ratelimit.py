"""A log line per reason per interval, never per message: what a flood of bad input gets.

Everything that drops messages it did not expect (the coordinator's intake and control
handler, a process's reload listener) logs through :class:`RateLimitedLog`, so a sender
that floods a subject costs one warning per reason per interval, with the count of the
ones suppressed in between.
"""

from __future__ import annotations

import logging
from typing import Final

from healthbus.protocol.clock import Clock, require_clock

#: One log line per drop reason per this many seconds, with the count in between.
DROP_LOG_INTERVAL: Final = 10.0


class RateLimitedLog:
    """Logs ``template % (reason, detail, extra)`` at most once per reason per interval;
    ``extra`` says how many were suppressed since the last line."""

    def __init__(
        self,
        template: str,
        clock: Clock | None = None,
        interval: float = DROP_LOG_INTERVAL,
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        self.template = template
        self.interval = interval
        self._clock = require_clock(clock, "RateLimitedLog(clock=...)")
        self._log = logger or logging.getLogger("healthbus")
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, reason: str, detail: str) -> None:
        now = self._clock.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last[reason] = now
        more = self._suppressed.pop(reason, 0)
        extra = f" ({more} more since the last such message)" if more else ""
        self._log.warning(self.template, reason, detail, extra)
