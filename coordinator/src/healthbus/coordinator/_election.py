"""Leader election around a :class:`~._leader.Lease`: when to take over, when to step down.

While leading, the lease is renewed every ``ttl / 4`` (every :data:`TAKEOVER_POLL` after a
failed renewal); while standing by, it is tried every :data:`TAKEOVER_POLL` (or
``ttl / 4`` if shorter). Losing it (another coordinator
holds it, or held it meanwhile) steps down; taking it activates. NATS trouble is logged and retried on the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.js.errors import NoStreamResponseError

from healthbus.bus import raise_if_cancelled
from healthbus.coordinator._leader import LEASE_KEY, Lease
from healthbus.protocol.clock import Clock

log = logging.getLogger("healthbus.coordinator")

#: Seconds between a standby's attempts to take the lease. An attempt is one small
#: key-value write; trying often takes over soon after the key expired.
TAKEOVER_POLL: Final = 0.25


def _which(lease: Lease) -> str:
    """`` (leader.<p>)`` for a partition's lease in log lines, nothing for the single one."""
    return "" if lease.key == LEASE_KEY else f" ({lease.key})"


class Election:
    """Keeps one coordinator's leadership in step with its lease."""

    def __init__(
        self,
        lease: Lease,
        nc: Client,
        clock: Clock,
        *,
        is_active: Callable[[], bool],
        activate: Callable[[], Coroutine[Any, Any, None]],
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
        self._activation: asyncio.Task[None] | None = None

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

    @property
    def activating(self) -> bool:
        """A takeover (restore and catch-up) is in progress."""
        return self._activation is not None and not self._activation.done()

    async def take_over(self) -> None:
        """Activate (once at a time) and wait for it; the lease loop keeps renewing meanwhile."""
        if not self.activating:
            self._activation = asyncio.create_task(self._activate(), name="healthbus-coordinator-takeover")
        assert self._activation is not None
        await asyncio.shield(self._activation)

    async def stop(self) -> None:
        """Cancel a takeover in progress."""
        task = self._activation
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def run(self) -> None:
        """Renew the lease every ``ttl / 4``, or try to take it every :data:`TAKEOVER_POLL`
        at most (sooner for a short ttl), until cancelled.

        A takeover runs beside this loop, not in it: reading the stream may take a while
        (a stream electing its leader), and the lease must be renewed meanwhile, or it
        would lapse before the new leader decided anything. While it runs, taking the
        lease (which this coordinator holds) renews it.
        """
        lease = self.lease
        renewed: bool | None = True
        while True:
            # A leader whose last renewal failed (NATS or the bucket unreachable) tries as
            # often as a standby would: once the bucket answers again it must not lose
            # the race for an expired key to a standby and hand over for nothing.
            steady = self._is_active() and renewed is not None
            raise_if_cancelled()  # a cancel racing the key-value write's reply is lost (bus._tasks)
            await self.clock.sleep(lease.ttl / 4 if steady else min(lease.ttl / 4, TAKEOVER_POLL))
            renewed = True
            try:
                self._check_takeover()
                if self._is_active():
                    renewed = await lease.renew()
                    if renewed is False:
                        if lease.interrupted:
                            log.warning(
                                "the leader lease%s lapsed and another coordinator led meanwhile: restoring",
                                _which(lease),
                            )
                        else:
                            holder = await lease.current_holder()
                            log.warning(
                                "lost the leader lease%s to %s: stepping down",
                                _which(lease),
                                holder or "another coordinator",
                            )
                        await self._deactivate()
                elif self.nc.is_connected:
                    if await lease.acquire():
                        # The write is a round trip: a takeover begun before it may have ended
                        # meanwhile, this coordinator active again. A second one would restore
                        # over its live decisions (and replace its outbox with them in it).
                        if not self.activating and not self._is_active():
                            log.warning("took the leader lease%s: taking over", _which(lease))
                            self._activation = asyncio.create_task(
                                self._activate(), name="healthbus-coordinator-takeover"
                            )
                    elif self.activating:
                        log.warning("lost the leader lease%s while taking over: standing by", _which(lease))
                        await self.stop()
                        await self._deactivate()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS trouble: the next round tries again
                self._warn("lease", str(exc) or type(exc).__name__)

    def _check_takeover(self) -> None:
        task = self._activation
        if task is not None and task.done():
            self._activation = None
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                self._warn("takeover", f"failed, trying again: {exc or type(exc).__name__}")
