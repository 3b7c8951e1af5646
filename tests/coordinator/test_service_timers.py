"""The service's timer loop while NATS is unreachable (no server needed: never connected)."""

from __future__ import annotations

import random
from datetime import timedelta

from nats.aio.client import Client

from healthbus.coordinator import CoordinatorService
from healthbus.coordinator._core import Now
from healthbus.protocol import StateChanged, load_config_text, utcnow

CONFIG = """
[coordinator]
tick = "250ms"
lease_ttl = "0s"

[[targets]]
name = "db"
kind = "tcp"
url = "tcp://127.0.0.1:1"
"""


async def test_timer_loop_does_not_spin_on_a_due_deadline_while_disconnected() -> None:
    """Disconnected, an overdue deadline (a maintenance window's end) must not shorten the
    timer sleep below ``tick`` (no 1 kHz spin)."""
    nc = Client()  # never connected: is_connected is False, as during an outage
    service = CoordinatorService(load_config_text(CONFIG, source="test"), nc, rng=random.Random(0))
    now = Now(service.clock.monotonic(), utcnow())
    opened = StateChanged(
        target="db",
        seq=3,
        at=now.wall - timedelta(seconds=10),
        previous="healthy",
        state="unavailable",
        breaker="forced_open",
        reason="maintenance until (9 s ago): upgrade",
        failures=3,
        attempt=0,
        retry_at=now.wall - timedelta(seconds=9),
        features=[],
        evidence={},
    )
    assert service.decider.restore(opened, now)
    deadline = service.decider.next_deadline()
    assert deadline is not None
    assert deadline <= service.clock.monotonic()
    assert not nc.is_connected
    assert service._timer_wait() == service.tick_interval
