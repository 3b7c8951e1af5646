"""The lease loop (``healthbus.coordinator._election.Election``) against a lease whose writes take a while."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from healthbus.coordinator._election import Election
from healthbus.coordinator._leader import LEASE_KEY
from healthbus.protocol.clock import SystemClock
from tests.helpers import wait_until


class _SlowLease:
    """A lease always granted; its second write answers only when ``release`` is set."""

    key = LEASE_KEY
    ttl = 0.2
    interrupted = False

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.acquires = 0
        self.renewals = 0

    async def acquire(self) -> bool:
        self.acquires += 1
        if self.acquires == 2:
            await self.release.wait()
        return True

    async def renew(self) -> bool:
        self.renewals += 1
        return True

    async def current_holder(self) -> str | None:
        return None


async def test_a_takeover_that_ends_during_a_lease_write_is_not_begun_again() -> None:
    """A standby takes the lease and begins its takeover; the loop's next write to the lease is
    still on its way when the takeover ends. Once it answers, the coordinator is active: no second
    takeover (it would restore over the live decisions; seen once in the 3-node host-loss test)."""
    lease = _SlowLease()
    active = False
    activations = 0
    restored = asyncio.Event()

    async def activate() -> None:
        nonlocal active, activations
        activations += 1
        await restored.wait()  # reading the stream, catching up
        active = True

    async def deactivate() -> None:
        nonlocal active
        active = False

    warnings: list[tuple[str, str]] = []
    election = Election(
        cast(Any, lease),
        cast(Any, SimpleNamespace(is_connected=True)),
        SystemClock(),
        is_active=lambda: active,
        activate=activate,
        deactivate=deactivate,
        warn=lambda what, text: warnings.append((what, text)),
    )
    loop = asyncio.create_task(election.run())
    try:
        await wait_until(lambda: activations == 1 and lease.acquires == 2, 5, "a takeover and a second write")
        restored.set()
        await wait_until(lambda: active and not election.activating, 5, "the takeover to end")
        renewed = lease.renewals  # 0: the loop is still in that write
        lease.release.set()  # the write answers after the takeover ended
        # The loop has taken the answer and gone on leading: two renewals since.
        await wait_until(lambda: lease.renewals >= renewed + 2, 5, "the loop to renew as the leader")
        assert activations == 1
        assert active
        assert warnings == []
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await election.stop()
