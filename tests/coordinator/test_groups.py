"""Groups on the coordinator: the pure rule (group_event) and GroupChanged on a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import generate_latest

from healthbus.bus import ensure_stream, sync_subscriptions
from healthbus.bus.embedded import EmbeddedNats
from healthbus.coordinator import CoordinatorService
from healthbus.coordinator._core import group_event, group_state
from healthbus.coordinator._core._groups import LATENCY_EVERY_S, Latencies
from healthbus.coordinator._groups import Groups as GroupPublisher
from healthbus.protocol import (
    GroupChanged,
    GroupConfig,
    State,
    StreamSettings,
    Subjects,
    decode_group_changed,
    load_config_text,
)
from healthbus.protocol.clock import SystemClock
from healthbus.protocol.testing import ManualClock
from tests.helpers import probe_result, publish_probe, state_changed, wait_event, wait_until
from tests.subscribers._proxy import Proxy

T0 = datetime(2026, 12, 1, tzinfo=UTC)
PG = GroupConfig(name="pg", members=["a", "b", "c"], min_healthy=2)


def test_group_state_counts_members_in() -> None:
    assert [group_state(n, 2) for n in (0, 1, 2, 3)] == ["unavailable", "degraded", "healthy", "healthy"]


def test_first_event_then_only_on_change() -> None:
    states: dict[str, State] = {"a": "healthy", "b": "degraded", "c": "unavailable"}
    first = group_event(PG, states, {}, None, T0, mono=0.0, last_mono=None)
    assert first is not None
    assert (first.seq, first.previous, first.state, first.available) == (1, "unknown", "healthy", 2)
    assert [(m.target, m.available) for m in first.members] == [("a", True), ("b", True), ("c", False)]
    assert "out: c" in first.reason
    assert group_event(PG, states, {}, first, T0, mono=1.0, last_mono=0.0) is None
    down = group_event(PG, {**states, "b": "unavailable"}, {}, first, T0, mono=1.0, last_mono=0.0)
    assert down is not None
    assert (down.seq, down.previous, down.state, down.available) == (2, "healthy", "degraded", 1)
    gone = group_event(PG, {}, {}, down, T0, mono=2.0, last_mono=1.0)
    assert gone is not None
    assert (gone.state, [m.state for m in gone.members]) == ("unavailable", ["unknown"] * 3)
    # a member changing state without changing in/out is news too (its state is in the message)
    deg = group_event(PG, {**states, "a": "degraded"}, {}, first, T0, mono=1.0, last_mono=0.0)
    assert deg is not None
    assert deg.state == "healthy"


def test_latency_alone_is_news_when_it_moved_and_not_too_often() -> None:
    states: dict[str, State] = {"a": "healthy", "b": "healthy", "c": "healthy"}
    first = group_event(PG, states, {"a": 10.0}, None, T0, mono=0.0, last_mono=None)
    assert first is not None
    assert first.members[0].latency_ms == 10.0
    assert group_event(PG, states, {"a": 12.0}, first, T0, mono=100.0, last_mono=0.0) is None  # within 25 %
    assert group_event(PG, states, {"a": 20.0}, first, T0, mono=1.0, last_mono=0.0) is None  # too soon
    moved = group_event(PG, states, {"a": 20.0}, first, T0, mono=LATENCY_EVERY_S, last_mono=0.0)
    assert moved is not None
    assert (moved.seq, moved.state, moved.members[0].latency_ms) == (2, "healthy", 20.0)
    # a new latency for a member without one is news
    assert group_event(PG, states, {"a": 10.0, "b": 3.0}, first, T0, mono=LATENCY_EVERY_S, last_mono=0.0)


@pytest.mark.nats
async def test_one_result_that_moves_latency_and_state_makes_one_message(nc: Client) -> None:
    """A member's first latency and its state change decided from one result: one GroupChanged, seq +1."""
    stream = StreamSettings.for_prefix()
    await ensure_stream(nc.jetstream(), stream)
    clock = ManualClock()
    groups = GroupPublisher([PG], nc, Subjects(), stream.name, clock)
    groups.start()
    try:
        groups.on_events([state_changed("a", 1, "healthy"), state_changed("b", 1, "healthy")])
        await wait_until(lambda: groups.published == 1, 10, "#1 stored", seen=lambda: groups.last)
        clock.skip(LATENCY_EVERY_S)  # a latency alone is news again
        # as the intake does for one result, with no await in between: observe, then emit
        groups.observe(probe_result("a", "pass", latency_ms=3.0))
        groups.on_events([state_changed("a", 2, "unavailable")])
        await wait_until(
            lambda: groups.published == 2 and not groups.pending, 10, "#2 stored", seen=lambda: groups.last
        )
    finally:
        await groups.stop()
    last = groups.last["pg"]
    assert (last.seq, last.previous, last.state) == (2, "healthy", "degraded")
    assert (last.members[0].latency_ms, last.members[0].available) == (3.0, False)
    stored = await nc.jetstream().get_last_msg(stream.name, Subjects().group("pg"))
    assert stored.headers is not None
    assert stored.headers["Nats-Msg-Id"] == "group:pg:2"


