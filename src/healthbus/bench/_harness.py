"""Adapters between the benchmarks and the healthbus components they measure.

The suites talk to the coordinator, the probe workers and the subscriber library only
through this module, so an API detail lives in one place. ``require_*`` raise
:class:`SuiteUnavailable` with a clear sentence when a component is not installed.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from nats.aio.client import Client

from healthbus.bench._framework import SuiteUnavailable

__all__ = [
    "RunningCoordinator",
    "RunningProbeWorker",
    "open_health_client",
    "redis_adapter",
    "require_coordinator",
    "require_health_client",
    "require_probe_worker",
]


def _attr(module: str, name: str, what: str, *fallbacks: str) -> Any:
    """``module.name``; ``fallbacks`` are modules tried next (a component mid-way to
    exporting its public name)."""
    problem = ""
    for mod_name in (module, *fallbacks):
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as exc:
            problem = f"{mod_name}: {exc}"
            continue
        value = getattr(mod, name, None)
        if value is not None:
            return value
        problem = f"{module}.{name} is missing"
    raise SuiteUnavailable(f"{what} is not available ({problem})")


def require_coordinator() -> None:
    """Raise SuiteUnavailable unless the coordinator service can be imported."""
    _coordinator_cls()


def _coordinator_cls() -> Any:
    return _attr(
        "healthbus.coordinator", "CoordinatorService", "the coordinator service", "healthbus.coordinator._service"
    )


class RunningCoordinator:
    """A started coordinator service and read access to its counters."""

    def __init__(self, service: Any, nc: Client) -> None:
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
        service = service_cls(config, nc)
        errors.append(service.error_cb)
        await service.start()
        # start() returns once SUB is queued, not once the server has it: without this
        # round trip a result published right after could reach no one.
        await nc.flush()
        return cls(service, nc)

    def counters(self) -> dict[str, int]:
        """A flat summary of the service's counters (results by outcome, drops by reason)."""
        s = self.service
        out: dict[str, int] = {}
        for outcome, n in dict(getattr(s, "results", {})).items():
            out[f"results_{outcome}"] = int(n)
        for reason, n in dict(getattr(s, "dropped", {})).items():
            out[f"dropped_{reason}"] = int(n)
        out["transitions"] = self.transitions()
        out["published"] = int(getattr(s, "published", 0))
        out["outbox_pending"] = int(getattr(s, "pending", 0))
        return out

    def decided(self) -> int:
        """ProbeResult messages handled so far: decided, or counted and dropped."""
        return int(self.service.handled)

    def accepted(self) -> int:
        """ProbeResults accepted and decided (not dropped)."""
        return int(sum(getattr(self.service, "results", {}).values()))

    def transitions(self) -> int:
        """StateChanged events decided so far."""
        return int(sum(getattr(self.service, "transitions", {}).values()))

    def published(self) -> int:
        """StateChanged events acknowledged by JetStream so far."""
        return int(getattr(self.service, "published", 0))

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

    def __init__(self, worker: Any, nc: Client) -> None:
        self.worker = worker
        self.nc = nc

    @classmethod
    async def start(cls, config_text: str, url: str, worker_id: str) -> RunningProbeWorker:
        """Start a worker for ``config_text`` with vantage-point id ``worker_id``."""
        from healthbus.bench._natsutil import bench_connect
        from healthbus.protocol import load_config_text

        worker_cls = _attr("healthbus.probes", "ProbeWorker", "the probe worker")
        config = load_config_text(config_text, source="<bench>")
        worker = worker_cls(config, worker_id=worker_id)
        nc = await bench_connect(url, f"bench-{worker_id}")
        await worker.start(nc)
        await nc.flush()  # the worker's subscriptions are registered server-side
        return cls(worker, nc)

    async def stop(self) -> None:
        """Stop the worker and close its connection."""
        try:
            await self.worker.stop()
        finally:
            await self.nc.close()


@contextlib.asynccontextmanager
async def open_health_client(url: str, prefix: str) -> AsyncIterator[Any]:
    """A connected HealthClient (every target's current state loaded)."""
    client_cls = _attr("healthbus.subscribers", "HealthClient", "the subscriber library (HealthClient)")
    async with client_cls.connect(url, prefix=prefix) as health:
        yield health


@contextlib.asynccontextmanager
async def redis_adapter(health: Any, url: str, target: str) -> AsyncIterator[Any]:
    """The subscriber library's Redis adapter around a fresh redis-py client for ``url``."""
    import redis.asyncio as aioredis

    adapter_cls = _attr(
        "healthbus.subscribers.redis", "HealthyRedis", "the Redis adapter (healthbus.subscribers.redis)"
    )
    client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        yield adapter_cls(client, health, target=target)
    finally:
        await client.aclose()
