"""The FastStream middleware never spins when the handler fails fast while the bus says available."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from healthbus.subscribers import DependencyUnavailable
from healthbus.subscribers.faststream import HealthMiddleware
from healthbus.subscribers.testing import FakeHealthClient


class _HeldMessage:
    """The parts of a FastStream NatsMessage the middleware uses, on its last allowed delivery."""

    def __init__(self, num_delivered: int) -> None:
        self.raw_message = SimpleNamespace(subject="orders.new", metadata=SimpleNamespace(num_delivered=num_delivered))
        self.progress = 0
        self.naks: list[float] = []

    async def in_progress(self) -> None:
        self.progress += 1

    async def nack(self, delay: float | None = None) -> None:
        self.naks.append(delay or 0.0)


async def test_last_delivery_handler_failing_fast_is_held_not_retried_in_a_tight_loop() -> None:
    """Bus says available, handler raises DependencyUnavailable (a local trip): wait before the next try."""
    health = FakeHealthClient({"postgres-main": "healthy"})
    middleware = HealthMiddleware(health, "postgres-main", max_deliver=3, hold_interval=0.05)
    message = _HeldMessage(num_delivered=3)
    progress_at_call: list[int] = []

    async def handler(_msg: Any) -> str:
        progress_at_call.append(message.progress)
        if len(progress_at_call) < 3:
            raise DependencyUnavailable("postgres-main", None, "refused: connection failed here", kind="refused")
        return "stored"

    result = await asyncio.wait_for(middleware.consume(handler, message), 10)
    assert result == "stored"
    assert message.naks == []  # the last delivery is never nak'ed away
    # Between two attempts the message was held (in_progress sent, then a wait): no busy loop.
    assert progress_at_call[0] == 0
    assert progress_at_call[1] > progress_at_call[0]
    assert progress_at_call[2] > progress_at_call[1]
    assert middleware.gate.passed == 1
