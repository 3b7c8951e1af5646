"""healthbus subscribers: the client library services embed (docs/subscribers.md).

``HealthClient`` follows every target's state over NATS; ``is_available()`` is a dict
lookup, safe on every request. ``SyncHealthClient`` is the same client for synchronous
code (it runs a HealthClient on a background thread; fork-safe). Degraded-mode adapters
and web-framework helpers live in their own modules, each an optional extra, and are
never imported from here (so importing this package pulls in no redis, sqlalchemy,
faststream or web framework):

- ``healthbus.subscribers.redis`` — ``HealthyRedis`` (``pip install healthbus-subscribers[redis]``)
- ``healthbus.subscribers.sqlalchemy`` — ``DatabaseGuard`` (``[sqlalchemy]``)
- ``healthbus.subscribers.faststream`` — ``requires`` / ``HealthMiddleware`` (``[faststream]``)
- ``healthbus.subscribers.fastapi`` — ``requires`` / ``install`` / ``lifespan`` (``[fastapi]``, Starlette too)
- ``healthbus.subscribers.flask`` — ``init_app`` / ``requires`` (``[flask]``)
- ``healthbus.subscribers.django`` — ``HealthMiddleware`` / ``requires`` / the ORM guard (``[django]``)
- ``healthbus.subscribers.celery`` — ``HealthTask`` / ``install`` (``[celery]``)
- ``healthbus.subscribers.testing`` — ``FakeHealthClient`` for your unit tests
"""

from healthbus.subscribers._client import ClientOptions, HealthClient
from healthbus.subscribers._state import AVAILABLE_STATES, BUS_LOSS_POLICIES, BusLossPolicy, BusStatus, TargetState
from healthbus.subscribers._sync import ForkedClientError, SyncHealthClient
from healthbus.subscribers._view import DependencyUnavailable, HealthView

__all__ = [
    "AVAILABLE_STATES",
    "BUS_LOSS_POLICIES",
    "BusLossPolicy",
    "BusStatus",
    "ClientOptions",
    "DependencyUnavailable",
    "ForkedClientError",
    "HealthClient",
    "HealthView",
    "SyncHealthClient",
    "TargetState",
]
