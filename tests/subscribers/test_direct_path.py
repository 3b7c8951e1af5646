"""HealthClient's consumer-free path against a real nats-server: direct gets, failures, recovery.

A subscriber follows ``<prefix>.state.>`` over a plain subscription and loads current
states with batched direct gets; it must never create a JetStream consumer, must say
(through ``health.bus``) when it cannot follow, and must report its return too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from healthbus.bus import DirectGetError, StateStream, last_per_subject, stream_config, sync_subscriptions
from healthbus.bus.embedded import EmbeddedNats
from healthbus.coordinator import CoordinatorService
from healthbus.protocol import StreamSettings, load_config_text
from healthbus.subscribers import BusStatus, HealthClient
from tests.helpers import Recorder, probe_result, publish_probe, state_changed, wait_bus

from ._events import Publisher
from ._proxy import Proxy

pytestmark = pytest.mark.nats

PREFIX = "hbdirect"
STREAM = StreamSettings.for_prefix(PREFIX).name


@pytest.fixture
async def admin(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    """An unrestricted connection (the coordinator's side)."""
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        yield nc
    finally:
        await nc.close()


@pytest.fixture
async def publisher(admin: Client) -> Publisher:
    """Publishes StateChanged into the state stream as the coordinator does."""
    pub = Publisher(admin.jetstream(), PREFIX)
    await pub.ensure()
    return pub


async def consumers(admin: Client) -> int:
    """JetStream consumers on the state stream."""
    return (await admin.jetstream().stream_info(STREAM)).state.consumer_count


def record_bus(health: HealthClient) -> Recorder[BusStatus]:
    """Every BusStatus on_bus_change reports, in order."""
    seen: Recorder[BusStatus] = Recorder()
    health.on_bus_change(seen.append)
    return seen


def back(told: list[BusStatus]) -> bool:
    """The last status told says connected."""
    return bool(told) and told[-1].connected


async def test_loads_and_follows_with_no_consumer_paging_through_batches(
    admin: Client, publisher: Publisher, nats_server: EmbeddedNats
) -> None:
    """25 targets read 4 at a time; live changes arrive; the server never holds a consumer for it."""
    for i in range(25):
        await publisher.publish(f"t{i:02d}", "healthy")
    await publisher.publish("t03", "unavailable")
    async with HealthClient.connect(nats_server.url, prefix=PREFIX, batch=4) as health:
        assert len(health.states()) == 25
        t03 = health.state("t03")
        assert t03 is not None
        assert (t03.seq, t03.state) == (2, "unavailable")
        assert health.bus.connected
        assert await consumers(admin) == 0
        await publisher.publish("t03", "healthy")
        await health.wait_for("t03", "healthy", timeout=10)
        assert await consumers(admin) == 0


async def test_more_targets_than_multi_last_answers_load_completely(
    admin: Client, publisher: Publisher, nats_server: EmbeddedNats
) -> None:
    """1,100 targets (nats-server answers multi_last for at most 1,024 subjects, else 413):
    every target's last event is read, in stream order, through the leader's mark too."""
    await asyncio.gather(*(publisher.publish(f"t{i:04d}", "healthy") for i in range(1_100)))
    await publisher.publish("t0003", "unavailable")
    stream = StateStream(admin, PREFIX)
    current = await stream.current()
    assert len(current) == 1_100
    assert (current["t0003"].seq, current["t0003"].state) == (2, "unavailable")
    stored = await last_per_subject(admin, STREAM, f"{PREFIX}.state.>", at_least=1_101)
    assert len(stored) == 1_100
    assert [m.stream_seq for m in stored] == sorted(m.stream_seq for m in stored)
    async with HealthClient.connect(nats_server.url, prefix=PREFIX) as health:
        assert len(health.states()) == 1_100
        assert await consumers(admin) == 0


async def test_snapshot_of_an_empty_stream_and_the_last_message(publisher: Publisher, admin: Client) -> None:
    """An empty stream loads as nothing; last() reads one subject's last event or None."""
    stream = StateStream(admin, PREFIX)
    assert await stream.snapshot() == []
    assert await stream.last("nothing") is None
    await publisher.publish("a", "healthy")
    await publisher.publish("a", "degraded")
    last = await stream.last("a")
    assert last is not None
    assert (last.seq, last.state) == (2, "degraded")


async def test_direct_get_refused_then_turned_on_by_the_coordinator(nats_server: EmbeddedNats, admin: Client) -> None:
    """A stream without allow_direct: the client says so in bus.reason; ensure_stream turns it on; it recovers."""
    config = stream_config(StreamSettings.for_prefix(PREFIX))
    config.allow_direct = False
    js = admin.jetstream()
    await js.add_stream(config)
    with pytest.raises(DirectGetError) as info:
        await last_per_subject(admin, STREAM, f"{PREFIX}.state.>", timeout=1)
    assert info.value.kind == "no_responders"

    async with HealthClient.connect(
        nats_server.url, prefix=PREFIX, stale_after=0.2, on_bus_loss="assume_unavailable", resync_jitter=0
    ) as health:
        seen = record_bus(health)
        assert not health.bus.connected
        assert f"stream {STREAM} has no allow_direct, so subscribers cannot read it" in (health.bus.reason or "")
        await wait_bus(health, lambda bus: bus.stale, 10, "the policy to apply")
        assert not health.is_available("anything")

        pub = Publisher(js, PREFIX)
        await pub.ensure()  # what the coordinator does at start: allow_direct on
        assert (await js.stream_info(STREAM)).config.allow_direct
        await pub.publish("redis-main", "healthy")
        await health.wait_for("redis-main", "healthy", timeout=15)
        await seen.wait(back, 15, "following again, told to on_bus_change")
        assert health.bus.connected
        assert seen.items[-1].reason is None
        assert not seen.items[-1].stale


async def test_the_coordinator_turns_allow_direct_on_for_an_existing_stream(
    nats_server: EmbeddedNats, admin: Client
) -> None:
    """A state stream made without allow_direct (an older version) has it once a coordinator starts."""
    config = stream_config(StreamSettings.for_prefix(PREFIX))
    config.allow_direct = False
    js = admin.jetstream()
    await js.add_stream(config)
    await js.publish(f"{PREFIX}.state.kept", b"{}")
    async with CoordinatorService(load_config_text(COORDINATOR), admin, lease_ttl=0):
        info = await js.stream_info(STREAM)
        assert info.config.allow_direct
        assert info.state.messages == 1  # the stream was updated, not replaced


async def test_missing_stream_is_a_lost_bus_until_it_exists(nats_server: EmbeddedNats, admin: Client) -> None:
    """No state stream at all: not connected, the reason says so; once created the client follows it."""
    async with HealthClient.connect(nats_server.url, prefix=PREFIX, stale_after=30, resync_jitter=0) as health:
        assert not health.bus.connected
        assert STREAM in (health.bus.reason or "")
        pub = Publisher(admin.jetstream(), PREFIX)
        await pub.ensure()
        await pub.publish("pg", "degraded")
        await health.wait_for("pg", "degraded", timeout=15)
        await wait_bus(health, lambda bus: bus.connected, 15, "following")


async def test_a_batch_cut_short_is_not_taken_for_the_whole_state(
    nats_server: EmbeddedNats, publisher: Publisher
) -> None:
    """The connection drops in the middle of the paged load: not live; after the reconnect, everything."""
    for i in range(120):
        await publisher.publish(f"target-{i:03d}", "healthy", reason="x" * 200)
    proxy = Proxy(nats_server.port)
    await proxy.start()
    try:
        proxy.downstream_budget = 8_000  # INFO, PONG and a few pages of 5, then the link drops
        async with HealthClient.connect(
            proxy.url, prefix=PREFIX, batch=5, connect_timeout=3, resync_jitter=0
        ) as health:
            assert not health.bus.connected
            assert "batch stopped" in (health.bus.reason or "") or "connection" in (health.bus.reason or "")
            seen = record_bus(health)
            await proxy.start()
            await seen.wait(back, 30, "reloaded after the reconnect")
            assert len(health.states()) == 120
    finally:
        await proxy.cut()


async def test_gap_while_disconnected_is_caught_up_and_reported_both_ways(
    nats_server: EmbeddedNats, publisher: Publisher
) -> None:
    """A nats-server restart with transitions published meanwhile: caught up, on_bus_change says lost then back."""
    await publisher.publish("pg", "healthy")
    async with HealthClient.connect(nats_server.url, prefix=PREFIX, resync_jitter=0.2) as health:
        bus_seen = record_bus(health)
        events: list[int] = []
        health.on_change(lambda ev: events.append(ev.seq) if ev.target == "pg" else None)
        await nats_server.astop()
        await wait_bus(health, lambda bus: not bus.connected, 10, "the loss to be seen")
        await nats_server.astart()
        # Published on the restarted server (same port and store) before the client is back.
        await publisher.publish("pg", "unavailable")
        await publisher.publish("pg", "recovering")
        await bus_seen.wait(back, 30, "back, told to on_bus_change")
        pg = health.state("pg")
        assert pg is not None
        assert (pg.seq, pg.state) == (3, "recovering")
        assert any(not s.connected for s in bus_seen.items)
        assert events == sorted(set(events))
        assert events[-1] == 3


COORDINATOR = f"""
[bus]
prefix = "{PREFIX}"

[defaults]
interval = "1s"
timeout = "500ms"
failure_threshold = 1
success_threshold = 1
backoff = {{ base = "300ms", multiplier = 2.0, max = "2s", jitter = "none" }}
flap = {{ enabled = false }}

[coordinator]
tick = "50ms"
lease_ttl = "2s"

[[targets]]
name = "redis-main"
kind = "redis"
url = "redis://127.0.0.1:1/0"
"""


async def test_coordinator_failover_mid_stream(nats_server: EmbeddedNats, admin: Client) -> None:
    """The leading coordinator goes; the standby takes over; the client follows on, in order, no duplicates."""
    config = load_config_text(COORDINATOR)
    standby_nc = await nats.connect(nats_server.url)
    leader_nc = await nats.connect(nats_server.url)
    try:
        leader = CoordinatorService(config, leader_nc, holder="a")
        await leader.start()
        await asyncio.wait_for(leader.activated.wait(), 10)
        standby = CoordinatorService(config, standby_nc, holder="b")
        await standby.start()
        try:
            async with HealthClient.connect(nats_server.url, prefix=PREFIX, resync_jitter=0) as health:
                seqs: list[int] = []
                health.on_change(lambda ev: seqs.append(ev.seq))
                await publish_probe(admin, PREFIX, probe_result("redis-main", "pass"))
                first = await health.wait_for("redis-main", "healthy", timeout=10)
                await leader.stop()
                await asyncio.wait_for(standby.activated.wait(), 20)
                await publish_probe(admin, PREFIX, probe_result("redis-main", "fail"))
                down = await health.wait_for("redis-main", "unavailable", timeout=20)
                assert down.seq == first.seq + 1
                assert seqs == sorted(set(seqs))
                assert health.bus.connected
        finally:
            await standby.stop()
    finally:
        await leader_nc.close()
        await standby_nc.close()


async def test_a_live_gap_is_repaired_by_a_direct_get_of_that_subject(
    nats_server: EmbeddedNats, admin: Client, publisher: Publisher
) -> None:
    """A live event two past the known seq: applied, and that target's last message is read again."""
    await publisher.publish("pg", "healthy")
    asked: asyncio.Queue[str] = asyncio.Queue()

    async def on_request(msg: Msg) -> None:
        asked.put_nowait(msg.subject)

    # Watch the direct-get requests for pg's subject (a second subscriber on the API subject).
    await admin.subscribe(f"$JS.API.DIRECT.GET.{STREAM}.{PREFIX}.state.pg", cb=on_request)
    await sync_subscriptions(admin)
    async with HealthClient.connect(nats_server.url, prefix=PREFIX, resync_jitter=0) as health:
        seqs: list[int] = []
        health.on_change(lambda ev: seqs.append(ev.seq))
        await publisher.publish_event(state_changed("pg", 3, "unavailable", previous="healthy"))
        subject = await asyncio.wait_for(asked.get(), 10)
        assert subject.endswith(".state.pg")
        pg = health.state("pg")
        assert pg is not None
        assert (pg.seq, pg.state) == (3, "unavailable")
        assert seqs == [3]
