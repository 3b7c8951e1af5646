"""The outbox against a real nats-server: its backoff runs on the injected clock."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from healthbus.coordinator._outbox import MIN_BACKOFF, Outbox
from healthbus.protocol import StreamSettings, Subjects
from healthbus.protocol.testing import ManualClock
from healthbus.subscribers.testing import state_changed

pytestmark = pytest.mark.nats


async def test_a_failed_publish_is_retried_after_the_backoff_on_the_injected_clock(nc: Client) -> None:
    """No state stream: the first publish gets "no responders", and the outbox waits out its
    backoff on the manual clock (nothing is retried while it stands still); advanced by the
    backoff, it creates the stream and the event is stored."""
    clock = ManualClock()
    warnings: list[str] = []
    stream = StreamSettings.for_prefix("hb")
    outbox = Outbox(nc, Subjects("hb"), stream, clock=clock, warn=lambda key, text: warnings.append(text))
    await outbox.start()
    try:
        outbox.put(state_changed("db", 1, "healthy"))
        await clock.wait_sleepers(1)  # parked on its backoff
        assert len(warnings) == 1, warnings
        assert "no responders" in warnings[0]
        assert outbox.pending == 1
        with pytest.raises(NotFoundError):
            await nc.jetstream().stream_info(stream.name)  # not retried (the retry creates it)
        await clock.advance(MIN_BACKOFF)
        await asyncio.wait_for(outbox.wait_acked("db", 1), 10)
        assert (outbox.published, outbox.pending, len(warnings)) == (1, 0, 1)
        assert (await nc.jetstream().stream_info(stream.name)).state.messages == 1
    finally:
        await outbox.stop()


async def test_recent_holds_the_last_stored_event_of_the_targets_stored_last(nc: Client) -> None:
    """The StateDigest's ``events``: per target its last acked event, in ack order, at most
    MAX_DIGEST_EVENTS targets; a duplicate ack (the stream holds an event with that seq
    already, maybe another leader's) leaves the target out, so readers read it instead."""
    from healthbus.bus import ensure_stream
    from healthbus.protocol import MAX_DIGEST_EVENTS

    stream = StreamSettings.for_prefix("hbrecent")
    await ensure_stream(nc.jetstream(), stream)
    outbox = Outbox(nc, Subjects("hbrecent"), stream)
    await outbox.start()
    try:
        names = [f"t{i:02d}" for i in range(MAX_DIGEST_EVENTS + 2)]
        for name in names:
            outbox.put(state_changed(name, 1, "healthy"))
            await asyncio.wait_for(outbox.wait_acked(name, 1), 10)
        second = state_changed(names[2], 2, "unavailable")
        outbox.put(second)
        await asyncio.wait_for(outbox.wait_acked(names[2], 2), 10)
        recent = outbox.recent()
        assert [e.target for e in recent] == names[3:] + names[2:3]  # the oldest two left out; t02 moved last
        assert recent[-1] == second
        other = Outbox(nc, Subjects("hbrecent"), stream)  # a second leader, sending the same seq again
        await other.start()
        try:
            other.put(state_changed(names[2], 2, "degraded"))
            await asyncio.wait_for(other.wait_acked(names[2], 2), 10)
            assert (other.duplicates, other.recent()) == (1, [])
        finally:
            await other.stop()
    finally:
        await outbox.stop()
