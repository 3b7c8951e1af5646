"""Leader election around a :class:`~._leader.Lease`: when to take over, when to step down.

While leading, the lease is renewed every ``ttl / 4``; while standing by, it is tried
as often. Losing it (another coordinator holds it, or held it meanwhile) steps down;
taking it activates. NATS trouble is logged and retried on the next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.js.errors import NoStreamResponseError

from healthbus.coordinator._clock import Clock
from healthbus.coordinator._leader import Lease

log = logging.getLogger("healthbus.coordinator")


class Election:
    """Keeps one coordinator's leadership in step with its lease."""

    def __init__(
        self,
        lease: Lease,
        nc: Client,
        clock: Clock,
        *,
        is_active: Callable[[], bool],
        activate: Callable[[], Awaitable[None]],
        deactivate: Callable[[], Awaitable[None]],
        warn: Callable[[str, str], None],
    ) -> None:
        self.lease = lease
        self.nc = nc
        self.clock = clock
        self._is_active = is_active
        self._activate = activate
        self._deactivate = deactivate
        self._warn = warn

    async def first_acquire(self) -> bool:
        """Try to take the lease at start; False means stand by (:meth:`run` tries again).

        A replicated lease bucket created a moment ago may not have elected its leader yet
        (JetStream answers "no response from stream" or nobody answers): such errors are
        retried for a few seconds instead of failing the start.
        """
        deadline = self.clock.monotonic() + max(2.0, self.lease.ttl)
        while True:
            try:
                return await self.lease.acquire()
            except (NoStreamResponseError, NoRespondersError, TimeoutError) as exc:
                if self.clock.monotonic() >= deadline:
                    self._warn("lease", f"not acquired at start, standing by: {exc or type(exc).__name__}")
                    return False
                await self.clock.sleep(0.1)

    async def run(self) -> None:
        """Renew or try the lease every ``ttl / 4`` until cancelled."""
        lease = self.lease
        while True:
            await self.clock.sleep(lease.ttl / 4)
            try:
                if self._is_active():
                    renewed = await lease.renew()
                    if renewed is False:
                        if lease.interrupted:
                            log.warning("the leader lease lapsed and another coordinator led meanwhile: restoring")
                        else:
                            holder = await lease.current_holder()
                            log.warning("lost the leader lease to %s: stepping down", holder or "another coordinator")
                        await self._deactivate()
                elif self.nc.is_connected and await lease.acquire():
                    log.warning("took the leader lease: taking over")
                    await self._activate()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS trouble: the next round tries again
                self._warn("lease", str(exc) or type(exc).__name__)
