"""A 3-node JetStream cluster of real nats-servers: :class:`healthbus.bench.support.NatsCluster`."""

from __future__ import annotations

from healthbus.bench.support import NatsCluster

__all__ = ["NatsCluster"]
