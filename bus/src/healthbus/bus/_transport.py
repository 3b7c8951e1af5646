"""nats-py's TCP transport on a bare non-blocking socket: less work per connection.

nats-py's ``TcpTransport`` reads and writes through asyncio streams: a connection made
with ``asyncio.open_connection`` builds a transport, a protocol, a stream reader and a
stream writer, and each step of that (connection made, reader added, waiter woken) and of
the close (connection lost, wait closed) is a callback of its own on the event loop. A
fleet reconnecting to a restarted server pays that ten thousand times at once.
:class:`SocketTransport` does what nats-py needs of a transport with the socket itself:
the event loop watches the socket for reading from the connect until the close, a read
takes what has arrived (or waits for it), a write goes straight to the socket and only
what the socket does not take at once waits for it to become writable. Closing is
immediate.

TLS is left to asyncio: :meth:`SocketTransport.connect_tls` hands the connected socket
to asyncio streams and upgrades them as nats-py does, and the transport goes on through
them until its next connect.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from typing import Any
from urllib.parse import ParseResult

from nats.aio.transport import TcpTransport

__all__ = ["SocketTransport"]

#: Past this many received and unread bytes the socket is not read until the reader catches up
#: (asyncio's stream reader pauses at twice its limit, nats-py's 32 KiB buffer: the same).
_READ_PAUSE = 2 * 32768
#: ``drain()`` waits while more than this many written bytes are still to be sent (asyncio's default).
_WRITE_HIGH = 64 * 1024


class SocketTransport(TcpTransport):
    """A nats-py transport on a non-blocking TCP socket (asyncio streams once upgraded to TLS)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._chunks: list[bytes] = []  # received, not yet read
        self._unread = 0
        self._reading = False  # the event loop watches the socket for reading
        self._writing = False  # ... and for writing (some of what was written is unsent)
        self._eof = False
        self._error: OSError | None = None
        self._waiter: asyncio.Future[None] | None = None  # a read waiting for data
        self._out = bytearray()  # written, not yet taken by the socket
        self._writable: asyncio.Future[None] | None = None  # a drain waiting for the socket

    # ------------------------------------------------------------ connecting

    async def connect(self, uri: ParseResult, buffer_size: int, connect_timeout: float) -> None:
        """nats-py's connect: to ``uri``'s host and port within ``connect_timeout`` seconds."""
        async with asyncio.timeout(connect_timeout):
            await self.open(uri.hostname or "", uri.port or 4222)

    async def open(self, host: str, port: int) -> None:
        """Connect to ``host:port`` (the caller bounds the time); any earlier connection is closed first."""
        self.close()
        if self._io_writer is not None:  # the last connection went through TLS: back to the bare socket
            for writer in (self._io_writer, self._bare_io_writer):
                if writer is not None:
                    writer.close()
            self._bare_io_reader = self._io_reader = None
            self._bare_io_writer = self._io_writer = None
        loop = asyncio.get_running_loop()
        addresses = _literal(host, port) or await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        errors: list[OSError] = []
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                errors.append(exc)
                continue
            except BaseException:
                sock.close()
                raise
            self._start(loop, sock)
            return
        if len(errors) == 1:
            raise errors[0]
        raise OSError(f"cannot connect to {host}:{port}: {'; '.join(str(e) for e in errors) or 'no address'}")

    def _start(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop, self._sock = loop, sock
        self._chunks, self._unread = [], 0
        self._eof, self._error = False, None
        self._out = bytearray()
        self._resume()

    async def connect_tls(
        self, uri: str | ParseResult, ssl_context: ssl.SSLContext, buffer_size: int, connect_timeout: float
    ) -> None:
        """nats-py's TLS upgrade, on asyncio streams made from this connection's socket."""
        if self._io_writer is None:
            sock = self._detach()
            if sock is None:
                raise ConnectionResetError("nats: not connected")
            try:
                reader, writer = await asyncio.open_connection(sock=sock, limit=buffer_size)
            except BaseException:
                sock.close()
                raise
            self._bare_io_reader = self._io_reader = reader
            self._bare_io_writer = self._io_writer = writer
        await super().connect_tls(uri, ssl_context, buffer_size, connect_timeout)  # type: ignore[arg-type]

    def _detach(self) -> socket.socket | None:
        """Stop watching the socket and give it up (to asyncio streams)."""
        sock = self._sock
        self._pause()
        self._stop_writing()
        self._sock = None
        return sock

    # ------------------------------------------------------------ reading

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            # The peer closed with something of ours unread (or after its FIN, our next write
            # drew a reset): the end of the stream, as asyncio's reader mostly sees it (it reads
            # the FIN first), so nats-py says "unexpected EOF" through its error callback.
            data = b""
        except OSError as exc:
            self._fail(exc)
            return
        if data:
            self._chunks.append(data)
            self._unread += len(data)
            if self._unread > _READ_PAUSE:
                self._pause()
        else:
            self._eof = True
            self._pause()
        self._wake()

    def _wake(self) -> None:
        """Wake a read waiting for data."""
        _settle(self._waiter)
        self._waiter = None

    def _pause(self) -> None:
        if self._reading and self._loop is not None and self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._reading = False

    def _resume(self) -> None:
        if not self._reading and not self._eof and self._loop is not None and self._sock is not None:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)
            self._reading = True

    async def _wait(self) -> None:
        assert self._loop is not None
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _ended(self) -> bool:
        """Whether nothing more will come (the stream ended); raises what broke the connection."""
        if self._eof:
            return True
        if self._error is not None:
            raise self._error
        return self._sock is None

    def _take(self, size: int) -> bytes:
        chunks = self._chunks
        first = chunks[0]
        if len(first) <= size:
            del chunks[0]
            data = first
        else:
            data, chunks[0] = first[:size], first[size:]
        self._unread -= len(data)
        if not self._reading and self._unread <= _READ_PAUSE // 2:
            self._resume()
        return data

    async def read(self, buffer_size: int) -> bytes:
        """Up to ``buffer_size`` bytes received (waits for some); ``b""`` at the end of the stream."""
        if self._io_reader is not None:
            return await super().read(buffer_size)  # type: ignore[no-any-return]
        while not self._chunks:
            if self._ended():
                return b""
            await self._wait()
        return self._take(buffer_size)

    async def readline(self) -> bytes:
        """The next line, ``\\n`` included (at the end of the stream: what is left, maybe ``b""``)."""
        if self._io_reader is not None:
            return await super().readline()  # type: ignore[no-untyped-call,no-any-return]
        while True:
            if self._chunks:
                if len(self._chunks) > 1:
                    self._chunks = [b"".join(self._chunks)]
                end = self._chunks[0].find(b"\n")
                if end >= 0:
                    return self._take(end + 1)
            if self._ended():
                return self._take(self._unread) if self._chunks else b""
            await self._wait()

    def at_eof(self) -> bool:
        """Whether the stream ended and everything received was read."""
        if self._io_reader is not None:
            return super().at_eof()  # type: ignore[no-untyped-call,no-any-return]
        # A broken connection is not an end of stream: its read raises (as asyncio's reader does).
        return not self._chunks and (self._eof or (self._sock is None and self._error is None))

    # ------------------------------------------------------------ writing

    def write(self, payload: bytes) -> None:
        """Send ``payload`` (what the socket does not take now is sent once it is writable)."""
        if self._io_writer is not None:
            super().write(payload)  # type: ignore[no-untyped-call]
            return
        self._send(payload)

    def writelines(self, payload: Iterable[bytes]) -> None:
        """:meth:`write` of the lines joined: one send."""
        if self._io_writer is not None:
            super().writelines(payload)  # type: ignore[no-untyped-call]
            return
        self._send(b"".join(payload))

    def _send(self, payload: bytes) -> None:
        sock = self._sock
        if sock is None or self._error is not None or not payload:
            return  # as asyncio's transport after a lost connection: dropped
        if self._out:
            self._out += payload
            return
        try:
            sent = sock.send(payload)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._fail(exc)
            return
        if sent < len(payload):
            self._out += memoryview(payload)[sent:]
            assert self._loop is not None
            self._loop.add_writer(sock.fileno(), self._on_writable)
            self._writing = True

    def _on_writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sent = sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        del self._out[:sent]
        if not self._out:
            self._stop_writing()
        if len(self._out) <= _WRITE_HIGH:
            _settle(self._writable)
            self._writable = None

    def _stop_writing(self) -> None:
        if self._writing and self._loop is not None and self._sock is not None:
            self._loop.remove_writer(self._sock.fileno())
        self._writing = False

    async def drain(self) -> None:
        """Wait while much of what was written is still unsent; raise if the connection was lost."""
        if self._io_writer is not None:
            await super().drain()  # type: ignore[no-untyped-call]
            return
        while True:
            if self._error is not None or self._sock is None:
                raise ConnectionResetError("Connection lost")
            if len(self._out) <= _WRITE_HIGH:
                return
            assert self._loop is not None
            self._writable = self._loop.create_future()
            await self._writable

    # ------------------------------------------------------------ ending

    def _fail(self, exc: OSError) -> None:
        """The connection broke: a read raises ``exc`` (unless the stream had ended before);
        writes are dropped from now on."""
        if self._error is None:
            self._error = exc
        self._close_socket()

    def close(self) -> None:
        """Close the connection now (the next read sees the end of the stream)."""
        self._eof = True
        if self._io_writer is not None:
            # Kept until the next connect, as nats-py keeps them: asyncio closes a TLS connection
            # in steps, and a stream writer dropped before that would warn it was left open.
            super().close()  # type: ignore[no-untyped-call]
        self._close_socket()

    def _close_socket(self) -> None:
        sock = self._detach()
        if sock is not None:
            sock.close()
        self._out = bytearray()
        self._wake()
        _settle(self._writable)
        self._writable = None

    async def wait_closed(self) -> None:
        """Closed already (a TLS connection: once asyncio has closed it)."""
        if self._io_writer is not None:
            await super().wait_closed()  # type: ignore[no-untyped-call]

    def __bool__(self) -> bool:
        return self._io_writer is not None or self._sock is not None


def _settle(waiter: asyncio.Future[None] | None) -> None:
    """Let whoever awaits ``waiter`` go on (None: nobody waits)."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _literal(host: str, port: int) -> list[tuple[Any, ...]]:
    """``getaddrinfo``'s answer for an IP address (no lookup); empty for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        address = (host, port) if family == socket.AF_INET else (host, port, 0, 0)
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)]
    return []