def test_latencies_average_passing_results_of_members_only() -> None:
    latencies = Latencies(["a"])
    assert latencies.observe(probe_result("a", "pass", latency_ms=10.0))
    assert latencies.observe(probe_result("a", "warn", latency_ms=20.0))
    assert not latencies.observe(probe_result("a", "fail", latency_ms=0.1))
    assert not latencies.observe(probe_result("x", "pass", latency_ms=5.0))
    assert latencies.ms == {"a": pytest.approx(13.0)}


CONFIG = """
[defaults]
interval = "1s"
timeout = "500ms"
failure_threshold = 1
success_threshold = 1
flap = { enabled = false }

[coordinator]
tick = "50ms"
lease_ttl = "0s"

[[targets]]
name = "a"
kind = "tcp"
url = "tcp://127.0.0.1:1"

[[targets]]
name = "b"
kind = "tcp"
url = "tcp://127.0.0.1:2"

[[groups]]
name = "pg"
members = ["a", "b"]
policy = "primary-first"
min_healthy = 2
"""


class Groups:
    """Every GroupChanged published, live."""

    def __init__(self) -> None:
        self.items: list[GroupChanged] = []
        self._changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        self.items.append(decode_group_changed(msg.data, subject_group=Subjects().group_name(msg.subject)))
        self._changed.set()

    async def wait(self, pred: Callable[[GroupChanged], bool], what: str) -> GroupChanged:
        try:
            async with asyncio.timeout(10):
                while True:
                    found = next((g for g in self.items if pred(g)), None)
                    if found is not None:
                        return found
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no GroupChanged {what}; seen: {[(g.seq, g.state) for g in self.items]}") from None


async def _publish(nc: Client, target: str, outcome: str, latency_ms: float = 2.0) -> None:
    await publish_probe(nc, "healthbus", probe_result(target, outcome, latency_ms=latency_ms))  # type: ignore[arg-type]


