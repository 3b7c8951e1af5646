"""A TCP proxy a test can cut and restore: a network partition between one client and a server that stays up."""

from __future__ import annotations

import asyncio
import contextlib

from healthbus.bus.embedded import free_port


class Proxy:
    """Forwards 127.0.0.1:``port`` to ``upstream_port``; ``cut()`` drops every connection and stops listening."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.downstream_budget: int | None = None
        """When set: forward this many more bytes server -> client, then :meth:`cut` (a reply cut short)."""
        self._held: dict[asyncio.StreamWriter, bytearray] | None = None

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:PORT`` of the proxy."""
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen (again) on the same port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Stop listening and drop every forwarded connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        self._writers.clear()

    def hold(self) -> None:
        """Keep what the server sends (to every client) until :meth:`release`."""
        self._held = {}

    @property
    def held(self) -> bytes:
        """Everything held so far, server -> client."""
        return b"".join(bytes(data) for data in (self._held or {}).values())

    def release(self) -> None:
        """Send what was held, each connection's bytes in one write (one read for the client), and stop holding."""
        held, self._held = self._held or {}, None
        for dst, data in held.items():
            dst.write(bytes(data))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        for src, dst, downstream in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pump(src, dst, downstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, downstream: bool) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                budget = self.downstream_budget
                if downstream and budget is not None:
                    if len(data) >= budget:
                        dst.write(data[:budget])
                        await dst.drain()
                        self.downstream_budget = None
                        asyncio.get_running_loop().create_task(self.cut())
                        return
                    self.downstream_budget = budget - len(data)
                if downstream and self._held is not None:
                    self._held.setdefault(dst, bytearray()).extend(data)
                    continue
                dst.write(data)
                await dst.drain()
        dst.close()
