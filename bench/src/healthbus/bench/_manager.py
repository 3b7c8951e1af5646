"""The fan-out baseline: the health manager every service instance runs without healthbus.

This is the "one manager per process" design, written the way a careful user writes it
with redis-py: its own client per instance, a PING every ``interval`` under a socket
timeout, redis-py's own ``Retry`` with exponential backoff on connection errors, and a
small circuit breaker (degraded after ``failure_threshold`` failed checks, healthy again
after one good one). It is deliberately reasonable: the comparison is fair only if the
baseline is what a competent team would ship.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["RedisHealthManager"]


class RedisHealthManager:
    """One instance's own view of one Redis: ``healthy`` flips on its own checks."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        interval: float = 1.0,
        timeout: float = 1.0,
        retries: int = 2,
        failure_threshold: int = 1,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.interval = interval
        self.failure_threshold = failure_threshold
        self.healthy: bool | None = None
        self.failures = 0
        self.checks = 0
        self.on_change = on_change
        self.client = aioredis.Redis(
            host=host,
            port=port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            single_connection_client=True,
        )

    def _set(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            if self.on_change is not None:
                self.on_change(healthy)

    async def check(self) -> bool:
        """One check (PING, with redis-py's retries); updates the breaker."""
        self.checks += 1
        try:
            await self.client.ping()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self.failures += 1
            if self.failures >= self.failure_threshold:
                self._set(False)
            return False
        self.failures = 0
        self._set(True)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Check every ``interval`` until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            await self.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, self.interval - (loop.time() - started)))

    async def close(self) -> None:
        """Close the client."""
        with contextlib.suppress(Exception):
            await self.client.aclose()
