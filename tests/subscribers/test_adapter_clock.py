"""One clock per process: the adapters run on their health view's clock unless given one,
and every ``clock=`` takes a :class:`~healthbus.protocol.clock.Clock`, never a bare function."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis.asyncio
from sqlalchemy import create_engine

from healthbus.protocol.testing import ManualClock
from healthbus.subscribers import HealthClient
from healthbus.subscribers._guard import TargetGuard
from healthbus.subscribers.redis import HealthyRedis, LocalCache
from healthbus.subscribers.sqlalchemy import DatabaseGuard
from healthbus.subscribers.testing import FakeHealthClient


def test_a_guard_trips_for_its_cooldown_on_the_health_views_clock() -> None:
    """No clock given: the local trip lasts the cool-down by the FakeHealthClient's manual clock."""
    health = FakeHealthClient({"pg": "healthy"})
    guard = TargetGuard(health, "pg", local_cooldown=2.0)
    guard.trip.trip("refused", "connection refused", report=False)
    assert not guard.trip.usable()
    health.clock.skip(1.999)
    assert not guard.trip.usable()
    health.clock.skip(0.001)
    assert guard.trip.usable()


def test_a_clock_given_wins_over_the_health_views() -> None:
    """``clock=`` is the adapter's own: the health view's clock moving changes nothing."""
    health = FakeHealthClient({"pg": "healthy"})
    own = ManualClock()
    guard = TargetGuard(health, "pg", local_cooldown=2.0, clock=own)
    guard.trip.trip("refused", "connection refused", report=False)
    health.clock.skip(10.0)
    assert not guard.trip.usable()
    own.skip(2.0)
    assert guard.trip.usable()


async def test_healthy_redis_default_cache_shares_the_clock() -> None:
    """The cache HealthyRedis makes for itself expires entries by the same clock as its trip."""
    health = FakeHealthClient({"redis-main": "unavailable"})
    client = redis.asyncio.Redis(port=1)  # never reached: the target is unavailable
    try:
        adapter = HealthyRedis(client, health)
        assert adapter.clock is health.clock
        await adapter.set("k", "v", ex=5)
        assert await adapter.get("k") == b"v"
        health.clock.skip(5.0)
        assert await adapter.get("k") is None
    finally:
        await client.aclose()


async def test_the_clients_failure_reports_are_dated_by_its_clock() -> None:
    """HealthClient(clock=...) rate-limits and dates its failure reports on that clock."""
    clock = ManualClock(start=datetime(2026, 1, 1, tzinfo=UTC))
    client = HealthClient(clock=clock)
    report = client.reporter.build("pg", "refused", None)
    assert report is not None
    assert report.at == datetime(2026, 1, 1, tzinfo=UTC)


async def test_every_public_clock_parameter_refuses_a_bare_function() -> None:
    """A monotonic function where a Clock is expected: a TypeError naming the parameter and the way out."""
    health = FakeHealthClient()
    client = redis.asyncio.Redis(port=1)
    engine = create_engine("sqlite://")
    try:
        cases: list[tuple[str, Callable[[], object]]] = [
            ("LocalCache", lambda: LocalCache(clock=time.monotonic)),  # type: ignore[arg-type]
            ("HealthClient", lambda: HealthClient(clock=time.monotonic)),  # type: ignore[arg-type]
            ("HealthyRedis", lambda: HealthyRedis(client, health, clock=time.monotonic)),  # type: ignore[arg-type]
            ("DatabaseGuard", lambda: DatabaseGuard(engine, health, clock=time.monotonic)),  # type: ignore[arg-type]
        ]
        for name, make in cases:
            with pytest.raises(TypeError, match=rf"^{name}\(clock=\.\.\.\) expects .*bare function"):
                make()
    finally:
        await client.aclose()
        engine.dispose()
