"""HealthClient against a real nats-server: load, live updates, ordering, bus loss and recovery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import nats
import pytest

from healthbus.bus.embedded import EmbeddedNats
from healthbus.protocol import StateChanged, encode
from healthbus.protocol.testing import ManualClock
from healthbus.subscribers import BusStatus, HealthClient, HealthView
from tests.helpers import state_changed

from ._events import Publisher

pytestmark = pytest.mark.nats

PREFIX = "hbtest"


@pytest.fixture
async def publisher(nats_server: EmbeddedNats) -> AsyncIterator[Publisher]:
    """A coordinator stand-in: a connection publishing StateChanged into the state stream."""
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    pub = Publisher(nc.jetstream(), PREFIX)
    await pub.ensure()
    try:
        yield pub
    finally:
        await nc.close()


async def wait_bus(health: HealthClient, *, connected: bool, stale: bool | None = None, timeout: float = 10) -> None:
    """Wait (on bus notifications) until the client's bus status matches."""
    changed = asyncio.Event()
    unsubscribe = health.on_bus_change(lambda _status: changed.set())

    def matches() -> bool:
        bus = health.bus
        return bus.connected == connected and (stale is None or bus.stale == stale)

    try:
        async with asyncio.timeout(timeout):
            while not matches():
                changed.clear()
                await changed.wait()
    finally:
        unsubscribe()


async def test_connect_loads_current_states_then_follows_live(nats_server: EmbeddedNats, publisher: Publisher) -> None:
    """After connect every target's latest state is there; later events arrive, state first, then callback."""
    await publisher.publish("redis-main", "healthy", features=["cache"])
    await publisher.publish("redis-main", "unavailable", features=["cache"], retry_in=30)
    await publisher.publish("postgres-main", "degraded")
    async with HealthClient.connect(nats_server.url, prefix=PREFIX) as health:
        assert isinstance(health, HealthView)
        state = health.state("redis-main")
        assert state is not None
        assert (state.seq, state.state, state.breaker) == (2, "unavailable", "open")
        assert state.retry_at is not None
        assert not state.stale
        assert not health.is_available("redis-main")
        assert not health.feature_available("cache")
        assert health.is_available("postgres-main")  # degraded is usable
        assert health.bus.connected

        seen: list[tuple[int, bool]] = []
        got = asyncio.Event()

        def callback(ev: StateChanged) -> None:
            seen.append((ev.seq, health.is_available("redis-main")))
            got.set()

        health.on_change(callback)
        await publisher.publish("redis-main", "healthy", features=["cache"])
        await asyncio.wait_for(got.wait(), 5)
        assert seen == [(3, True)]
        assert health.feature_available("cache")


async def test_awaitable_connect_and_close(nats_server: EmbeddedNats, publisher: Publisher) -> None:
    """``health = await HealthClient.connect(...)`` works; close() closes the connection it opened, ends
    ``changes()`` iterators, and is idempotent (a closed client stays closed)."""
    await publisher.publish("pg", "healthy")
    health = await HealthClient.connect(nats_server.url, prefix=PREFIX)
    changes = health.changes()
    try:
        assert health.is_available("pg")
    finally:
        await health.close()
    nc = health.nc
    assert nc is not None
    assert nc.is_closed
    async with asyncio.timeout(5):
        assert [event async for event in changes] == []  # ended by close(), not left waiting
    await health.close()  # a second close is a no-op, not an error
    assert await health.start() is health  # nor does start() connect a closed client again
    assert health.nc is nc
    assert nc.is_closed


async def test_duplicate_and_older_events_are_ignored(nats_server: EmbeddedNats, publisher: Publisher) -> None:
    """Events with a seq not above the known one never change state nor reach callbacks."""
    await publisher.publish("pg", "healthy")
    await publisher.publish("pg", "unavailable")
    async with HealthClient.connect(nats_server.url, prefix=PREFIX) as health:
        received: list[int] = []
        health.on_change(lambda ev: received.append(ev.seq))
        # An old event re-sent under a new msg id (JetStream will not drop it): must be ignored.
        old = state_changed("pg", 1, "healthy")
        await publisher.js.publish("hbtest.state.pg", encode(old))
        newer = state_changed("pg", 3, "recovering")
        await publisher.publish_event(newer)
        await health.wait_for("pg", "recovering", timeout=5)
        assert received == [3]
        assert not health.is_available("pg")


