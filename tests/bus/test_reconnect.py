"""bus.connect's reconnects: each try after a jittered wait whose cap doubles per failed try, and
the handshake in one write (CONNECT, PING, the replayed subscriptions, what was buffered)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.msg import Msg

from healthbus.bus import connect
from healthbus.bus._connect import RECONNECT_FIRST_MAX, RECONNECT_MAX, reconnect_delay
from healthbus.bus.embedded import EmbeddedNats
from tests.helpers import record_writes


def test_reconnect_delay_is_full_jitter_with_a_doubling_cap() -> None:
    """Try n waits up to FIRST_MAX * 2**n, never more than RECONNECT_MAX, and may wait nearly 0."""
    top = [reconnect_delay(n, lambda low, high: high) for n in range(8)]
    assert top[0] == RECONNECT_FIRST_MAX
    assert top == sorted(top)
    assert max(top) == RECONNECT_MAX
    assert reconnect_delay(50, lambda low, high: low) == 0.0


@pytest.mark.nats
async def test_a_reconnect_is_one_write_and_replays_every_subscription(nats_server: EmbeddedNats) -> None:
    """After a server restart the client sends CONNECT, PING, each subscription (a limited one with
    what is left of its limit) and what was published while away in one write, and follows again."""
    gone, back = asyncio.Event(), asyncio.Event()

    async def disconnected() -> None:
        gone.set()

    async def reconnected() -> None:
        back.set()

    nc = await connect(url=nats_server.url, disconnected_cb=disconnected, reconnected_cb=reconnected)
    other = None
    got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        got.put_nowait((msg.subject, msg.data))

    try:
        await nc.subscribe("all.>", cb=on_msg)
        limited = await nc.subscribe("limited", cb=on_msg, max_msgs=3)
        await nc.publish("limited", b"1")
        assert await asyncio.wait_for(got.get(), 10) == ("limited", b"1")

        writes = record_writes(nc)
        await nats_server.astop()
        await asyncio.wait_for(gone.wait(), 30)  # else the publish could still go to the dying socket
        await nc.publish("all.queued", b"sent while away")  # buffered by nats-py until it is back
        await nats_server.astart()
        await asyncio.wait_for(back.wait(), 30)

        assert nc.stats["reconnects"] == 1
        handshake = [w for w in writes if w and w[0].startswith(b"CONNECT ")]
        assert len(handshake) == 1, writes
        commands = [line.split(b" ", 1)[0].strip() for line in handshake[0]]
        assert commands == [b"CONNECT", b"PING", b"SUB", b"SUB", b"UNSUB", b"PUB"], handshake[0]
        assert handshake[0][4] == f"UNSUB {limited._id} 2\r\n".encode()
        later = writes[writes.index(handshake[0]) + 1 :]
        assert not [line for w in later for line in w if line.startswith(b"SUB")], "subscriptions sent twice"

        assert await asyncio.wait_for(got.get(), 10) == ("all.queued", b"sent while away")
        other = await connect(url=nats_server.url, name="other")
        for data in (b"2", b"3", b"4"):
            await other.publish("limited", data)
        await other.publish("all.after", b"after")
        await other.flush()
        # One publisher, one subscriber connection: delivered in order, so a "limited" 4 past
        # the limit would come before the "all.after" sent behind it.
        received: list[tuple[str, bytes]] = []
        while not received or received[-1][0] != "all.after":
            received.append(await asyncio.wait_for(got.get(), 10))
        assert received == [("limited", b"2"), ("limited", b"3"), ("all.after", b"after")]
    finally:
        if other is not None:
            await other.close()
        await nc.close()


@pytest.mark.nats
async def test_a_failing_handshake_callback_is_said_and_the_reconnect_goes_on(nats_server: EmbeddedNats) -> None:
    """``handshake_cb`` raising: the error reaches ``error_cb``, the try goes on without it (what it
    queued before failing is sent too), and the client is back with its subscriptions."""
    errors: list[Exception] = []
    gone, back = asyncio.Event(), asyncio.Event()

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    async def disconnected() -> None:
        gone.set()

    async def reconnected() -> None:
        back.set()

    nc = await connect(url=nats_server.url, error_cb=on_error, disconnected_cb=disconnected, reconnected_cb=reconnected)
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        got.put_nowait(msg.data)

    async def failing() -> None:
        await nc.subscribe("made.in.handshake", cb=on_msg)
        raise RuntimeError("a bug in the callback")

    try:
        await nc.subscribe("all.>", cb=on_msg)
        nc.handshake_cb = failing
        await nats_server.astop()
        await asyncio.wait_for(gone.wait(), 30)
        await nats_server.astart()
        await asyncio.wait_for(back.wait(), 30)
        assert [str(e) for e in errors if isinstance(e, RuntimeError)] == ["a bug in the callback"]
        assert nc.stats["reconnects"] == 1
        for subject in ("all.after", "made.in.handshake"):
            await nc.publish(subject, subject.encode())
        assert {await asyncio.wait_for(got.get(), 10) for _ in range(2)} == {b"all.after", b"made.in.handshake"}
    finally:
        await nc.close()


@pytest.mark.nats
async def test_the_flusher_task_lives_on_across_reconnects_and_writes_after_them(nats_server: EmbeddedNats) -> None:
    """One flusher task for the connection's life (nats-py made one per reconnect): what is
    published after a reconnect, without a flush(), goes out through it."""
    events = {name: asyncio.Event() for name in ("gone", "back", "other back")}

    def setter(name: str) -> Callable[[], Awaitable[None]]:
        async def callback() -> None:
            events[name].set()

        return callback

    nc = await connect(url=nats_server.url, disconnected_cb=setter("gone"), reconnected_cb=setter("back"))
    other = await connect(url=nats_server.url, name="other", reconnected_cb=setter("other back"))
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        got.put_nowait(msg.data)

    try:
        await other.subscribe("after.>", cb=on_msg)
        await other.flush()
        flusher = nc._flusher_task
        assert flusher is not None
        await nats_server.astop()
        await asyncio.wait_for(events["gone"].wait(), 30)
        await nats_server.astart()
        await asyncio.wait_for(events["back"].wait(), 30)
        await asyncio.wait_for(events["other back"].wait(), 30)
        await other.flush()  # its subscription is the server's again
        assert nc._flusher_task is flusher
        assert not flusher.done()
        await nc.publish("after.reconnect", b"through the flusher")
        assert await asyncio.wait_for(got.get(), 10) == b"through the flusher"
    finally:
        await other.close()
        await nc.close()
