"""With the real coordinator: ProbeResults in, a service's HealthClient and Redis adapter flip out and back."""

from __future__ import annotations

import time

import pytest
from nats.aio.client import Client
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from healthbus.bus.embedded import EmbeddedNats
from healthbus.coordinator import CoordinatorService
from healthbus.protocol import Outcome, load_config_text
from healthbus.protocol.testing import ManualClock
from healthbus.subscribers import HealthClient
from healthbus.subscribers.redis import HealthyRedis
from tests.harness._redis import RedisServer
from tests.helpers import probe_result, publish_probe

pytestmark = [pytest.mark.nats, pytest.mark.redis]

PREFIX = "hbcoord"
CONFIG = f"""
[bus]
prefix = "{PREFIX}"

[defaults]
interval = "1s"
timeout = "500ms"
failure_threshold = 2
success_threshold = 2
stale_after = "30s"
backoff = {{ base = "300ms", multiplier = 2.0, max = "2s", jitter = "none" }}
trial_interval = "300ms"
ramp = {{ duration = "0s" }}
flap = {{ enabled = false }}

[coordinator]
tick = "50ms"

[[targets]]
name = "redis-main"
kind = "redis"
url = "redis://127.0.0.1:1/0"
features = ["cache"]
"""


async def probe(nc: Client, outcome: Outcome) -> None:
    """Publish one ProbeResult for redis-main, as a probe worker would."""
    await publish_probe(nc, PREFIX, probe_result("redis-main", outcome))


async def test_real_coordinator_flips_redis_calls_to_cache_and_back(
    nats_server: EmbeddedNats, nc: Client, redis_server: RedisServer
) -> None:
    """Coordinator decides from ProbeResults; within that decision the service's calls go local, then back."""
    client = Redis.from_url(
        redis_server.url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 1)
    )
    clock = ManualClock()  # the coordinator's: retry_at comes when the test says (no lease to renew)
    async with (
        CoordinatorService(load_config_text(CONFIG), nc, clock=clock, lease_ttl=0),
        HealthClient.connect(nats_server.url, prefix=PREFIX) as health,
    ):
        cache = HealthyRedis(client, health)
        for _ in range(2):
            await probe(nc, "pass")
        await health.wait_for("redis-main", "healthy", timeout=10)
        await cache.set("k", "v")
        assert await client.get("k") == b"v"

        redis_server.stop()
        started = time.monotonic()
        for _ in range(2):
            await probe(nc, "fail")
        down = await health.wait_for("redis-main", "unavailable", timeout=10)
        decided_in = time.monotonic() - started
        assert down.retry_at is not None
        assert cache.local
        assert await cache.get("k") == b"v"
        assert cache.local_trips == 0  # the bus decided before any call failed here
        assert not health.feature_available("cache")

        redis_server.start()
        await clock.advance((down.retry_at - down.at).total_seconds())  # results are trials from then on
        for _ in range(2):
            await probe(nc, "pass")
        await health.wait_for("redis-main", "healthy", timeout=10)
        assert not cache.local
        assert await cache.set("k", "w")
        assert await client.get("k") == b"w"
    await client.aclose()
    print(f"decision latency (2 failing results -> unavailable at the client): {decided_in * 1000:.1f} ms")
