"""HealthyRedis against a real redis-server: Redis while available, the local cache while not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from healthbus.bus.embedded import EmbeddedNats
from healthbus.protocol.testing import ManualClock
from healthbus.subscribers import BusStatus, HealthClient
from healthbus.subscribers.redis import HealthyRedis, LocalCache
from healthbus.subscribers.testing import FakeHealthClient
from tests.harness._redis import RedisServer

from ._events import Publisher

pytestmark = pytest.mark.redis


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A redis-py client that fails fast (no retries, short timeouts)."""
    # Timeouts far above any scheduling delay: a command timing out is the adapter's cue to trip to the
    # local cache (by design), and a 0.5 s timeout tripped it on a loaded machine (CI rehearsal).
    r = Redis.from_url(redis_server.url, socket_connect_timeout=10, socket_timeout=10, retry=Retry(NoBackoff(), 0))
    try:
        yield r
    finally:
        await r.aclose()


async def test_available_calls_go_to_redis_and_fill_the_cache(client: Redis) -> None:
    """While available, writes reach Redis and reads populate the local cache."""
    health = FakeHealthClient({"redis-main": "healthy"})
    cache = HealthyRedis(client, health)
    assert await cache.set("k", "v", ex=60)
    assert await client.get("k") == b"v"
    assert await cache.get("k") == b"v"
    assert await cache.hset("h", "f", 1) == 1
    assert await cache.hget("h", "f") == b"1"
    assert await cache.exists("k", "h", "nope") == 2
    assert await cache.expire("k", 30)
    assert 0 < await client.ttl("k") <= 30
    assert await cache.delete("k") == 1
    assert await client.exists("k") == 0
    assert cache.fallback_calls == 0
    assert cache.redis_calls == 7


async def test_unavailable_serves_the_cache_and_recovery_returns_to_redis(client: Redis) -> None:
    """Bus says unavailable: reads from cache, writes local only; healthy again: Redis, local writes dropped."""
    health = FakeHealthClient({"redis-main": "healthy"})
    cache = HealthyRedis(client, health)
    await cache.set("user:1", "alice")
    await cache.hset("session", mapping={"a": "1"})

    health.set_state("redis-main", "unavailable")
    assert cache.local
    assert await cache.get("user:1") == b"alice"  # hit, served locally
    assert await cache.get("user:2") is None  # miss
    assert await cache.hget("session", "a") == b"1"
    assert await cache.set("user:3", "carol", ex=60)
    assert await cache.set("user:3", "x", nx=True) is None  # NX honoured locally
    assert await cache.get("user:3") == b"carol"
    assert await cache.delete("user:1") == 1
    assert await cache.exists("user:1", "user:3") == 1
    assert await client.get("user:3") is None  # never written to Redis
    assert await client.get("user:1") == b"alice"  # local delete not propagated
    assert cache.metrics()["fallback_calls"] == 8
    assert (cache.hits, cache.misses) == (3, 1)  # user:1, session.a, user:3 found; user:2 not

    health.set_state("redis-main", "healthy")
    assert not cache.local
    assert await cache.get("user:3") is None  # from Redis: the local write is gone
    assert await cache.get("user:1") == b"alice"
    assert cache.fallback_calls == 8
    assert (cache.hits, cache.misses) == (3, 1)  # answered by Redis, not looked up locally


async def test_decode_responses_values_match_redis(redis_server: RedisServer) -> None:
    """With decode_responses=True, locally served values are str, as Redis would return them."""
    r = Redis.from_url(redis_server.url, decode_responses=True, retry=Retry(NoBackoff(), 0))
    try:
        health = FakeHealthClient({"redis-main": "unavailable"})
        cache = HealthyRedis(r, health)
        await cache.set("n", 42)
        assert await cache.get("n") == "42"
    finally:
        await r.aclose()


async def test_local_fast_trip_on_connection_error(client: Redis, redis_server: RedisServer) -> None:
    """Redis dies before the bus knows: the failing call is served locally, and the trip lasts the cool-down."""
    health = FakeHealthClient({"redis-main": "healthy"})
    cache = HealthyRedis(client, health, local_cooldown=5.0)  # on the fake's manual clock
    await cache.set("k", "v")
    redis_server.stop()

    assert await cache.get("k") == b"v"  # no exception: served from the cache
    assert cache.local_trips == 1
    assert cache.local
    assert await cache.get("k") == b"v"  # still local, no new attempt at Redis
    assert cache.local_trips == 1

    redis_server.start()
    health.clock.skip(4.999)
    assert cache.local  # not before the cool-down is over, by the health client's clock
    health.clock.skip(0.001)  # cool-down over: back to Redis
    assert not cache.local
    assert await cache.get("k") is None  # the fresh redis-server is empty: Redis answered
    assert cache.fallback_calls == 2


