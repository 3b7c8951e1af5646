"""GroupRouter: reads to a healthy replica by pick(), writes to the primary, on three real
PostgreSQL servers (each holds a table naming itself, so a query shows where it landed)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text

from healthbus.protocol import load_config_text
from healthbus.subscribers import DependencyUnavailable
from healthbus.subscribers.sqlalchemy import GroupRouter
from healthbus.subscribers.testing import FakeHealthClient
from tests.harness._postgres import PostgresServer

pytestmark = pytest.mark.postgres

MEMBERS = ("pg-a", "pg-b", "pg-c")


@pytest.fixture
async def servers(postgres_server_factory: Callable[..., PostgresServer]) -> dict[str, PostgresServer]:
    """Three PostgreSQL servers; each has ``whoami(name)`` holding its member name."""
    out = {}
    for member in MEMBERS:
        server = postgres_server_factory()
        conn = await asyncpg.connect(server.dsn)
        try:
            await conn.execute("CREATE TABLE whoami (name text)")
            await conn.execute("INSERT INTO whoami VALUES ($1)", member)
        finally:
            await conn.close()
        out[member] = server
    return out


def config_for(servers: dict[str, PostgresServer]) -> str:
    """Targets for the three servers and the group ``pg`` (primary ``pg-a``)."""
    lines = []
    for member, server in servers.items():
        lines += ["[[targets]]", f'name = "{member}"', 'kind = "postgres"', f'url = "{server.dsn}"', ""]
    members = ", ".join(f'"{m}"' for m in MEMBERS)
    lines += ["[[groups]]", 'name = "pg"', f"members = [{members}]", 'primary = "pg-a"']
    return "\n".join(lines) + "\n"


@pytest.fixture
async def router(servers: dict[str, PostgresServer]) -> AsyncIterator[tuple[GroupRouter, FakeHealthClient]]:
    health = FakeHealthClient(dict.fromkeys(MEMBERS, "healthy"))
    health.set_group("pg", MEMBERS, primary="pg-a")
    config = load_config_text(config_for(servers))
    routed = GroupRouter.from_config(
        config, "pg", health, pool_size=2, pool_pre_ping=False, connect_args={"timeout": 2}
    )
    try:
        yield routed, health
    finally:
        await routed.dispose()


async def where(router: GroupRouter, *, read_only: bool) -> str:
    async with router.async_session_scope(read_only=read_only) as session:
        landed = (await session.execute(text("SELECT name FROM whoami"))).scalar_one()
        assert session.info["healthbus_member"] == landed
        return str(landed)


async def spread(router: GroupRouter, n: int = 20, *, read_only: bool = True) -> Counter[str]:
    return Counter([await where(router, read_only=read_only) for _ in range(n)])


async def test_reads_spread_over_replicas_and_writes_go_to_the_primary(router: Any) -> None:
    routed, _ = router
    assert await spread(routed) == {"pg-b": 10, "pg-c": 10}
    assert await spread(routed, 6, read_only=False) == {"pg-a": 6}
    metrics = routed.metrics()
    assert (metrics["pg-b"]["reads"], metrics["pg-a"]["writes"], metrics["pg-a"]["reads"]) == (10, 6, 0)
    assert metrics["pg-b"]["pool"] == "AsyncAdaptedQueuePool"


async def test_a_replica_stopped_and_restarted(router: Any, servers: dict[str, PostgresServer]) -> None:
    routed, health = router
    servers["pg-b"].stop()
    # Before any verdict: at most one read lands on the dead replica, fails at once with the
    # kind, trips it here; the next reads go to the other replica.
    errors: list[DependencyUnavailable] = []
    landed: Counter[str] = Counter()
    for _ in range(10):
        try:
            landed[await where(routed, read_only=True)] += 1
        except DependencyUnavailable as exc:
            errors.append(exc)
    assert [(e.target, e.kind in ("refused", "connection")) for e in errors] == [("pg-b", True)]
    assert landed == {"pg-c": 9}
    health.set_state("pg-b", "unavailable")  # the verdict
    assert await spread(routed) == {"pg-c": 20}
    servers["pg-b"].start()
    health.set_state("pg-b", "healthy")  # back: a newer verdict lifts the local trip
    assert await spread(routed) == {"pg-b": 10, "pg-c": 10}


async def test_no_replica_usable_fails_fast_and_reads_never_land_on_the_primary(router: Any) -> None:
    routed, health = router
    health.set_state("pg-b", "unavailable")
    health.set_state("pg-c", "unavailable")
    with pytest.raises(DependencyUnavailable, match="no replica") as err:
        await where(routed, read_only=True)
    assert err.value.target == "pg"
    assert await where(routed, read_only=False) == "pg-a"  # writes still go
    health.set_state("pg-a", "unavailable")  # the whole group down
    with pytest.raises(DependencyUnavailable) as err:
        await where(routed, read_only=False)
    assert err.value.target == "pg-a"
    assert routed.metrics()["pg-a"]["rejected"] == 1


async def test_reads_on_the_primary_when_the_group_allows_it(router: Any) -> None:
    routed, health = router
    health.set_group("pg", MEMBERS, primary="pg-a", reads_on_primary=True)
    assert await spread(routed, 30) == {"pg-a": 10, "pg-b": 10, "pg-c": 10}


async def test_policies_route_reads(router: Any) -> None:
    routed, health = router
    health.set_group("pg", MEMBERS, primary="pg-a", policy="weighted", weights={"pg-b": 3, "pg-c": 1})
    assert await spread(routed, 20) == {"pg-b": 15, "pg-c": 5}
    health.set_group("pg", MEMBERS, primary="pg-a", policy="least-latency", latency_ms={"pg-b": 9.0, "pg-c": 1.0})
    assert await spread(routed, 10) == {"pg-c": 10}
    health.set_group("pg", MEMBERS, primary="pg-a", policy="primary-first")
    assert await spread(routed, 10) == {"pg-b": 10}
