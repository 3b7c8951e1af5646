"""Benchmark roles in child processes, and a group that always cleans them up.

A role is ``async def role(link: Link, *args) -> None`` in an importable module. It runs
in its own process (so the CPU time and peak RSS it reports are its own) started from a
``forkserver`` that has already imported the heavy modules: a hundred subscriber
processes then cost a fork each, not a fresh interpreter each.

Invariants:

- A child never writes to our stdout (its fd 1 is pointed at stderr), so ``--json``
  output stays one clean JSON object per line.
- A child dies with the forkserver, which dies with us (``PR_SET_PDEATHSIG``), and
  :class:`ChildGroup` stops every child it started on exit, also on errors and Ctrl-C:
  a polite ``("stop",)`` message, then SIGTERM, then SIGKILL.
- Every wait on a child is bounded by a timeout; a child that dies or raises turns into
  a :class:`ChildError` carrying its traceback, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import Any, Self

__all__ = ["ChildError", "ChildGroup", "Link", "Role"]

_PR_SET_PDEATHSIG = 1
# Imported once in the forkserver, so each child starts with them loaded (a missing
# optional one is skipped by the forkserver).
_PRELOAD = [
    "asyncio",
    "msgspec",
    "nats",
    "redis.asyncio",
    "healthbus.protocol",
    "healthbus.subscribers",
    "healthbus.coordinator",
    "healthbus.probes",
    "healthbus.bench._coordinator",
    "healthbus.bench._latency",
    "healthbus.bench._scale",
    "healthbus.bench._fanout",
    "healthbus.bench._fleet",
]

Role = Callable[..., Coroutine[Any, Any, None]]


class ChildError(RuntimeError):
    """A benchmark child failed: it raised (the text ends with its traceback) or died."""


class Link:
    """One end of the parent↔child pipe, with bounded async receive."""

    def __init__(self, conn: multiprocessing.connection.Connection, name: str) -> None:
        self.conn = conn
        self.name = name

    def send(self, *message: Any) -> None:
        """Send a tuple message (``kind, payload...``)."""
        self.conn.send(message)

    async def recv(self, timeout: float) -> tuple[Any, ...]:
        """The next message, waiting at most ``timeout`` seconds.

        Raises :class:`TimeoutError` when nothing came, :class:`ChildError` when the
        other side reported an error or went away.
        """
        if not self.conn.poll():
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[None] = loop.create_future()
            fd = self.conn.fileno()

            def on_readable() -> None:
                if not ready.done():
                    ready.set_result(None)

            loop.add_reader(fd, on_readable)
            try:
                await asyncio.wait_for(ready, timeout)
            except TimeoutError:
                raise TimeoutError(f"{self.name}: no message within {timeout:g}s") from None
            finally:
                loop.remove_reader(fd)
        try:
            message: tuple[Any, ...] = self.conn.recv()
        except (EOFError, OSError):
            raise ChildError(f"{self.name}: the other side exited without a word") from None
        if message and message[0] == "error":
            raise ChildError(f"{self.name} failed:\n{message[1]}")
        return message

    async def expect(self, kind: str, timeout: float) -> tuple[Any, ...]:
        """The next message, which must be of ``kind``; returns its payload items."""
        message = await self.recv(timeout)
        if message[0] != kind:
            raise ChildError(f"{self.name}: expected {kind!r}, got {message[0]!r}")
        return message[1:]

    def poll(self) -> bool:
        """True when a message (or EOF) is waiting."""
        try:
            return self.conn.poll()
        except (EOFError, OSError):
            return True


def _arm_pdeathsig() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _bootstrap(
    role: Role, conn: multiprocessing.connection.Connection, name: str, log_level: int, args: tuple[Any, ...]
) -> None:
    """Entry point of every child process."""
    _arm_pdeathsig()
    logging.basicConfig(
        level=log_level, stream=sys.stderr, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s"
    )
    os.dup2(2, 1)  # never write to the parent's stdout (it carries the JSON)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    link = Link(conn, name)
    try:
        asyncio.run(role(link, *args))
    except BaseException:
        with contextlib.suppress(Exception):
            link.send("error", traceback.format_exc())
        raise SystemExit(1) from None
    finally:
        with contextlib.suppress(Exception):
            conn.close()


_CONTEXT: BaseContext | None = None


def context() -> BaseContext:
    """The multiprocessing context of the benchmarks (a forkserver with roles preloaded)."""
    global _CONTEXT
    if _CONTEXT is None:
        if "forkserver" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)
            _CONTEXT = ctx
        else:  # pragma: no cover - not Linux
            _CONTEXT = multiprocessing.get_context("spawn")
    return _CONTEXT


class Child:
    """A started child process and the parent's end of its link."""

    def __init__(self, process: multiprocessing.process.BaseProcess, link: Link) -> None:
        self.process = process
        self.link = link

    @property
    def name(self) -> str:
        """The role name given at start."""
        return self.link.name

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self.process.pid


class ChildGroup:
    """Starts children and stops all of them on exit (async context manager)."""

    def __init__(self, stop_timeout: float = 5.0) -> None:
        self.children: list[Child] = []
        self.stop_timeout = stop_timeout

    def start(self, name: str, role: Role, *args: Any) -> Child:
        """Start ``role(link, *args)`` in a new process named ``name``."""
        ctx = context()
        parent_conn, child_conn = ctx.Pipe()
        # Children are quiet (errors only) unless the command runs with -v.
        level = logging.getLogger().getEffectiveLevel()
        log_level = level if level < logging.WARNING else logging.ERROR
        process = ctx.Process(target=_bootstrap, args=(role, child_conn, name, log_level, args), name=name, daemon=True)  # type: ignore[attr-defined]
        process.start()
        child_conn.close()
        child = Child(process, Link(parent_conn, name))
        self.children.append(child)
        return child

    async def stop(self, child: Child) -> None:
        """Ask one child to stop, then terminate, then kill it; always reaps it."""
        with contextlib.suppress(ValueError):
            self.children.remove(child)
        with contextlib.suppress(Exception):
            child.link.send("stop")
        await asyncio.to_thread(self._reap, child, self.stop_timeout)

    @staticmethod
    def _reap(child: Child, timeout: float) -> None:
        proc = child.process
        proc.join(timeout)
        if proc.is_alive():
            proc.terminate()
            proc.join(2.0)
        if proc.is_alive():
            proc.kill()
            proc.join()
        with contextlib.suppress(Exception):
            child.link.conn.close()

    async def stop_all(self) -> None:
        """Stop every child still running (politely first, all in parallel)."""
        children, self.children = self.children, []
        for child in children:
            with contextlib.suppress(Exception):
                child.link.send("stop")
        await asyncio.to_thread(self._reap_all, children, self.stop_timeout)

    @classmethod
    def _reap_all(cls, children: list[Child], timeout: float) -> None:
        deadline = time.monotonic() + timeout  # one deadline for the whole group
        for child in children:
            child.process.join(max(deadline - time.monotonic(), 0.01))
        for child in children:
            cls._reap(child, 0.01)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.shield(self.stop_all())
