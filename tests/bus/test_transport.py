"""SocketTransport: nats-py's TCP transport on a bare socket (bus._transport), byte for byte.

Against a TCP peer of the test's own (what a server sends, when, and whether it reads) and
against a real nats-server; TLS through it is tested in tests/deploy/test_tls.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest
from nats.aio.msg import Msg

from healthbus.bus import connect
from healthbus.bus._transport import SocketTransport
from healthbus.bus.embedded import EmbeddedNats
from tests.helpers import wait_until


class Peer:
    """A one-connection TCP server on loopback: the test's side of the connection."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            self.accepted.put_nowait((reader, writer))

        self.server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def peer() -> AsyncIterator[tuple[Peer, SocketTransport, asyncio.StreamReader, asyncio.StreamWriter]]:
    server = Peer()
    port = await server.start()
    transport = SocketTransport()
    try:
        await transport.open("127.0.0.1", port)
        reader, writer = await asyncio.wait_for(server.accepted.get(), 10)
        yield server, transport, reader, writer
    finally:
        transport.close()
        await server.stop()


async def test_lines_and_reads_come_as_sent_however_the_bytes_are_split(
    peer: tuple[Peer, SocketTransport, asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    _, transport, _, writer = peer
    writer.write(b"INFO {}")
    await writer.drain()
    await wait_until(lambda: transport._unread == len(b"INFO {}"), 10, "the first part to arrive on its own")
    writer.write(b"\r\nPONG\r\nMSG a 1 5\r\nhello\r\n")
    await writer.drain()
    assert await asyncio.wait_for(transport.readline(), 10) == b"INFO {}\r\n"
    assert await asyncio.wait_for(transport.readline(), 10) == b"PONG\r\n"
    rest = b""
    while len(rest) < len(b"MSG a 1 5\r\nhello\r\n"):
        rest += await asyncio.wait_for(transport.read(4), 10)  # no more than asked for
    assert rest == b"MSG a 1 5\r\nhello\r\n"
    assert not transport.at_eof()


async def test_the_end_of_the_stream_reads_as_empty_after_what_was_left(
    peer: tuple[Peer, SocketTransport, asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    _, transport, _, writer = peer
    writer.write(b"-ERR 'Authorization Violation'")  # no line end: the server closed after it
    writer.close()
    assert await asyncio.wait_for(transport.readline(), 10) == b"-ERR 'Authorization Violation'"
    assert await asyncio.wait_for(transport.read(100), 10) == b""
    assert transport.at_eof()


async def test_a_peer_that_does_not_read_holds_drain_until_it_does(
    peer: tuple[Peer, SocketTransport, asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """What the socket does not take waits in the transport, and drain() waits for it to go."""
    _, transport, reader, _ = peer
    payload = bytes(range(256)) * 64 * 1024  # 16 MiB: more than both sockets' buffers hold
    transport.writelines([b"PUB x ", payload, b"\r\n"])
    drained = asyncio.ensure_future(transport.drain())
    await asyncio.sleep(0)  # drain() runs up to its wait
    assert len(transport._out) > 64 * 1024  # the peer has read nothing: the rest waits here
    assert transport._writable is not None  # and drain() waits for the socket to take it
    assert not drained.done()
    got = await asyncio.wait_for(reader.readexactly(6 + len(payload) + 2), 30)
    await asyncio.wait_for(drained, 10)
    assert got == b"PUB x " + payload + b"\r\n"


async def test_a_reset_connection_ends_the_stream_and_fails_drain(
    peer: tuple[Peer, SocketTransport, asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """A reset reads as the end of the stream (nats-py then says "unexpected EOF", as it does when
    asyncio's reader sees the peer's FIN first); writing after it fails."""
    _, transport, _, writer = peer
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close = RST
    writer.transport.abort()
    assert await asyncio.wait_for(transport.read(100), 10) == b""
    assert transport.at_eof()
    transport.write(b"PING\r\n")  # into a reset connection: the send fails, the transport closes
    assert not transport
    with pytest.raises(ConnectionResetError):
        await transport.drain()


async def test_after_close_reads_end_and_writes_are_dropped(
    peer: tuple[Peer, SocketTransport, asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    _, transport, reader, _ = peer
    pending = asyncio.ensure_future(transport.read(100))
    await asyncio.sleep(0)  # the read runs up to its wait for data
    assert transport._waiter is not None
    transport.close()
    assert await asyncio.wait_for(pending, 10) == b""  # a waiting read is woken
    assert transport.at_eof()
    assert not transport
    transport.write(b"PING\r\n")  # dropped, as asyncio's transport does after a close
    await transport.wait_closed()
    with pytest.raises(ConnectionResetError):
        await transport.drain()
    assert await asyncio.wait_for(reader.read(100), 10) == b""  # the peer sees the close


async def test_a_refused_connection_raises_an_os_error() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    transport = SocketTransport()
    with pytest.raises(ConnectionRefusedError):
        await transport.connect(urlparse(f"nats://127.0.0.1:{port}"), 32768, 5)
    assert not transport


@pytest.mark.nats
async def test_messages_larger_than_the_socket_buffers_cross_a_real_server(nats_server: EmbeddedNats) -> None:
    """Partial writes, drain and the pause of reading while much is unread, end to end."""
    host = f"nats://localhost:{nats_server.port}"  # a name: looked up, not taken as an address
    sender = await connect(url=host, name="sender")
    listener = await connect(url=nats_server.url, name="listener")
    assert isinstance(sender._transport, SocketTransport)
    assert isinstance(listener._transport, SocketTransport)
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        got.put_nowait(msg.data)

    try:
        await listener.subscribe("big", cb=on_msg, pending_bytes_limit=64 * 1024 * 1024)
        await listener.flush()
        payloads = [bytes([i]) * 900_000 for i in range(12)]
        for payload in payloads:
            await sender.publish("big", payload)
        await sender.flush()
        for payload in payloads:
            assert await asyncio.wait_for(got.get(), 30) == payload
    finally:
        await sender.close()
        await listener.close()
