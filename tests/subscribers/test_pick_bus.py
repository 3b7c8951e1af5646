"""``pick(group)`` over a real nats-server: a coordinator announces the group, HealthClient
and SyncHealthClient pick from it; a member stopped and back, a whole group down."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from healthbus.bus import connect
from healthbus.bus.embedded import EmbeddedNats
from healthbus.coordinator import CoordinatorService
from healthbus.protocol import BusSettings, load_config_text
from healthbus.subscribers import DependencyUnavailable, HealthClient, SyncHealthClient
from tests.helpers import probe_result, publish_probe, wait_until, wait_view

pytestmark = pytest.mark.nats

CONFIG = """
[defaults]
interval = "1s"
timeout = "500ms"
failure_threshold = 1
success_threshold = 1
flap = { enabled = false }
ramp = { duration = "0s" }

[coordinator]
tick = "50ms"
lease_ttl = "0s"

[[targets]]
name = "pg-a"
kind = "tcp"
url = "tcp://127.0.0.1:1"

[[targets]]
name = "pg-b"
kind = "tcp"
url = "tcp://127.0.0.1:2"

[[targets]]
name = "pg-c"
kind = "tcp"
url = "tcp://127.0.0.1:3"

[[groups]]
name = "pg"
members = ["pg-a", "pg-b", "pg-c"]
policy = "least-latency"
primary = "pg-a"
min_healthy = 2
"""


async def _result(nc: Client, target: str, outcome: str, latency_ms: float = 2.0) -> None:
    await publish_probe(nc, "healthbus", probe_result(target, outcome, latency_ms=latency_ms))  # type: ignore[arg-type]


def _picks(health: Any, n: int = 40, **kw: Any) -> Counter[str]:
    return Counter(health.pick("pg", **kw) for _ in range(n))


async def test_pick_follows_the_coordinators_group(nats_server: Any, nc: Client) -> None:
    async with CoordinatorService(load_config_text(CONFIG), nc) as service:
        await service.activated.wait()
        async with HealthClient.connect(nats_server.url) as health:
            for target, ms in (("pg-a", 1.0), ("pg-b", 5.0), ("pg-c", 5.5)):
                await _result(nc, target, "pass", ms)
            await wait_until(
                lambda: (
                    (g := health.group("pg")) is not None
                    and g.available == 3
                    and g.members[2].latency_ms is not None
                    and all(health.is_available(m.target) for m in g.members)
                ),
                10,
                "the group with three members in and their latencies",
                seen=lambda: (health.group("pg"), health.states()),
            )
            assert _picks(health) == {"pg-a": 40}  # the fastest
            assert _picks(health, read_only=True) == {"pg-b": 20, "pg-c": 20}  # reads: never the primary
            await _result(nc, "pg-b", "fail")  # a replica stopped
            await wait_view(health, lambda: not health.is_available("pg-b"), 10, "pg-b out")
            assert _picks(health, read_only=True) == {"pg-c": 40}
            await wait_until(
                lambda: health.group("pg").available == 2,  # type: ignore[union-attr]
                10,
                "the group with 2 in",
                seen=lambda: health.group("pg"),
            )
            assert health.group("pg").state == "healthy"  # type: ignore[union-attr]  # min_healthy 2
            await _result(nc, "pg-c", "fail")
            await wait_view(health, lambda: not health.is_available("pg-c"), 10, "pg-c out")
            await wait_until(
                lambda: health.group("pg").state == "degraded",  # type: ignore[union-attr]
                10,
                "the group degraded",
                seen=lambda: health.group("pg"),
            )
            with pytest.raises(DependencyUnavailable, match="no replica"):
                health.pick("pg", read_only=True)
            assert health.pick("pg") == "pg-a"
            await _result(nc, "pg-a", "fail")  # the whole group down
            await wait_view(health, lambda: not health.is_available("pg-a"), 10, "pg-a out")
            with pytest.raises(DependencyUnavailable, match="no member of group 'pg' is usable"):
                health.pick("pg")
            # A new client loads the group from the stream (no live change needed).
            async with HealthClient.connect(nats_server.url) as late:
                assert late.group("pg") is not None
                assert late.group("pg").state == "unavailable"  # type: ignore[union-attr]
            # back: the breakers re-close after retry_at; each member returns on its own verdict
            for target in ("pg-b", "pg-c"):
                await wait_until(
                    lambda t=target: _trial(nc, health, t),  # type: ignore[misc]
                    15,
                    f"{target} back",
                    seen=lambda t=target: health.state(t),  # type: ignore[misc]
                )
            assert _picks(health, read_only=True) == {"pg-b": 20, "pg-c": 20}


def _trial(nc: Client, health: HealthClient, target: str) -> bool:
    if health.is_available(target):
        return True
    asyncio.get_running_loop().create_task(_result(nc, target, "pass", 5.0))
    return False


async def test_sync_client_picks_from_its_thread(nats_server: Any, nc: Client) -> None:
    async with CoordinatorService(load_config_text(CONFIG), nc) as service:
        await service.activated.wait()
        for target in ("pg-a", "pg-b", "pg-c"):
            await _result(nc, target, "pass", 2.0)
        health = SyncHealthClient(url=nats_server.url)
        try:
            loop = asyncio.get_running_loop()
            await wait_until(
                lambda: loop.run_in_executor(None, _has_three, health),
                15,
                "the sync client sees three members in",
                seen=lambda: (health.group("pg"), health.states()),
            )
            picks = await loop.run_in_executor(None, _picks, health)
            assert picks == {"pg-a": 14, "pg-b": 13, "pg-c": 13}  # equal latencies: all share
        finally:
            await loop.run_in_executor(None, health.close)


def _has_three(health: SyncHealthClient) -> bool:
    group = health.group("pg")
    return group is not None and group.available == 3 and all(health.is_available(m.target) for m in group.members)


OLD_ROLE_CONF = """
authorization {
  users: [
    { user: admin, password: admin }
    {
      # a subscriber credential from before groups: the states only
      user: old, password: old
      permissions: {
        publish: { allow: ["$JS.API.DIRECT.GET.HEALTHBUS_STATE", "$JS.API.DIRECT.GET.HEALTHBUS_STATE.>"] }
        subscribe: { allow: ["healthbus.state.>", "_INBOX.>"] }
      }
    }
  ]
}
"""


async def test_a_credential_from_before_groups_still_follows_the_states(tmp_path: Path) -> None:
    """Without subscribe permission on <prefix>.group.>, HealthClient stays connected and follows the states;
    the groups are loaded at connect (not live), and pick() counts members by their live states."""
    conf = tmp_path / "nats.conf"
    conf.write_text(OLD_ROLE_CONF)
    with EmbeddedNats(tmp_path / "srv", config_file=str(conf)) as server:
        admin = await connect(BusSettings(url=server.url, user="admin", password="admin"))
        try:
            async with CoordinatorService(load_config_text(CONFIG), admin) as service:
                await service.activated.wait()
                await _result(admin, "pg-a", "pass")
                settings = BusSettings(url=server.url, user="old", password="old", inbox_prefix="_INBOX")
                async with HealthClient.connect(settings=settings) as health:
                    await wait_view(health, lambda: health.is_available("pg-a"), 10, "pg-a followed under the old role")
                    assert health.bus.connected, health.bus.reason
                    # The groups are loaded at connect (direct gets), not followed live; the members'
                    # states are followed live, and pick() counts members by them.
                    await wait_until(
                        lambda: health.group("pg") is not None, 10, "the group loaded", seen=lambda: health.groups()
                    )
                    assert health.pick("pg") == "pg-a"
                    await _result(admin, "pg-a", "fail")
                    await wait_view(health, lambda: not health.is_available("pg-a"), 10, "the next change, live")
                    with pytest.raises(DependencyUnavailable, match="no member of group 'pg' is usable"):
                        health.pick("pg")
                    assert health.bus.connected, health.bus.reason
        finally:
            await admin.close()
