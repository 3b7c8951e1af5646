"""The Redis adapter's local mode answers like redis-py for the same commands from the same start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from healthbus.subscribers.redis import HealthyRedis
from healthbus.subscribers.testing import FakeHealthClient
from tests.harness._redis import RedisServer

pytestmark = pytest.mark.redis

# Each script runs from an empty keyspace; every step's return value must be the same on
# Redis and in local mode (where the cache is the whole world).
SCRIPTS: dict[str, list[tuple[str, tuple[Any, ...], dict[str, Any]]]] = {
    "set_nx_xx": [
        ("set", ("k", "v1"), {"xx": True}),
        ("set", ("k", "v1"), {"nx": True}),
        ("set", ("k", "v2"), {"nx": True}),
        ("get", ("k",), {}),
        ("set", ("k", "v3"), {"xx": True}),
        ("get", ("k",), {}),
    ],
    "keepttl": [
        ("set", ("k", "v"), {"ex": 100}),
        ("set", ("k", "w"), {"keepttl": True}),
        ("expire", ("k", 200), {"gt": True}),
        ("expire", ("k", 50), {"gt": True}),
        ("expire", ("k", 50), {"lt": True}),
        ("expire", ("k", 60), {"nx": True}),
        ("expire", ("k", 60), {"xx": True}),
        ("get", ("k",), {}),
    ],
    "no_ttl_conditions": [
        ("set", ("k", "v"), {}),
        ("expire", ("k", 10), {"xx": True}),
        ("expire", ("k", 10), {"gt": True}),
        ("expire", ("k", 10), {"lt": True}),
        ("set", ("j", "v"), {}),
        ("expire", ("j", 10), {"nx": True}),
        ("expire", ("j", timedelta(seconds=20)), {}),
    ],
    "missing_keys": [
        ("get", ("nope",), {}),
        ("expire", ("nope", 10), {}),
        ("delete", ("nope",), {}),
        ("exists", ("nope",), {}),
        ("hget", ("nope", "f"), {}),
    ],
    "duplicates": [
        ("set", ("a", "1"), {}),
        ("set", ("b", 2), {"px": 100_000}),
        ("exists", ("a", "a", "b", "c"), {}),
        ("delete", ("a", "a", "c"), {}),
        ("exists", ("a", "b"), {}),
        ("get", ("b",), {}),
    ],
    "expire_to_zero_deletes": [
        ("set", ("k", "v"), {}),
        ("expire", ("k", 0), {}),
        ("get", ("k",), {}),
        ("exists", ("k",), {}),
    ],
    "hashes": [
        ("hset", ("h", "f1", "a"), {}),
        ("hset", ("h", "f1", "b"), {}),
        ("hset", ("h",), {"mapping": {"f1": "c", "f2": 1, "f3": 2.5}}),
        ("hset", ("h",), {"items": ["f3", "x", "f4", "y"]}),
        ("hget", ("h", "f1"), {}),
        ("hget", ("h", "f3"), {}),
        ("hget", ("h", "zz"), {}),
        ("exists", ("h",), {}),
        ("delete", ("h",), {}),
        ("hget", ("h", "f1"), {}),
    ],
}


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A fail-fast redis-py client on a fresh database."""
    r = Redis.from_url(redis_server.url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
    await r.flushdb()
    try:
        yield r
    finally:
        await r.aclose()


async def _run(adapter: HealthyRedis, script: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
    return [await getattr(adapter, name)(*args, **kwargs) for name, args, kwargs in script]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
async def test_local_mode_answers_like_redis(client: Redis, script: str) -> None:
    """Return values of SET NX/XX/KEEPTTL, EXPIRE NX/XX/GT/LT, DEL, EXISTS, HSET, HGET match redis-py."""
    remote = HealthyRedis(client, FakeHealthClient({"redis-main": "healthy"}))
    local = HealthyRedis(client, FakeHealthClient({"redis-main": "unavailable"}))
    expected = await _run(remote, SCRIPTS[script])
    assert remote.fallback_calls == 0
    got = await _run(local, SCRIPTS[script])
    assert local.redis_calls == 0
    assert got == expected


BAD_CALLS: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = {
    "set_ex_and_px": ("set", ("k", "v"), {"ex": 10, "px": 100}),
    "set_ex_and_keepttl": ("set", ("k", "v"), {"ex": 10, "keepttl": True}),
    "set_nx_and_xx": ("set", ("k", "v"), {"nx": True, "xx": True}),
    "set_float_ex": ("set", ("k", "v"), {"ex": 1.5}),
    "set_word_ex": ("set", ("k", "v"), {"ex": "soon"}),
    "set_zero_ex": ("set", ("k", "v"), {"ex": 0}),
    "set_negative_px": ("set", ("k", "v"), {"px": -5}),
    "hset_nothing": ("hset", ("h",), {}),
    "hset_odd_items": ("hset", ("h",), {"items": ["a", "1", "b"]}),
    "expire_float": ("expire", ("k", 1.5), {}),
    "expire_nx_xx": ("expire", ("k", 10), {"nx": True, "xx": True}),
    "expire_gt_lt": ("expire", ("k", 10), {"gt": True, "lt": True}),
    "delete_nothing": ("delete", (), {}),
    "exists_nothing": ("exists", (), {}),
}


async def _error_of(target: Any, call: tuple[str, tuple[Any, ...], dict[str, Any]]) -> type[BaseException] | None:
    name, args, kwargs = call
    try:
        await getattr(target, name)(*args, **kwargs)
    except Exception as exc:
        return type(exc)
    return None


@pytest.mark.parametrize("call", sorted(BAD_CALLS))
async def test_local_mode_refuses_what_redis_refuses(client: Redis, call: str) -> None:
    """A call plain redis-py (or the server) refuses raises the same exception type, with Redis up or down."""
    await client.set("k", "v")
    expected = await _error_of(client, BAD_CALLS[call])
    assert expected is not None
    health = FakeHealthClient({"redis-main": "healthy"})
    adapter = HealthyRedis(client, health)
    assert await _error_of(adapter, BAD_CALLS[call]) is expected
    await adapter.get("k")  # known locally, as if read before the outage
    health.set_state("redis-main", "unavailable")
    assert await _error_of(adapter, BAD_CALLS[call]) is expected
