"""healthbus subscribers: the client library services embed (DESIGN section 6).

``HealthClient`` follows every target's state over NATS; ``is_available()`` is a dict
lookup, safe on every request. Degraded-mode adapters live in their own modules, each an
optional extra, and are never imported from here (so importing this package pulls in no
redis, sqlalchemy or faststream):

- ``healthbus.subscribers.redis`` — ``HealthyRedis`` (``pip install healthbus-subscribers[redis]``)
- ``healthbus.subscribers.sqlalchemy`` — ``DatabaseGuard`` (``[sqlalchemy]``)
- ``healthbus.subscribers.faststream`` — ``requires`` / ``HealthMiddleware`` (``[faststream]``)
- ``healthbus.subscribers.testing`` — ``FakeHealthClient`` for your unit tests
"""

# The NATS layer lives in healthbus.bus; these names stay here for code written against them.
from healthbus.bus import BusUnavailable, Follower, StateStream, connect, ensure_stream, resolve_url
from healthbus.subscribers._client import HealthClient
from healthbus.subscribers._state import AVAILABLE_STATES, BUS_LOSS_POLICIES, BusLossPolicy, BusStatus, TargetState
from healthbus.subscribers._view import DependencyUnavailable, HealthView

__all__ = [
    "AVAILABLE_STATES",
    "BUS_LOSS_POLICIES",
    "BusLossPolicy",
    "BusStatus",
    "BusUnavailable",
    "DependencyUnavailable",
    "Follower",
    "HealthClient",
    "HealthView",
    "StateStream",
    "TargetState",
    "connect",
    "ensure_stream",
    "resolve_url",
]
