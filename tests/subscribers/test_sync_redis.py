"""SyncHealthyRedis against a real redis-server: the same answers as HealthyRedis, call for call."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

from healthbus.bus.embedded import EmbeddedNats
from healthbus.subscribers import SyncHealthClient
from healthbus.subscribers.redis import HealthyRedis, SyncHealthyRedis
from healthbus.subscribers.testing import FakeHealthClient
from tests.harness._redis import RedisServer
from tests.helpers import open_event, state_changed

from ._sync_support import publish

pytestmark = pytest.mark.redis


Step = tuple[str, tuple[Any, ...], dict[str, Any]]

#: Every wrapped command with good and refused arguments, through Redis and then locally.
COMMANDS: list[Step] = [
    ("set", ("k", "v"), {"ex": 60}),
    ("set", ("k", "w"), {"nx": True}),
    ("set", ("n", 5), {"px": timedelta(seconds=30)}),
    ("set", ("k", "v"), {"ex": 1, "px": 1}),
    ("get", ("k",), {}),
    ("get", ("missing",), {}),
    ("hset", ("h", "f", 1), {}),
    ("hset", ("h",), {"mapping": {"g": "x"}, "items": ["i", 2]}),
    ("hset", ("h",), {"items": ["odd"]}),
    ("hset", ("h",), {}),
    ("hget", ("h", "f"), {}),
    ("hget", ("h", "nope"), {}),
    ("exists", ("k", "h", "missing"), {}),
    ("expire", ("k", 30), {}),
    ("expire", ("k", 30), {"nx": True, "xx": True}),
    ("expire", ("missing", 30), {}),
    ("delete", ("n", "missing"), {}),
    ("get", ("n",), {}),
]


def script(set_state: Callable[[str], None], server: RedisServer) -> list[tuple[str, Any]]:
    """What to do: commands while available, an outage seen first here (local trip), then the bus verdict."""
    steps: list[tuple[str, Any]] = [("call", step) for step in COMMANDS]
    steps.append(("do", server.stop))  # Redis dies; the bus does not know yet: a local trip
    steps += [("call", ("get", ("k",), {})), ("call", ("set", ("local", "1"), {}))]
    steps.append(("do", lambda: set_state("unavailable")))
    steps += [("call", step) for step in COMMANDS]
    steps.append(("do", server.start))
    steps.append(("do", lambda: set_state("healthy")))
    steps += [("call", ("get", ("local",), {})), ("call", ("get", ("k",), {})), ("call", ("exists", ("local",), {}))]
    return steps


def outcome(call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return ("ok", call(*args, **kwargs))
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


async def run_async(server: RedisServer) -> tuple[list[Any], dict[str, int]]:
    client = redis.asyncio.Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    health = FakeHealthClient({"redis-main": "healthy"})
    cache = HealthyRedis(client, health)
    answers: list[Any] = []
    try:
        for kind, item in script(lambda s: health.set_state("redis-main", s), server):  # type: ignore[arg-type]
            if kind == "do":
                item()
                continue
            name, args, kwargs = item
            try:
                answers.append(("ok", await getattr(cache, name)(*args, **kwargs)))
            except Exception as exc:
                answers.append(("raised", type(exc).__name__, str(exc)))
        await client.flushdb()
    finally:
        await client.aclose()
    return answers, cache.metrics()


def run_sync(server: RedisServer) -> tuple[list[Any], dict[str, int]]:
    client = redis.Redis.from_url(
        server.url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=SyncRetry(NoBackoff(), 0)
    )
    health = FakeHealthClient({"redis-main": "healthy"})
    cache = SyncHealthyRedis(client, health)
    answers: list[Any] = []
    try:
        for kind, item in script(lambda s: health.set_state("redis-main", s), server):  # type: ignore[arg-type]
            if kind == "do":
                item()
                continue
            name, args, kwargs = item
            answers.append(outcome(getattr(cache, name), args, kwargs))
        client.flushdb()
    finally:
        client.close()
    return answers, cache.metrics()


async def test_sync_and_async_adapters_answer_alike(redis_server: RedisServer) -> None:
    """One script (every command, refused arguments, a local trip, a bus verdict, recovery) on both faces:
    the same return values, the same errors and the same counters."""
    async_answers, async_metrics = await run_async(redis_server)
    sync_answers, sync_metrics = run_sync(redis_server)
    assert sync_answers == async_answers
    assert sync_metrics == async_metrics
    assert sync_metrics["local_trips"] == 1
    # Three commands are refused before any call (ex with px, odd items, no fields); the two
    # calls of the local trip and the rest of the commands while unavailable were served locally.
    assert sync_metrics["fallback_calls"] == len(COMMANDS) - 3 + 2
    # Back on Redis (restarted empty): the key written locally during the outage is not served.
    assert sync_answers[-3:] == [("ok", None), ("ok", None), ("ok", 0)]


def test_both_faces_expose_the_same_commands() -> None:
    """The sync face wraps exactly the async face's commands, with the same signatures."""
    public = {n for n in dir(HealthyRedis) if not n.startswith("_")}
    assert public == {n for n in dir(SyncHealthyRedis) if not n.startswith("_")}
    for name in ("get", "set", "delete", "exists", "expire", "hget", "hset"):
        assert inspect.iscoroutinefunction(getattr(HealthyRedis, name))
        assert not inspect.iscoroutinefunction(getattr(SyncHealthyRedis, name))
        assert inspect.signature(getattr(HealthyRedis, name)) == inspect.signature(getattr(SyncHealthyRedis, name))


@pytest.mark.nats
def test_sync_adapter_with_the_sync_client(redis_server: RedisServer, nats_server: EmbeddedNats) -> None:
    """SyncHealthClient + SyncHealthyRedis: a verdict on the bus sends calls to the cache and back."""
    prefix = "hbsyncredis"
    publish(nats_server.url, prefix, state_changed("redis-main", 1, "healthy"))
    client = redis.Redis.from_url(redis_server.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    with SyncHealthClient.connect(nats_server.url, prefix=prefix, connect_timeout=10) as health:
        cache = SyncHealthyRedis(client, health)
        assert cache.set("k", "v")
        assert cache.get("k") == b"v"
        redis_server.stop()
        publish(nats_server.url, prefix, open_event("redis-main", 2, retry_in=5))
        health.wait_for("redis-main", "unavailable", timeout=10)
        assert cache.local
        assert cache.get("k") == b"v"
        assert cache.local_trips == 0  # the verdict came before any call failed here
        redis_server.start()
        publish(nats_server.url, prefix, state_changed("redis-main", 3, "healthy"))
        health.wait_for("redis-main", "healthy", timeout=10)
        assert cache.set("k", "again")
        assert client.get("k") == b"again"
    client.close()
