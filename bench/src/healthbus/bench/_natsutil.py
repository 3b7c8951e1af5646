"""Small NATS helpers for benchmark roles: a fail-fast connect and a counting subscriber."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from healthbus.bench._measure import now_ns
from healthbus.bus import sync_subscriptions

__all__ = ["CountingSubscriber", "bench_connect"]


async def bench_connect(url: str, name: str, **extra: Any) -> Client:
    """Connect to the benchmark's own nats-server, failing fast if it is not there."""

    async def quiet(exc: Exception) -> None:  # nats-py would log every hiccup with a traceback
        return None

    options: dict[str, Any] = {
        "servers": [url],
        "name": name,
        "connect_timeout": 5,
        "max_reconnect_attempts": 0,
        "allow_reconnect": False,
        "error_cb": quiet,
        "pending_size": 64 * 1024 * 1024,
    }
    options.update(extra)
    return await nats.connect(**options)


class CountingSubscriber:
    """The baseline: a raw nats-py callback that only counts messages (no decoding).

    ``first_ns`` and ``last_ns`` are the machine-wide monotonic times of the first
    message and of message number ``expected``; ``done`` is set on that message.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first_ns = 0
        self.last_ns = 0
        self.done = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        """The subscription callback."""
        self.count += 1
        if self.count == 1:
            self.first_ns = now_ns()
        if self.count == self.expected:
            self.last_ns = now_ns()
            self.done.set()

    async def subscribe(self, nc: Client, subject: str) -> None:
        """Subscribe with pending limits large enough to never drop a benchmark message."""
        await nc.subscribe(
            subject,
            cb=self.on_msg,
            pending_msgs_limit=max(self.expected * 2, 1024),
            pending_bytes_limit=1024 * 1024 * 1024,
        )
        await sync_subscriptions(nc)
