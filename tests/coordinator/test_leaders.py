"""Reading who holds the leader leases (``healthbus status``, the dashboard) without a consumer.

:func:`~healthbus.coordinator.leaders` reads the lease bucket with one batched direct get;
a bucket an older coordinator made (no ``allow_direct``) is read key by key until a
coordinator of this version turns direct gets on. The shipped roles of deploy/ are
tested in tests/deploy/test_permissions.py.
"""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from nats.js.api import KeyValueConfig

from healthbus.bus import StoredMessage
from healthbus.coordinator import leaders
from healthbus.coordinator._leader import Lease, held_leases


def _stored(key: str, seq: int, value: bytes, operation: str | None = None) -> StoredMessage:
    headers = {"Nats-Subject": f"$KV.B_LEADER.{key}", "Nats-Sequence": str(seq)}
    if operation is not None:
        headers["KV-Operation"] = operation
    return StoredMessage(subject=f"$KV.B_LEADER.{key}", stream_seq=seq, data=value, headers=headers)


def test_deleted_and_purged_keys_are_not_held() -> None:
    """A key whose last message is a delete (a released lease) or purge marker is nobody's."""
    messages = [
        _stored("leader.0", 3, b"coord-a"),
        _stored("leader.1", 5, b"", "DEL"),
        _stored("leader.2", 6, b"", "PURGE"),
        _stored("leader", 7, b"coord-b"),
        _stored("leader.3", 8, b"stale", "DEL"),  # a marker with a body is still a marker
    ]
    assert held_leases(messages, "B_LEADER") == {"leader.0": ("coord-a", 3), "leader": ("coord-b", 7)}


async def _consumers(nc: Client, stream: str) -> int:
    return (await nc.jetstream().stream_info(stream)).state.consumer_count


@pytest.mark.nats
async def test_leaders_skips_released_and_purged_keys_on_a_real_server(nc: Client) -> None:
    """Held keys with their holder and revision; released (DEL) and purged (PURGE) ones are
    not listed; nothing creates a consumer."""
    js = nc.jetstream()
    a = Lease(js, "HELD_LEADER", holder="coord-a", ttl=30.0, key="leader.0")
    b = Lease(js, "HELD_LEADER", holder="coord-b", ttl=30.0, key="leader.1")
    c = Lease(js, "HELD_LEADER", holder="coord-c", ttl=30.0, key="leader.2")
    for lease in (a, b, c):
        await lease.setup()
        assert await lease.acquire()
    assert (await js.stream_info("KV_HELD_LEADER")).config.allow_direct  # created so
    assert await leaders(nc, "HELD_LEADER") == {
        "leader.0": ("coord-a", a.term),
        "leader.1": ("coord-b", b.term),
        "leader.2": ("coord-c", c.term),
    }
    await b.release()  # a delete marker
    await (await js.key_value("HELD_LEADER")).purge("leader.2")  # a purge marker
    assert await leaders(nc, "HELD_LEADER") == {"leader.0": ("coord-a", a.term)}
    assert await _consumers(nc, "KV_HELD_LEADER") == 0
    assert await leaders(nc, "NOSUCH_LEADER") == {}  # no bucket: no election


@pytest.mark.nats
async def test_a_bucket_without_direct_gets_reads_empty_until_a_coordinator_upgrades_it(nc: Client) -> None:
    """A lease bucket an older coordinator made has no allow_direct: leaders() reads it as
    empty (no consumer, no other API asked); the next Lease.setup turns direct gets on, and
    leaders() then reads every held key with one direct get."""
    js = nc.jetstream()
    old = await js.create_key_value(KeyValueConfig(bucket="OLD_LEADER", ttl=30.0, history=1))
    assert not (await js.stream_info("KV_OLD_LEADER")).config.allow_direct
    await old.put("leader.0", b"coord-a")
    revision = await old.put("leader.2", b"coord-b")
    await old.put("leader.1", b"coord-c")
    await old.delete("leader.1")
    assert await leaders(nc, "OLD_LEADER") == {}

    lease = Lease(js, "OLD_LEADER", holder="coord-a", ttl=30.0, key="leader.0")
    await lease.setup()  # an upgraded coordinator starts
    assert (await js.stream_info("KV_OLD_LEADER")).config.allow_direct
    assert await leaders(nc, "OLD_LEADER") == {"leader.0": ("coord-a", 1), "leader.2": ("coord-b", revision)}
    assert await _consumers(nc, "KV_OLD_LEADER") == 0
