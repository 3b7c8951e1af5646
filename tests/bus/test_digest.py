"""DigestPublisher against a real nats-server: the digest is dated by the injected clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from healthbus.bus import DigestPublisher, sync_subscriptions
from healthbus.protocol import Subjects, decode_state_digest
from healthbus.protocol.testing import ManualClock

pytestmark = pytest.mark.nats


async def test_the_digest_is_dated_by_the_publishers_clock(nc: Client) -> None:
    """``at`` is the clock's wall time; targets at seq 0 are left out."""
    clock = ManualClock(start=datetime(2026, 3, 1, 12, tzinfo=UTC))
    subjects = Subjects("hb")
    got: asyncio.Queue[Msg] = asyncio.Queue()
    await nc.subscribe(subjects.digest, cb=got.put)
    await sync_subscriptions(nc)
    publisher = DigestPublisher(nc, subjects, lambda: {"db": 4, "cache": 0}, interval=1.0, clock=clock)
    assert await publisher.publish()
    digest = decode_state_digest((await asyncio.wait_for(got.get(), 10)).data)
    assert (digest.at, digest.seqs) == (datetime(2026, 3, 1, 12, tzinfo=UTC), {"db": 4})