async def test_newer_available_verdict_ends_a_local_trip(client: Redis, redis_server: RedisServer) -> None:
    """A newer 'healthy' verdict from the bus ends the trip before the cool-down."""
    health = FakeHealthClient({"redis-main": "healthy"})
    cache = HealthyRedis(client, health, local_cooldown=3600, clock=ManualClock())
    redis_server.stop()
    assert await cache.get("k") is None
    assert cache.local
    health.set_state("redis-main", "degraded")  # same availability, but a newer verdict
    redis_server.start()
    assert not cache.local
    assert await cache.set("k", "v")
    assert await client.get("k") == b"v"


async def test_metrics_export_to_prometheus(client: Redis) -> None:
    """register_metrics exposes the counters in a CollectorRegistry."""
    health = FakeHealthClient({"redis-main": "unavailable"})
    cache = HealthyRedis(client, health, cache=LocalCache(max_entries=1))
    registry = CollectorRegistry()
    cache.register_metrics(registry)
    await cache.set("a", 1)
    await cache.set("b", 2)
    await cache.get("a")
    labels = {"target": "redis-main"}
    assert registry.get_sample_value("healthbus_redis_fallback_fallback_calls_total", labels) == 3
    assert registry.get_sample_value("healthbus_redis_fallback_evictions_total", labels) == 1
    assert registry.get_sample_value("healthbus_redis_fallback_misses_total", labels) == 1


@pytest.mark.nats
async def test_bus_verdict_flips_calls_to_cache_and_back(
    nats_server: EmbeddedNats, redis_server: RedisServer, client: Redis
) -> None:
    """End to end: a StateChanged on the real bus flips a service's Redis calls to the cache and back."""
    nc = await nats.connect(nats_server.url)
    pub = Publisher(nc.jetstream(), "hbredis")
    await pub.ensure()
    await pub.publish("redis-main", "healthy", features=["cache"])
    try:
        async with HealthClient.connect(nats_server.url, prefix="hbredis") as health:
            cache = HealthyRedis(client, health)
            await cache.set("greeting", "hello")
            assert cache.redis_calls == 1

            flipped = asyncio.Event()
            health.on_change(lambda ev: flipped.set() if ev.state == "unavailable" else None)
            redis_server.stop()
            await pub.publish("redis-main", "unavailable", retry_in=5, features=["cache"])
            await asyncio.wait_for(flipped.wait(), 5)
            # Decided: the very next call is local, no attempt at the dead Redis.
            assert cache.local
            assert await cache.get("greeting") == b"hello"
            assert cache.local_trips == 0
            assert not health.feature_available("cache")

            redis_server.start()
            await pub.publish("redis-main", "recovering", features=["cache"])
            await pub.publish("redis-main", "healthy", features=["cache"])
            await health.wait_for("redis-main", "healthy", timeout=5)
            assert not cache.local
            assert await cache.set("greeting", "again")
            assert await client.get("greeting") == b"again"
    finally:
        await nc.close()


@pytest.mark.nats
async def test_nats_outage_applies_policy_to_redis_calls(
    nats_server: EmbeddedNats, redis_server: RedisServer, client: Redis
) -> None:
    """NATS stopped: once stale, assume_unavailable sends calls to the cache; NATS back: to Redis again."""
    nc = await nats.connect(nats_server.url)
    pub = Publisher(nc.jetstream(), "hbredis2")
    await pub.ensure()
    await pub.publish("redis-main", "healthy")
    await nc.close()
    async with HealthClient.connect(
        nats_server.url, prefix="hbredis2", stale_after=0.2, on_bus_loss="assume_unavailable"
    ) as health:
        cache = HealthyRedis(client, health)
        await cache.set("k", "v")
        stale = asyncio.Event()
        fresh = asyncio.Event()

        def on_bus(status: BusStatus) -> None:
            if status.stale:
                stale.set()
            elif status.connected:
                fresh.set()

        health.on_bus_change(on_bus)
        await nats_server.astop()
        await asyncio.wait_for(stale.wait(), 10)
        assert cache.local
        assert await cache.get("k") == b"v"
        assert await client.get("k") == b"v"  # Redis itself was fine all along
        await nats_server.astart()
        await asyncio.wait_for(fresh.wait(), 30)
        assert not cache.local
        assert await cache.set("k", "w")
        assert await client.get("k") == b"w"
