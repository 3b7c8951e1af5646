"""HealthClient closed or cancelled mid-connect or mid-start leaves no half-made connection behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from healthbus.bus.embedded import EmbeddedNats
from healthbus.subscribers import HealthClient


class _SilentServer:
    """A TCP server that accepts connections and never speaks (a NATS that hangs on connect)."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self.changed = asyncio.Event()
        self.open = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self._writers.append(writer)
        self.accepted.set()
        self.changed.set()
        try:
            await reader.read()  # returns b"" when the client closes its side
        finally:
            self.open -= 1
            self.changed.set()

    async def wait_all_closed(self, timeout: float) -> None:
        """Wait until every accepted connection was closed by the client."""
        async with asyncio.timeout(timeout):
            while self.open:
                self.changed.clear()
                await self.changed.wait()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def silent_server() -> AsyncIterator[tuple[_SilentServer, int]]:
    """A hanging 'NATS' on a free local port."""
    server = _SilentServer()
    port = await server.start()
    try:
        yield server, port
    finally:
        await server.stop()


async def test_close_during_background_connect_closes_the_half_made_connection(
    silent_server: tuple[_SilentServer, int],
) -> None:
    """close() while the background task is connecting must not leave the half-open NATS socket behind."""
    server, port = silent_server
    health = await HealthClient.connect(f"nats://127.0.0.1:{port}", connect_timeout=2.0, stale_after=0)
    assert health.nc is None
    assert not health.is_available("anything")
    # start() gave up; wait until the supervisor's own retry is hanging on the socket.
    await server.wait_all_closed(10)
    server.accepted.clear()
    await asyncio.wait_for(server.accepted.wait(), 10)
    assert server.open == 1
    await health.close()
    await server.wait_all_closed(5)


async def test_cancelled_connect_closes_the_half_made_connection(silent_server: tuple[_SilentServer, int]) -> None:
    """A caller cancelling HealthClient.connect() (e.g. its own timeout) leaves no socket open."""
    server, port = silent_server
    task = asyncio.ensure_future(HealthClient.connect(f"nats://127.0.0.1:{port}", connect_timeout=2.0))
    await asyncio.wait_for(server.accepted.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await server.wait_all_closed(5)


@pytest.mark.nats
async def test_cancelled_start_after_connecting_closes_the_connection(
    nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while loading states (NATS already connected): the client's own connection is closed."""
    entered = asyncio.Event()

    async def stuck_go_live(self: HealthClient, timeout: float) -> None:
        entered.set()
        await asyncio.Event().wait()  # the state stream never answers

    monkeypatch.setattr(HealthClient, "_go_live", stuck_go_live)
    health = HealthClient(url=nats_server.url, connect_timeout=30.0)
    task = asyncio.create_task(health.start())
    await asyncio.wait_for(entered.wait(), 10)
    nc = health.nc
    assert nc is not None
    assert nc.is_connected
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert nc.is_closed
