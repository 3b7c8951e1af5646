"""The timer loop: staleness, ``retry_at`` and refreshes, without any probe traffic.

It wakes at the core's next deadline (at most every ``tick``). While NATS is
disconnected no result can arrive, so the timers pause; on reconnect every target gets
a fresh ``stale_after`` grace instead of being declared unknown for the outage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from nats.aio.client import Client

from healthbus.coordinator._core import Decider, Now
from healthbus.protocol import StateChanged
from healthbus.protocol.clock import Clock

log = logging.getLogger("healthbus.coordinator")


class Timers:
    """Runs the core's deadlines for one term as active coordinator."""

    def __init__(
        self,
        decider: Decider,
        nc: Client,
        clock: Clock,
        *,
        tick: float,
        now: Callable[[], Now],
        emit: Callable[[Iterable[StateChanged]], None],
    ) -> None:
        self.decider = decider
        self.nc = nc
        self.clock = clock
        self.tick = tick
        self._now = now
        self._emit = emit

    async def run(self) -> None:
        """Run until cancelled."""
        connected = self.nc.is_connected
        while True:
            now = self._now()
            if self.nc.is_connected:
                if not connected:
                    log.info("NATS reconnected: every target gets a fresh stale_after before it can turn unknown")
                    self.decider.restart_grace(now)
                    connected = True
                events = self.decider.tick(now)
                if events:
                    self._emit(events)
            else:
                connected = False
            await self.clock.sleep(self.wait())

    def wait(self) -> float:
        """Seconds the loop sleeps: until the next deadline, at most ``tick``.

        While NATS is disconnected the timers do not run, so a deadline already due stays
        due: it must not shorten the sleep, or the loop would spin every millisecond for
        the whole outage.
        """
        wait = self.tick
        deadline = self.decider.next_deadline()
        if deadline is not None and self.nc.is_connected:
            wait = min(wait, max(0.001, deadline - self.clock.monotonic()))
        return wait