@pytest.mark.nats
async def test_coordinator_publishes_group_changes_and_goes_on_after_a_restart(nc: Client) -> None:
    """unknown → healthy (both in, latencies) → degraded (b out) → unavailable; a restart continues seq."""
    seen = Groups()
    await nc.subscribe(Subjects().group_all, cb=seen.on_msg)
    config = load_config_text(CONFIG)
    async with CoordinatorService(config, nc) as service:
        first = await seen.wait(lambda g: g.seq == 1, "#1")
        assert (first.state, first.available, first.policy) == ("unavailable", 0, "primary-first")
        await _publish(nc, "a", "pass", 4.0)
        await _publish(nc, "b", "pass", 8.0)
        healthy = await seen.wait(lambda g: g.state == "healthy", "healthy")
        assert [(m.target, m.available, m.latency_ms) for m in healthy.members] == [("a", True, 4.0), ("b", True, 8.0)]
        await _publish(nc, "b", "fail")
        degraded = await seen.wait(lambda g: g.state == "degraded" and g.previous == "healthy", "degraded")
        assert (degraded.available, degraded.members[1].available) == (1, False)
        assert "out: b" in degraded.reason
        await _publish(nc, "a", "fail")
        down = await seen.wait(lambda g: g.state == "unavailable" and g.seq > 1, "unavailable")
        assert down.previous == "degraded"
        # A core subscriber gets the message before the stream's ack says it is stored.
        await wait_until(
            lambda: not service.groups.pending,
            10,
            "every GroupChanged stored",
            seen=lambda: (service.groups.pending, service.groups.last),
        )
        stored = await nc.jetstream().get_last_msg(service.stream.name, Subjects().group("pg"))
        assert stored.headers is not None
        assert stored.headers["Nats-Msg-Id"] == f"group:pg:{down.seq}"
        metrics = generate_latest(service.registry).decode()
        assert 'healthbus_group_state{group="pg",state="unavailable"} 1.0' in metrics
        assert 'healthbus_group_members_available{group="pg"} 0.0' in metrics
        assert 'healthbus_group_member_available{group="pg",member="b"} 0.0' in metrics
        assert 'healthbus_group_member_latency_ms{group="pg",member="a"} 4.0' in metrics
    count = len(seen.items)
    async with CoordinatorService(config, nc) as service:
        await service.activated.wait()
        await _publish(nc, "a", "pass")
        # One result, one message: its latency (a member without one) and, if the breaker's
        # trial time had come, a's re-admission are one picture with the next seq, not two.
        back = await seen.wait(lambda g: g.seq > down.seq, "after the restart")
        assert (back.seq, back.previous) == (down.seq + 1, "unavailable")  # seq and state go on from the stream
    assert len(seen.items) == count + 1  # the unchanged group was not announced again


@pytest.mark.nats
async def test_a_group_added_by_a_reload_starts_from_its_members_current_states(nc: Client) -> None:
    """reconfigure() with a new [[groups]] entry: its first GroupChanged counts members decided before."""
    seen = Groups()
    await nc.subscribe(Subjects().group_all, cb=seen.on_msg)
    without = CONFIG[: CONFIG.index("[[groups]]")]
    async with CoordinatorService(load_config_text(without), nc) as service:
        await _publish(nc, "a", "pass")
        await _publish(nc, "b", "pass")
        await service.wait_published("a", 1)  # decided (unknown → healthy) and stored
        await service.wait_published("b", 1)
        assert service.decider.state("a")[0] == service.decider.state("b")[0] == "healthy"
        assert seen.items == []
        service.reconfigure(load_config_text(CONFIG))
        first = await seen.wait(lambda g: g.seq == 1, "the new group's first GroupChanged")
        assert (first.state, first.available) == ("healthy", 2)


@pytest.mark.nats
async def test_stop_ends_the_group_publisher_when_its_cancel_meets_the_ack(nats_server: EmbeddedNats) -> None:
    """stop() returns although the cancel comes in the loop turn of the publish's ack.

    On Python 3.11 nats-py's ``asyncio.wait_for`` around the ack then returns the ack and
    swallows the cancel; a publisher that relied on the cancel alone parked on its wake-up
    event for ever (the two coordinator tests above hung in ~3 of 8 runs in their stop()).
    The proxy holds the server's bytes until both the stored GroupChanged (for our
    subscription) and the PubAck are there, then hands them over in one read.
    """
    proxy = Proxy(nats_server.port)
    await proxy.start()
    nc = await nats.connect(proxy.url)
    try:
        subjects = Subjects()
        stream = StreamSettings.for_prefix()
        await ensure_stream(nc.jetstream(), stream)
        groups = GroupPublisher([PG], nc, subjects, stream.name, SystemClock())
        stopped = asyncio.Event()

        async def stop_on_delivery(msg: Msg) -> None:
            await groups.stop()  # cancels the publisher before this callback's first await
            stopped.set()

        await nc.subscribe(subjects.group("pg"), cb=stop_on_delivery)
        await sync_subscriptions(nc)
        groups.start()
        proxy.hold()
        groups.on_events([state_changed("a", 1, "healthy")])
        await wait_until(
            lambda: b"MSG healthbus.group.pg " in proxy.held and b'"stream":"' in proxy.held,
            10,
            "the GroupChanged and its PubAck held by the proxy",
            seen=lambda: proxy.held,
        )
        proxy.release()
        await wait_event(stopped, 5, "Groups.stop() to return")
        assert groups.published == 1
    finally:
        await nc.close()
        await proxy.cut()
