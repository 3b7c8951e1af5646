"""The leader lease against a real nats-server: who may publish after a lapse."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client
from nats.js.errors import KeyDeletedError, KeyNotFoundError

from healthbus.coordinator._leader import LEASE_KEY, Lease

pytestmark = pytest.mark.nats


async def wait_expired(lease: Lease, timeout: float = 10.0) -> None:
    """Wait until the lease key has expired from the bucket."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await lease._kv.get(LEASE_KEY)
            except (KeyNotFoundError, KeyDeletedError):
                return
            await asyncio.sleep(0.05)  # polling the server for the expiry, not making time pass


async def test_lapsed_lease_retaken_after_another_leader_is_reported_lost(nc: Client) -> None:
    """A frozen leader whose key expired, then was taken and released by another, must step down, not renew."""
    js = nc.jetstream()
    a = Lease(js, "REVIEW_LEADER", holder="a", ttl=1.0)
    b = Lease(js, "REVIEW_LEADER", holder="b", ttl=1.0)
    await a.setup()
    await b.setup()
    assert await a.acquire()
    await wait_expired(a)  # a froze past its ttl
    assert await b.acquire()  # b led (and published from the stream's state) ...
    await b.release()  # ... then stopped
    assert await a.renew() is False  # a's decisions are stale: it must step down and restore
    assert not a.valid()  # and hold its events meanwhile
    assert await a.acquire()  # it holds the key: it can activate afresh
    assert a.valid()


async def test_lapsed_lease_nobody_else_took_is_renewed(nc: Client) -> None:
    """A leader whose key merely expired (NATS unreachable, nobody took over) renews and carries on."""
    js = nc.jetstream()
    a = Lease(js, "REVIEW_LEADER2", holder="a", ttl=1.0)
    await a.setup()
    assert await a.acquire()
    await wait_expired(a)
    assert await a.renew() is True
    assert a.valid()


async def test_start_rides_out_a_lease_bucket_without_a_leader_yet(nc: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """A just-created replicated bucket answering "no response from stream" at first does not fail start()."""
    from nats.js.errors import NoStreamResponseError

    from healthbus.coordinator import CoordinatorService
    from healthbus.protocol import load_config_text

    real_acquire = Lease.acquire
    failures = {"left": 2}

    async def acquire_after_election(self: Lease) -> bool:
        if failures["left"]:
            failures["left"] -= 1
            raise NoStreamResponseError  # what nats-py raises while the bucket elects its leader
        return await real_acquire(self)

    monkeypatch.setattr(Lease, "acquire", acquire_after_election)
    config = load_config_text(
        '[coordinator]\nlease = "2s"\n[[targets]]\nname = "db"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n'
    )
    service = CoordinatorService(config, nc, holder="a")
    try:
        await service.start()
        assert service.active
        assert failures["left"] == 0
    finally:
        await service.stop()
