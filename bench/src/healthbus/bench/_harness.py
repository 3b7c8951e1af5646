"""Adapters between the benchmarks and the healthbus components they measure.

The suites talk to the coordinator, the probe workers and the subscriber library only
through this module, so an API detail lives in one place. ``require_*`` raise
:class:`SuiteUnavailable` with a clear sentence when a component is not installed.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client

from healthbus.bench._framework import SuiteUnavailable

if TYPE_CHECKING:
    from healthbus.coordinator import CoordinatorService
    from healthbus.probes import ProbeWorker
    from healthbus.subscribers import HealthClient, SyncHealthClient
    from healthbus.subscribers.redis import HealthyRedis

__all__ = [
    "RunningCoordinator",
    "RunningProbeWorker",
    "connect_health_client",
    "open_health_client",
    "open_sync_health_client",
    "redis_adapter",
    "require_coordinator",
    "require_health_client",
    "require_probe_worker",
]


def _attr(module: str, name: str, what: str) -> Any:
    """``module.name``, or SuiteUnavailable naming what is missing."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise SuiteUnavailable(f"{what} is not available ({module}: {exc})") from None
    value = getattr(mod, name, None)
    if value is None:
        raise SuiteUnavailable(f"{what} is not available ({module}.{name} is missing)")
    return value


def require_coordinator() -> None:
    """Raise SuiteUnavailable unless the coordinator service can be imported."""
    _coordinator_cls()


def _coordinator_cls() -> Any:
    return _attr("healthbus.coordinator", "CoordinatorService", "the coordinator service")


class RunningCoordinator:
    """A started coordinator service and read access to its counters."""

    def __init__(self, service: CoordinatorService, nc: Client) -> None:
        self.service = service
        self.nc = nc

    @classmethod
    async def start(cls, config_text: str, url: str) -> RunningCoordinator:
        """Connect to ``url`` and start a coordinator for ``config_text``."""
        from healthbus.bench._natsutil import bench_connect
        from healthbus.protocol import load_config_text

        service_cls = _coordinator_cls()
        config = load_config_text(config_text, source="<bench>")
        errors: list[Callable[[Exception], Awaitable[None]]] = []

        async def forward(exc: Exception) -> None:
            # The service counts slow-consumer drops in its error callback.
            if errors:
                await errors[0](exc)

        nc = await bench_connect(url, "bench-coordinator", error_cb=forward)
        service: CoordinatorService = service_cls(config, nc)
        errors.append(service.error_cb)
        await service.start()  # returns once nats-server has its subscriptions (sync_subscriptions)
        return cls(service, nc)

    def counters(self) -> dict[str, int]:
        """A flat summary of the service's counters (results by outcome, drops by reason)."""
        s = self.service
        out = {f"results_{outcome}": n for outcome, n in s.results.items()}
        out.update({f"dropped_{reason}": n for reason, n in s.dropped.items()})
        out["transitions"] = self.transitions()
        out["published"] = s.published
        out["outbox_pending"] = s.pending
        return out

    def decided(self) -> int:
        """ProbeResult messages handled so far: decided, or counted and dropped."""
        return self.service.handled

    def accepted(self) -> int:
        """ProbeResults accepted and decided (not dropped)."""
        return sum(self.service.results.values())

    def transitions(self) -> int:
        """StateChanged events decided so far."""
        return sum(self.service.transitions.values())

    def published(self) -> int:
        """StateChanged events acknowledged by JetStream so far."""
        return self.service.published

    async def stop(self) -> None:
        """Stop the service and close its connection."""
        try:
            await self.service.stop()
        finally:
            await self.nc.close()


def require_probe_worker() -> None:
    """Raise SuiteUnavailable unless the probe worker can be imported."""
    _attr("healthbus.probes", "ProbeWorker", "the probe worker")


def require_health_client() -> None:
    """Raise SuiteUnavailable unless the subscriber library's HealthClient can be imported."""
    _attr("healthbus.subscribers", "HealthClient", "the subscriber library (HealthClient)")


class RunningProbeWorker:
    """A started probe worker with its own NATS connection."""

    def __init__(self, worker: ProbeWorker, nc: Client) -> None:
        self.worker = worker
        self.nc = nc

    @classmethod
    async def start(cls, config_text: str, url: str, worker_id: str) -> RunningProbeWorker:
        """Start a worker for ``config_text`` with vantage-point id ``worker_id``."""
        from healthbus.bench._natsutil import bench_connect
        from healthbus.protocol import load_config_text

        worker_cls = _attr("healthbus.probes", "ProbeWorker", "the probe worker")
        config = load_config_text(config_text, source="<bench>")
        worker: ProbeWorker = worker_cls(config, worker_id=worker_id)
        nc = await bench_connect(url, f"bench-{worker_id}")
        await worker.start(nc)  # returns once nats-server has its subscriptions
        return cls(worker, nc)

    async def stop(self) -> None:
        """Stop the worker and close its connection."""
        try:
            await self.worker.stop()
        finally:
            await self.nc.close()


@contextlib.asynccontextmanager
async def open_health_client(url: str, prefix: str, **options: Any) -> AsyncIterator[HealthClient]:
    """A connected HealthClient (every target's current state loaded); ``options`` go to ``connect``."""
    client_cls = _attr("healthbus.subscribers", "HealthClient", "the subscriber library (HealthClient)")
    health: HealthClient
    async with client_cls.connect(url, prefix=prefix, **options) as health:
        yield health


async def connect_health_client(url: str, prefix: str, **options: Any) -> HealthClient:
    """A started HealthClient on its own connection (``await client.close()`` ends it)."""
    client_cls = _attr("healthbus.subscribers", "HealthClient", "the subscriber library (HealthClient)")
    health: HealthClient = await client_cls.connect(url, prefix=prefix, **options)
    return health


@contextlib.asynccontextmanager
async def open_sync_health_client(url: str, prefix: str) -> AsyncIterator[SyncHealthClient]:
    """A connected SyncHealthClient (its own thread and loop; connected and closed off this loop)."""
    import asyncio

    client_cls = _attr("healthbus.subscribers", "SyncHealthClient", "the subscriber library (SyncHealthClient)")
    health: SyncHealthClient = await asyncio.to_thread(client_cls.connect, url, prefix=prefix)
    try:
        yield health
    finally:
        await asyncio.to_thread(health.close)


@contextlib.asynccontextmanager
async def redis_adapter(
    health: HealthClient, url: str, target: str, *, fast: bool = False
) -> AsyncIterator[HealthyRedis]:
    """The subscriber library's Redis adapter around a fresh redis-py client for ``url``.

    ``fast``: a client as a latency-minded service configures it (1 s timeouts, one retry
    without backoff), so a refused connection fails the call at once.
    """
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    adapter_cls = _attr(
        "healthbus.subscribers.redis", "HealthyRedis", "the Redis adapter (healthbus.subscribers.redis)"
    )
    if fast:
        client = aioredis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 1))
    else:
        client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        yield adapter_cls(client, health, target=target)
    finally:
        await client.aclose()