async def test_wait_for_and_changes_with_real_bus(nats_server: EmbeddedNats, publisher: Publisher) -> None:
    """changes() yields live events and wait_for wakes up on them."""
    async with HealthClient.connect(nats_server.url, prefix=PREFIX) as health:
        assert health.state("pg") is None
        events: list[StateChanged] = []

        async def consume() -> None:
            async for ev in changes:
                events.append(ev)
                if ev.state == "healthy":
                    return

        changes = health.changes()
        task = asyncio.create_task(consume())
        await publisher.publish("pg", "unavailable")
        await publisher.publish("pg", "healthy")
        state = await health.wait_for("pg", "healthy", timeout=5)
        await asyncio.wait_for(task, 5)
        assert state.seq == 2
        assert [e.state for e in events] == ["unavailable", "healthy"]


async def test_connect_with_nats_down_returns_fast_and_catches_up_later(nats_server: EmbeddedNats) -> None:
    """With NATS down, connect returns within about connect_timeout, the policy applies, and states load later."""
    nc = await nats.connect(nats_server.url)
    pub = Publisher(nc.jetstream(), PREFIX)
    await pub.ensure()
    await pub.publish("redis-main", "unavailable")
    await nc.close()
    await nats_server.astop()

    started = time.monotonic()
    health = await HealthClient.connect(
        nats_server.url, prefix=PREFIX, connect_timeout=1.0, on_bus_loss="assume_available"
    )
    try:
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"connect took {elapsed:.1f}s with NATS down"
        assert health.state("redis-main") is None
        assert health.bus.stale
        assert not health.bus.connected
        assert health.is_available("redis-main")  # assume_available, nothing known

        await nats_server.astart()
        await health.wait_for("redis-main", "unavailable", timeout=30)
        await wait_bus(health, connected=True, stale=False, timeout=30)
        state = health.state("redis-main")
        assert state is not None
        assert not state.stale
        assert not health.is_available("redis-main")
    finally:
        await health.close()


async def test_nats_restart_marks_stale_applies_policy_and_resumes(nats_server: EmbeddedNats) -> None:
    """NATS stopped: states kept, stale after stale_after, policy applied; restarted: caught up and fresh."""
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    nc = await nats.connect(
        nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1, reconnected_cb=on_reconnect
    )
    pub = Publisher(nc.jetstream(), PREFIX)
    await pub.ensure()
    await pub.publish("pg", "healthy")
    await pub.publish("redis-main", "healthy")
    statuses: list[BusStatus] = []
    async with HealthClient.connect(
        nats_server.url, prefix=PREFIX, stale_after=0.3, on_bus_loss="assume_unavailable"
    ) as health:
        health.on_bus_change(statuses.append)
        changes: list[StateChanged] = []
        health.on_change(changes.append)
        assert health.is_available("pg")

        await nats_server.astop()
        await wait_bus(health, connected=False, stale=True)
        state = health.state("pg")
        assert state is not None
        assert state.stale
        assert state.state == "healthy"
        assert not health.is_available("pg")  # ... but the policy answers

        await nats_server.astart()
        # The "coordinator" publishes as soon as the server is back: the client catches up on it.
        await asyncio.wait_for(reconnected.wait(), 30)
        await pub.publish("redis-main", "unavailable")
        await health.wait_for("redis-main", "unavailable", timeout=30)
        await wait_bus(health, connected=True, stale=False, timeout=30)
        assert health.is_available("pg")
        assert not health.is_available("redis-main")
        assert [(e.target, e.seq) for e in changes] == [("redis-main", 2)]  # exactly once
    assert (statuses[0].connected, statuses[-1].connected, statuses[-1].stale) == (False, True, False)
    await nc.close()


async def test_keep_policy_keeps_answers_while_stale(nats_server: EmbeddedNats, publisher: Publisher) -> None:
    """keep: after stale_after without the bus, answers stay the last known ones."""
    await publisher.publish("pg", "healthy")
    await publisher.publish("redis-main", "unavailable")
    async with HealthClient.connect(nats_server.url, prefix=PREFIX, stale_after=0.2, on_bus_loss="keep") as health:
        await nats_server.astop()
        await wait_bus(health, connected=False, stale=True)
        assert health.is_available("pg")
        assert not health.is_available("redis-main")


