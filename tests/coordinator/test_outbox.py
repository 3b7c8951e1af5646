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
