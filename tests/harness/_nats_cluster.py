"""A 3-node JetStream cluster of real nats-servers: :class:`healthbus.bus.embedded.NatsCluster`."""

from __future__ import annotations

from healthbus.bus.embedded import NatsCluster

__all__ = ["NatsCluster"]