async def test_staleness_is_counted_on_the_clients_clock(nats_server: EmbeddedNats, publisher: Publisher) -> None:
    """stale_after runs on the client's clock: with a manual one the states go stale when it
    has moved on by exactly stale_after since the bus was lost, however long the test takes."""
    await publisher.publish("pg", "healthy")
    clock = ManualClock()
    async with HealthClient.connect(
        nats_server.url, prefix=PREFIX, stale_after=5.0, on_bus_loss="assume_unavailable", clock=clock
    ) as health:
        await nats_server.astop()
        await wait_bus(health, connected=False)
        # The supervisor parks on the clock until the states are due to go stale; its
        # deadline counts from when it parks, so let it park before moving the clock.
        await clock.wait_sleepers(1)
        await clock.advance(4.999)
        assert not health.bus.stale
        assert health.is_available("pg")
        await clock.advance(0.001)
        await wait_bus(health, connected=False, stale=True, timeout=2)  # real seconds: far below 5
        assert not health.is_available("pg")
        assert health.bus.lost_for == pytest.approx(5.0)


async def test_shared_connection_is_reused_and_left_open(nats_server: EmbeddedNats, publisher: Publisher) -> None:
    """With nc= the client uses that connection and does not close it."""
    await publisher.publish("pg", "healthy")
    nc = await nats.connect(nats_server.url)
    try:
        async with HealthClient.connect(nc=nc, prefix=PREFIX) as health:
            assert health.nc is nc
            assert health.is_available("pg")
        assert nc.is_connected
    finally:
        await nc.close()


async def test_stream_missing_then_created(nats_server: EmbeddedNats) -> None:
    """Before the coordinator creates the stream the client waits without failing, then loads it."""
    health = await HealthClient.connect(nats_server.url, prefix=PREFIX, connect_timeout=1.0)
    try:
        assert not health.bus.connected
        nc = await nats.connect(nats_server.url)
        pub = Publisher(nc.jetstream(), PREFIX)
        await pub.ensure()
        await pub.publish("pg", "degraded")
        await health.wait_for("pg", "degraded", timeout=30)
        await wait_bus(health, connected=True, timeout=30)
        await nc.close()
    finally:
        await health.close()


def test_bad_arguments_fail_at_once() -> None:
    """A bad prefix or bus-loss policy is a usage error raised by connect(), not a retry loop."""
    with pytest.raises(ValueError, match="prefix"):
        HealthClient.connect("nats://127.0.0.1:1", prefix="bad prefix!")
    with pytest.raises(ValueError, match="on_bus_loss"):
        HealthClient.connect("nats://127.0.0.1:1", on_bus_loss="maybe")  # type: ignore[arg-type]


async def test_catches_up_on_changes_made_while_partitioned(nats_server: EmbeddedNats, publisher: Publisher) -> None:
    """Cut off from a NATS that stays up, the client misses events; on reconnect it catches up, no duplicates."""
    from ._proxy import Proxy

    await publisher.publish("pg", "healthy")
    await publisher.publish("redis-main", "healthy")
    proxy = Proxy(nats_server.port)
    await proxy.start()
    try:
        async with HealthClient.connect(proxy.url, prefix=PREFIX, stale_after=0.2) as health:
            seen: list[tuple[str, int]] = []
            health.on_change(lambda ev: seen.append((ev.target, ev.seq)))
            await proxy.cut()
            await wait_bus(health, connected=False, stale=True)
            await publisher.publish("pg", "unavailable")
            await publisher.publish("pg", "recovering")
            await publisher.publish("pg", "healthy")
            await publisher.publish("pg", "unavailable")
            await publisher.publish("redis-main", "degraded")
            before = health.state("pg")
            assert before is not None
            assert before.seq == 1  # really cut off

            await proxy.start()
            await wait_bus(health, connected=True, stale=False, timeout=30)
            pg, redis = health.state("pg"), health.state("redis-main")
            assert pg is not None
            assert (pg.seq, pg.state, pg.stale) == (5, "unavailable", False)
            assert redis is not None
            assert (redis.seq, redis.state) == (2, "degraded")
            assert not health.is_available("pg")
            for target in ("pg", "redis-main"):
                seqs = [s for t, s in seen if t == target]
                assert seqs == sorted(set(seqs)), f"duplicate or out-of-order callbacks for {target}: {seqs}"
            assert ("pg", 5) in seen
            assert ("redis-main", 2) in seen
    finally:
        await proxy.cut()
