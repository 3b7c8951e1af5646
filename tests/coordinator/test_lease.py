"""The leader lease against a real nats-server: who may publish after a lapse.

Each holder's validity runs on a :class:`~healthbus.protocol.testing.ManualClock`: a test
says how much time a holder saw pass. The key's expiry in the bucket is the server's
(real seconds): waited for as a condition the server reports, through the public
:meth:`Lease.current_holder`.
"""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from healthbus.coordinator._leader import VALID_SHARE, Lease
from healthbus.protocol.testing import ManualClock
from tests.helpers import wait_until

pytestmark = pytest.mark.nats


async def wait_expired(lease: Lease, timeout: float = 10.0) -> None:
    """Wait until the server has dropped the expired lease key: nobody holds it."""

    holders: list[object] = []

    async def nobody() -> bool:
        holders.append(await lease.current_holder())
        return holders[-1] is None

    await wait_until(nobody, timeout, "the lease key to expire on the server", seen=lambda: holders[-1:])


async def test_validity_ends_before_the_key_can_expire(nc: Client) -> None:
    """A holder may publish until ``VALID_SHARE × ttl`` after its last renewal, by its own clock."""
    clock = ManualClock()
    a = Lease(nc.jetstream(), "VALIDITY_LEADER", holder="a", ttl=10.0, clock=clock)
    await a.setup()
    assert not a.valid()
    assert await a.acquire()
    assert await a.current_holder() == "a"
    clock.skip(VALID_SHARE * 10.0 - 0.01)
    assert a.valid()
    clock.skip(0.01)
    assert not a.valid()  # well before the server expires the key (ttl 10 s)
    assert await a.renew() is True
    assert a.valid()
    await a.release()
    assert not a.valid()
    assert await a.current_holder() is None


async def test_lapsed_lease_retaken_after_another_leader_is_reported_lost(nc: Client) -> None:
    """A frozen leader whose key expired, then was taken and released by another, must step down, not renew."""
    js = nc.jetstream()
    clock = ManualClock()
    a = Lease(js, "REVIEW_LEADER", holder="a", ttl=1.0, clock=clock)
    b = Lease(js, "REVIEW_LEADER", holder="b", ttl=1.0)
    await a.setup()
    await b.setup()
    assert await a.acquire()
    clock.skip(5.0)  # a froze past its ttl ...
    assert not a.valid()
    await wait_expired(a)  # ... and the server expired its key
    assert await b.acquire()  # b led (and published from the stream's state) ...
    await b.release()  # ... then stopped
    assert await a.renew() is False  # a's decisions are stale: it must step down and restore
    assert not a.valid()  # and hold its events meanwhile
    assert await a.acquire()  # it holds the key: it can activate afresh
    assert a.valid()


async def test_lapsed_lease_nobody_else_took_is_renewed(nc: Client) -> None:
    """A leader whose key merely expired (NATS unreachable, nobody took over) renews and carries on."""
    js = nc.jetstream()
    clock = ManualClock()
    a = Lease(js, "REVIEW_LEADER2", holder="a", ttl=1.0, clock=clock)
    await a.setup()
    assert await a.acquire()
    clock.skip(5.0)
    await wait_expired(a)
    assert not a.valid()
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
        '[coordinator]\nlease_ttl = "2s"\n[[targets]]\nname = "db"\nkind = "tcp"\nurl = "tcp://127.0.0.1:1"\n'
    )
    service = CoordinatorService(config, nc, holder="a")
    try:
        await service.start()
        assert service.active
        assert failures["left"] == 0
    finally:
        await service.stop()
