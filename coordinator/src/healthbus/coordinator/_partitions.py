"""Partitions (``[coordinator] partitions = N``): one coordinator process, N partition services.

The targets are split by :func:`healthbus.protocol.partition_of` of their names (FNV-1a
32-bit, mod N: the hash of nats-server's ``{{partition(N, i)}}`` subject mapping). Each
partition is one :class:`~._service.CoordinatorService` deciding only its targets, with
its own lease key ``leader.<p>`` in the state stream's lease bucket, its own term, outbox
and standby state. A process runs a service for every partition: it leads those whose
lease it holds and stands by for the others, so any process may lead several partitions
and a dead leader's partitions are taken over one by one by whichever standby takes each
lease first. The state stream stays one stream (each event's subject is its target's).

Routing (``[coordinator] partition_routing``): with ``"filter"`` every partition service
subscribes to ``<prefix>.probe.*.*`` on the process's one connection and ignores, before
decoding, what names another partition's target; with ``"server"`` nats-server maps each
result to ``<prefix>.part.<p>.probe.…`` and each service subscribes to its own partition's
subjects only. Reports and control requests reach every leader, which acts on its own
targets only (docs/operations.md, "Partitions").
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterable
from types import TracebackType

from nats.aio.client import Client
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from healthbus.coordinator._leader import default_holder_id
from healthbus.coordinator._service import CoordinatorService
from healthbus.protocol import Config, StateChanged
from healthbus.protocol.clock import Clock


class _PartitionMetrics(Collector):
    """Every partition service's metrics as one set of families, labelled ``partition``."""

    def __init__(self, registries: dict[int, CollectorRegistry]) -> None:
        self._registries = registries

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for p, registry in self._registries.items():
            for family in registry.collect():
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                out.samples.extend(
                    Sample(s.name, {**s.labels, "partition": str(p)}, s.value, s.timestamp, s.exemplar)
                    for s in family.samples
                )
        return list(merged.values())


class PartitionedCoordinator:
    """Every partition of one prefix, in one process: ``async with`` starts and stops them.

    Each of ``services`` decides its partition while it holds lease ``leader.<p>``;
    ``only`` runs (leads or stands by for) these partitions alone (default: all).
    """

    def __init__(
        self,
        config: Config,
        nc: Client,
        *,
        prefix: str | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        publish_timeout: float | None = None,
        restore_timeout: float = 10.0,
        secrets: Iterable[str] = (),
        lease_ttl: float | None = None,
        holder: str | None = None,
        only: Iterable[int] | None = None,
    ) -> None:
        self.partitions = config.coordinator.partitions
        if self.partitions < 2:
            raise ValueError("PartitionedCoordinator needs [coordinator] partitions >= 2 (1: CoordinatorService)")
        if not (config.coordinator.lease_ttl if lease_ttl is None else lease_ttl):
            raise ValueError("partitions need leader election: lease_ttl must be positive")
        chosen = list(range(self.partitions)) if only is None else sorted(set(only))
        if not chosen or not all(0 <= p < self.partitions for p in chosen):
            raise ValueError(f"only: expected partitions from 0 to {self.partitions - 1}, got {only!r}")
        self.holder = holder or default_holder_id()
        self.nc = nc
        extra = {} if publish_timeout is None else {"publish_timeout": publish_timeout}
        self.services = [
            CoordinatorService(
                config,
                nc,
                prefix=prefix,
                clock=clock,
                rng=rng,
                registry=CollectorRegistry(),
                restore_timeout=restore_timeout,
                secrets=secrets,
                lease_ttl=lease_ttl,
                holder=self.holder,
                partition=p,
                **extra,
            )
            for p in chosen
        ]
        self.registry = CollectorRegistry()
        """Every partition service's metrics, each sample labelled ``partition``."""
        self.registry.register(_PartitionMetrics({s.partition: s.registry for s in self.services}))

    @property
    def leading(self) -> list[int]:
        """The partitions this process leads now."""
        return [s.partition for s in self.services if s.active]

    @property
    def ready(self) -> bool:
        """Connected, every partition restored, and leading at least one partition."""
        return any(s.ready for s in self.services) and all(s._restored for s in self.services)

    @property
    def names(self) -> set[str]:
        """Every target this process's partitions decide (all configured targets)."""
        return {name for s in self.services for name in s.decider.names}

    async def start(self) -> None:
        """Start every partition service (each takes its lease or stands by)."""
        # One after the other: the first creates the stream (and the lease bucket) and
        # waits for it to answer; started together, on a fresh replicated stream the
        # others' first reads raced its leader election and failed the start.
        try:
            for service in self.services:
                await service.start()
        except BaseException:
            await self.stop(flush_timeout=0.0)
            raise

    async def stop(self, *, flush_timeout: float = 2.0) -> None:
        """Stop every partition service (publishing what is pending, releasing the leases)."""
        await asyncio.gather(*(s.stop(flush_timeout=flush_timeout) for s in self.services), return_exceptions=True)

    def reconfigure(self, config: Config) -> list[StateChanged]:
        """A live reload: each partition takes its share of ``config``'s targets."""
        events: list[StateChanged] = []
        for service in self.services:
            events.extend(service.reconfigure(config))
        return events

    async def error_cb(self, exc: Exception) -> None:
        """Connection error callback (counted once, by partition 0's service)."""
        with contextlib.suppress(Exception):
            await self.services[0].error_cb(exc)

    async def __aenter__(self) -> PartitionedCoordinator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
