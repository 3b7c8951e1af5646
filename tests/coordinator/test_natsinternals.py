"""The nats-py adapter: batching from a subscription's queue only on a known nats-py."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client

from healthbus.coordinator._natsinternals import NATS_PY_VERSION, TESTED_NATS_PY, QueueBatcher

pytestmark = pytest.mark.nats


def test_the_installed_nats_py_is_one_the_adapter_was_written_for() -> None:
    """Upgrading nats-py past the known releases shows here, not as a silent slowdown."""
    assert ".".join(NATS_PY_VERSION.split(".")[:2]) in TESTED_NATS_PY


async def test_batches_queued_messages_and_keeps_the_client_accounting(nc: Client) -> None:
    """Messages queued behind a slow callback are taken in one go; nats-py's pending size returns to 0."""
    seen: list[bytes] = []
    first = asyncio.Event()
    go = asyncio.Event()

    async def callback(msg: object) -> None:
        first.set()
        await go.wait()

    sub = await nc.subscribe("adapter.test", cb=callback)
    batcher = QueueBatcher.attach(sub)
    assert batcher is not None
    for i in range(6):
        await nc.publish("adapter.test", str(i).encode())
    async with asyncio.timeout(5):
        await first.wait()
    await nc.flush()  # the server sent every message before the PONG: 1..5 are queued
    assert sub.pending_msgs == 5  # the callback holds message 0
    batcher.take(3, lambda subject, data: seen.append(data))
    assert seen == [b"1", b"2", b"3"]
    batcher.take(100, lambda subject, data: seen.append(data))
    assert seen == [b"1", b"2", b"3", b"4", b"5"]
    assert sub.pending_bytes == 0
    go.set()
    await sub.unsubscribe()


async def test_an_unknown_nats_py_release_handles_one_message_per_callback(nc: Client) -> None:
    """A release the adapter was not written for gets no batcher (correct, only slower)."""
    sub = await nc.subscribe("adapter.other")
    assert QueueBatcher.attach(sub, version="3.0.0") is None
    await sub.unsubscribe()
