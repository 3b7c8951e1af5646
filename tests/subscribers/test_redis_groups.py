"""HealthyRedisGroup on three real redis-servers: reads spread by pick(), fail-over on a
connection error, the local cache only with no member usable, writes to the primary."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from healthbus.subscribers.redis import HealthyRedisGroup
from healthbus.subscribers.testing import FakeHealthClient
from tests.harness import RedisServer

pytestmark = pytest.mark.redis

MEMBERS = ("r-a", "r-b", "r-c")


@pytest.fixture
async def group(
    redis_server_factory: Callable[..., RedisServer],
) -> AsyncIterator[tuple[HealthyRedisGroup, FakeHealthClient, dict[str, RedisServer]]]:
    """Each server holds ``whoami`` = its member name; the group's primary is r-a."""
    servers = {m: redis_server_factory() for m in MEMBERS}
    clients = {
        m: Redis.from_url(s.url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
        for m, s in servers.items()
    }
    for member, client in clients.items():
        await client.set("whoami", member)
    health = FakeHealthClient(dict.fromkeys(MEMBERS, "healthy"))
    health.set_group("rg", MEMBERS, primary="r-a")
    try:
        yield HealthyRedisGroup(clients, health, "rg", primary="r-a", local_cooldown=60), health, servers
    finally:
        for client in clients.values():
            await client.aclose()


async def reads(routed: HealthyRedisGroup, n: int = 20) -> Counter[str]:
    return Counter([(await routed.get("whoami")).decode() for _ in range(n)])


async def test_reads_spread_and_writes_go_to_the_primary(group: Any) -> None:
    routed, health, _servers = group
    assert await reads(routed) == {"r-b": 10, "r-c": 10}
    await routed.set("k", "v")
    assert await routed.members["r-a"].redis.get("k") == b"v"
    assert await routed.members["r-b"].redis.get("k") is None
    health.set_group("rg", MEMBERS, primary="r-a", reads_on_primary=True, policy="weighted", weights={"r-a": 2})
    assert await reads(routed, 40) == {"r-a": 20, "r-b": 10, "r-c": 10}


async def test_a_member_stopped_fails_over_then_all_down_uses_the_cache(group: Any) -> None:
    routed, health, servers = group
    servers["r-b"].stop()
    # Before any verdict: the read that meets the dead member is answered by the next one.
    assert await reads(routed) == {"r-c": 20}
    assert routed.failovers == 1
    assert routed.metrics()["r-b"]["local_trips"] == 1
    health.set_state("r-b", "unavailable")
    assert await reads(routed) == {"r-c": 20}
    servers["r-c"].stop()
    health.set_state("r-c", "unavailable")
    # no replica left: the local cache answers with what this process last read
    assert await routed.get("whoami") == b"r-c"
    # the read that met the dead r-b (then answered by r-c) and this one
    assert sum(m["fallback_calls"] for m in routed.metrics().values()) == 2
    assert routed.metrics()["r-a"]["redis_calls"] == 0  # never a read on the primary
    servers["r-b"].start()  # an empty server again (no persistence): seed it as before
    await routed.members["r-b"].redis.set("whoami", "r-b")
    health.set_state("r-b", "healthy")
    assert await reads(routed) == {"r-b": 20}
