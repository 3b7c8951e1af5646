"""StateStream: the one reader of the state stream (current, history, live follow)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client

from healthbus.bus import StateStream, connect, ensure_stream
from healthbus.bus.embedded import EmbeddedNats
from healthbus.protocol import State, StateChanged, StreamSettings
from tests.helpers import publish_states, state_changed, wait_until

pytestmark = pytest.mark.nats

PREFIX = "ss"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _event(target: str, seq: int, state: State = "healthy", at: datetime | None = None) -> StateChanged:
    return state_changed(target, seq, state, at=at or T0 + timedelta(minutes=seq), reason=f"{target} #{seq}")


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    """A connection to a fresh server with the state stream of PREFIX created."""
    client = await connect(url=nats_server.url)
    await ensure_stream(client.jetstream(), StreamSettings.for_prefix(PREFIX))
    try:
        yield client
    finally:
        await client.close()


async def _publish(nc: Client, *events: StateChanged) -> None:
    await publish_states(nc.jetstream(), PREFIX, events, ensure=False)


async def test_current_of_an_empty_stream_is_empty(nc: Client) -> None:
    """No events yet: no states, and the read returns at once instead of waiting."""
    assert await StateStream(nc, PREFIX).current(timeout=5) == {}


async def test_current_is_the_last_event_per_target(nc: Client) -> None:
    """current() returns each target's last StateChanged."""
    await _publish(nc, _event("a", 1), _event("b", 1), _event("a", 2, "unavailable"), _event("b", 2), _event("a", 3))
    current = await StateStream(nc, PREFIX).current()
    assert {t: (e.seq, e.state) for t, e in current.items()} == {"a": (3, "healthy"), "b": (2, "healthy")}


async def test_a_junk_last_message_does_not_hide_the_real_state(nc: Client) -> None:
    """If a subject's last message is junk, its last valid event is found in its history."""
    await _publish(nc, _event("a", 1), _event("a", 2, "unavailable"))
    await nc.jetstream().publish(f"{PREFIX}.state.a", b"{not json")
    stream = StateStream(nc, PREFIX)
    current = await stream.current()
    assert current["a"].seq == 2
    assert current["a"].state == "unavailable"
    # Skipped twice: as the subject's last message, then again reading its history for the last valid one.
    assert stream.malformed == 2


async def test_history_window_and_target_filter(nc: Client) -> None:
    """history() yields events in order, bounded by until, filtered by target."""
    await _publish(nc, *(_event(t, s) for s in range(1, 5) for t in ("a", "b")))
    stream = StateStream(nc, PREFIX)
    everything = [(e.target, e.seq) async for e in stream.history()]
    assert everything == [(t, s) for s in range(1, 5) for t in ("a", "b")]
    until = [(e.target, e.seq) async for e in stream.history(until=T0 + timedelta(minutes=2, seconds=30))]
    assert until == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    only_b = [e.seq async for e in stream.history(target="b")]
    assert only_b == [1, 2, 3, 4]


async def test_history_since_uses_stream_time(nc: Client) -> None:
    """since= starts at events stored from that time on (stream time, not the event's at)."""
    await _publish(nc, _event("a", 1))
    stream = StateStream(nc, PREFIX)
    assert [e.seq async for e in stream.history(since=datetime.now(UTC) + timedelta(hours=1))] == []
    assert [e.seq async for e in stream.history(since=datetime.now(UTC) - timedelta(hours=1))] == [1]


async def test_follow_delivers_current_then_live_and_survives_a_bad_handler(nc: Client) -> None:
    """follow() hands over current states, signals caught_up, then live events; a raising handler is logged."""
    await _publish(nc, _event("a", 1), _event("a", 2))
    seen: asyncio.Queue[tuple[str, int]] = asyncio.Queue()

    def handler(event: StateChanged) -> None:
        seen.put_nowait((event.target, event.seq))
        if event.seq == 3:
            raise RuntimeError("handler bug")

    follower = await StateStream(nc, PREFIX).follow(handler)
    try:
        await asyncio.wait_for(follower.caught_up.wait(), 5)
        assert await asyncio.wait_for(seen.get(), 5) == ("a", 2)
        await _publish(nc, _event("a", 3), _event("a", 4))
        assert await asyncio.wait_for(seen.get(), 5) == ("a", 3)
        assert await asyncio.wait_for(seen.get(), 5) == ("a", 4)
    finally:
        await follower.stop()


async def test_follow_resumes_after_a_nats_restart(nats_server: EmbeddedNats, nc: Client) -> None:
    """A follower picks up events published after the server restarted (read again after its reconnect)."""
    seen: asyncio.Queue[int] = asyncio.Queue()
    follower = await StateStream(nc, PREFIX).follow(lambda e: seen.put_nowait(e.seq), start="new")
    try:
        await _publish(nc, _event("a", 1))
        assert await asyncio.wait_for(seen.get(), 5) == 1
        nats_server.restart()
        # publish through a second connection: ours may not have reconnected yet
        other = await connect(url=nats_server.url)

        errors: list[str] = []

        async def published() -> bool:
            try:
                await _publish(other, _event("a", 2))
            except Exception as exc:  # JetStream needs a moment after a restart
                errors.append(repr(exc))
                return False
            return True

        try:
            await wait_until(published, 20, "JetStream to accept a publish after the restart", seen=lambda: errors[-3:])
        finally:
            await other.close()
        assert await asyncio.wait_for(seen.get(), 20) == 2
    finally:
        await follower.stop()


async def test_follow_reads_missed_events_from_the_stream_and_never_repeats(nc: Client) -> None:
    """A live event more than one seq above the last one handed over makes the follower read the
    ones in between from the stream first; a repeat is dropped; after a reconnect the re-read
    of every subject's last message hands over what was missed, in order, once. No consumer."""
    await _publish(nc, _event("a", 1), _event("b", 1))
    seen: list[tuple[str, int]] = []
    follower = await StateStream(nc, PREFIX).follow(lambda e: seen.append((e.target, e.seq)), start="all")
    await follower.stop()  # from here on only what the test feeds it: no live message races it
    assert seen == [("a", 1), ("b", 1)]
    events = [_event("a", s) for s in (2, 3, 4)]
    await _publish(nc, *events)
    await follower._accept(events[-1], None)  # a:4 arrives live; a:2 and a:3 never did
    assert seen[2:] == [("a", 2), ("a", 3), ("a", 4)]
    await follower._accept(events[0], None)  # a repeat (e.g. the JetStream duplicate of a re-publish)
    assert seen[5:] == []
    await _publish(nc, _event("a", 5), _event("b", 2), _event("b", 3), _event("a", 6))
    await follower._resync()  # what a reconnect does
    assert seen[5:] == [("b", 2), ("b", 3), ("a", 5), ("a", 6)]
    assert (await nc.jetstream().stream_info(StateStream(nc, PREFIX).stream)).state.consumer_count == 0
