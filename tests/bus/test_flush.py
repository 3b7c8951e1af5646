"""bus.connect's client: ``flush()`` is a barrier for everything sent before it.

nats-py writes flush()'s PING straight to the socket, ahead of the SUBs and PUBs still queued
for its flusher task (docs/upstream/nats-py-flush.md): a test that subscribed, flushed and
then had another connection publish could miss the message (a CI run did, once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest
from nats.aio.msg import Msg

from healthbus.bus import PongSafeClient, connect
from healthbus.bus.embedded import EmbeddedNats

pytestmark = pytest.mark.nats


async def test_what_was_queued_before_a_flush_reaches_the_socket_before_its_ping(nats_server: EmbeddedNats) -> None:
    """SUB and PUB queued with no chance for nats-py's flusher task to run go out before flush()'s PING."""
    nc = await connect(url=nats_server.url)
    assert isinstance(nc, PongSafeClient)
    transport = nc._transport
    assert transport is not None
    written: list[bytes] = []
    write, writelines = transport.write, transport.writelines

    def record(data: bytes) -> None:
        written.append(bytes(data))
        write(data)

    def record_lines(lines: Iterable[bytes]) -> None:
        lines = list(lines)
        written.extend(bytes(line) for line in lines)
        writelines(lines)

    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        got.put_nowait(msg.data)

    try:
        transport.write, transport.writelines = record, record_lines  # type: ignore[method-assign,assignment]
        await nc.subscribe("barrier.test", cb=on_msg)  # queued: nats-py's flusher has not run
        await nc.publish("barrier.test", b"queued")
        await nc.flush()
        commands = [line.split(b" ", 1)[0].strip() for line in written if line[:3] in (b"SUB", b"PUB", b"PIN")]
        assert commands[:3] == [b"SUB", b"PUB", b"PING"], written
        assert await asyncio.wait_for(got.get(), 10) == b"queued"
    finally:
        await nc.close()


async def test_after_subscribe_and_flush_another_connection_s_message_arrives(nats_server: EmbeddedNats) -> None:
    """The promise the tests lean on: once flush() returns, the server has the subscription."""
    listener = await connect(url=nats_server.url, name="listener")
    sender = await connect(url=nats_server.url, name="sender")
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        got.put_nowait(msg.data)

    try:
        for i in range(20):
            sub = await listener.subscribe(f"barrier.{i}", cb=on_msg)
            await listener.flush()
            await sender.publish(f"barrier.{i}", str(i).encode())
            await sender.flush()
            assert await asyncio.wait_for(got.get(), 10) == str(i).encode()
            await sub.unsubscribe()
    finally:
        await sender.close()
        await listener.close()
