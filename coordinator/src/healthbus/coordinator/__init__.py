"""healthbus coordinator: the pure decision core and the NATS service around it.

``Decider`` (no I/O, no clock: every method takes ``now``) decides; ``CoordinatorService``
consumes ``<prefix>.probe.*``, calls the core, publishes StateChanged to the state stream
and answers ``<prefix>.ctl.*``. See docs/coordinator.md.
"""

from healthbus.coordinator._core import (
    ControlError,
    Decider,
    Now,
    Rejected,
    backoff_delay,
    degraded_need,
    is_refresh,
    quorum_need,
)
from healthbus.coordinator._leader import LEASE_KEY, bucket_for, leaders, lease_key
from healthbus.coordinator._outbox import Outbox
from healthbus.coordinator._partitions import PartitionedCoordinator
from healthbus.coordinator._service import CoordinatorService
from healthbus.protocol.clock import Clock, SystemClock

__all__ = [
    "LEASE_KEY",
    "Clock",
    "ControlError",
    "CoordinatorService",
    "Decider",
    "Now",
    "Outbox",
    "PartitionedCoordinator",
    "Rejected",
    "SystemClock",
    "backoff_delay",
    "bucket_for",
    "degraded_need",
    "is_refresh",
    "leaders",
    "lease_key",
    "quorum_need",
]
