"""DatabaseGuard: fail fast while the database is down, classify connection errors, never fake a commit."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, event, exc, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from healthbus.bus.embedded import EmbeddedNats
from healthbus.subscribers import DependencyUnavailable, HealthClient
from healthbus.subscribers.sqlalchemy import DatabaseGuard, classify_error
from healthbus.subscribers.testing import FakeHealthClient
from tests.harness._postgres import PostgresServer

from ._events import Publisher

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("name", String(50)))


def count_connects(engine: Any) -> list[int]:
    """A list that grows by one each time the engine opens a DBAPI connection."""
    opened: list[int] = []
    event.listen(engine, "connect", lambda *_: opened.append(1))
    return opened


def count_connect_attempts(engine: Any) -> list[int]:
    """A list that grows by one each time the engine tries to open a DBAPI connection (also a failing try)."""
    tried: list[int] = []
    event.listen(engine, "do_connect", lambda *_: tried.append(1))
    return tried


def test_sync_scope_commits_rolls_back_and_fails_fast(tmp_path: Path) -> None:
    """SQLite engine: commit on success, rollback on error, DependencyUnavailable before the pool when down."""
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    metadata.create_all(engine)
    health = FakeHealthClient({"postgres-main": "healthy"})
    guard = DatabaseGuard(engine, health)
    with guard.session_scope() as session:
        session.execute(items.insert().values(id=1, name="a"))

    def failing_handler() -> None:
        with guard.session_scope() as session:
            session.execute(items.insert().values(id=2, name="b"))
            raise RuntimeError("handler bug")

    with pytest.raises(RuntimeError):
        failing_handler()
    with pytest.raises(exc.IntegrityError), guard.session_scope() as session:  # not a connection error
        session.execute(items.insert().values(id=1, name="dup"))
    with guard.session_scope() as session:
        assert session.execute(select(items.c.id)).scalars().all() == [1]

    engine.dispose()
    opened = count_connects(engine)
    health.set_state("postgres-main", "unavailable", retry_at=None, reason="3/3 probes failed: refused")
    with pytest.raises(DependencyUnavailable) as info, guard.session_scope():
        pytest.fail("the body must not run")
    assert info.value.target == "postgres-main"
    assert info.value.kind == "unavailable"
    assert "3/3 probes failed" in str(info.value)
    assert opened == []  # the pool was never touched
    assert guard.pool_metrics()["rejected"] == 1
    engine.dispose()


def test_scope_types_are_checked(tmp_path: Path) -> None:
    """Using the sync scope with an AsyncEngine (or the reverse) is a clear TypeError."""
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    guard = DatabaseGuard(engine, FakeHealthClient({"postgres-main": "healthy"}))
    with pytest.raises(TypeError, match="AsyncEngine"):
        asyncio.run(_enter_async(guard))
    engine.dispose()


async def _enter_async(guard: DatabaseGuard) -> None:
    async with guard.async_session_scope():
        pass


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ConnectionRefusedError(111, "refused"), "refused"),
        (TimeoutError(), "timeout"),
        (socket.gaierror(-2, "Name or service not known"), "dns"),
        (ConnectionResetError(), "disconnected"),
        (exc.TimeoutError("QueuePool limit reached"), "pool_timeout"),
        (exc.OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "x")), "refused"),
        (exc.IntegrityError("INSERT", {}, Exception("duplicate key")), None),
        (ValueError("bad"), None),
    ],
)
def test_classify_error(error: BaseException, kind: str | None) -> None:
    """Connection-level errors get a kind; anything else is not ours to wrap."""
    assert classify_error(error) == kind


def test_invalidated_dbapi_error_is_disconnected() -> None:
    """An error that invalidated the connection (backend killed mid-session) is 'disconnected'."""
    error = exc.InterfaceError("SELECT 1", {}, Exception("connection is closed"), connection_invalidated=True)
    assert classify_error(error) == "disconnected"


@pytest.mark.postgres
async def test_async_postgres_outage_fails_fast_and_redacts(
    postgres_server_factory: Callable[..., PostgresServer],
) -> None:
    """Real PostgreSQL: works while up; stopped before the bus knows → classified, redacted, then fast local trip."""
    secret = "s3cret-Pa55word"
    server = postgres_server_factory(password=secret)
    engine = create_async_engine(server.sqlalchemy_url, pool_pre_ping=False, connect_args={"timeout": 2})
    health = FakeHealthClient({"postgres-main": "healthy"})
    guard = DatabaseGuard(engine, health, local_cooldown=60)
    attempts = count_connect_attempts(engine.sync_engine)
    try:
        async with guard.async_session_scope() as session:
            await session.run_sync(lambda s: metadata.create_all(s.connection()))
            await session.execute(items.insert().values(id=1, name="a"))
        assert guard.pool_metrics()["checked_out"] == 0

        server.stop()
        with pytest.raises(DependencyUnavailable) as info:
            async with guard.async_session_scope() as session:
                await session.execute(text("SELECT 1"))
        assert info.value.kind in ("refused", "disconnected", "shutdown", "connection")
        assert secret not in str(info.value)
        assert info.value.__cause__ is None  # summarised, not chained
        assert guard.connection_errors == 1

        # Local trip: the next session fails at once, without a connection attempt.
        tried = len(attempts)
        assert tried >= 1  # the failed session did try the stopped server
        with pytest.raises(DependencyUnavailable, match="connection failed here"):
            async with guard.async_session_scope():
                pass
        assert len(attempts) == tried
        assert guard.connection_errors == 1
        assert secret not in repr(guard)

        # The bus confirms, then recovers: sessions work again.
        health.set_state("postgres-main", "unavailable")
        server.start()
        health.set_state("postgres-main", "healthy")
        async with guard.async_session_scope() as session:
            rows = (await session.execute(select(items.c.name))).scalars().all()
        assert rows == ["a"]
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_killed_backend_during_commit_reports_unknown_outcome(postgres_server: PostgresServer) -> None:
    """If the connection dies in the scope, the error says the write was not confirmed; nothing pretends success."""
    engine = create_async_engine(postgres_server.sqlalchemy_url)
    guard = DatabaseGuard(engine, FakeHealthClient({"postgres-main": "healthy"}))
    try:
        async with guard.async_session_scope() as session:
            await session.run_sync(lambda s: metadata.create_all(s.connection()))

        async def write_while_the_server_dies() -> None:
            async with guard.async_session_scope() as session:
                await session.execute(items.insert().values(id=5, name="x"))
                postgres_server.kill()

        with pytest.raises(DependencyUnavailable) as info:
            await write_while_the_server_dies()
        assert info.value.kind in ("disconnected", "shutdown", "refused", "connection")
        assert "COMMIT" in str(info.value)
    finally:
        await engine.dispose()


@pytest.mark.postgres
@pytest.mark.nats
async def test_bus_verdict_makes_sessions_fail_fast(nats_server: EmbeddedNats, postgres_server: PostgresServer) -> None:
    """End to end: an 'unavailable' StateChanged on the bus makes sessions fail at once, with retry_at."""
    nc = await nats.connect(nats_server.url)
    pub = Publisher(nc.jetstream(), "hbsql")
    await pub.ensure()
    await pub.publish("postgres-main", "healthy")
    # pool_pre_ping: pooled connections die with the database; recommended with the guard.
    engine = create_async_engine(postgres_server.sqlalchemy_url, pool_pre_ping=True)
    try:
        async with HealthClient.connect(nats_server.url, prefix="hbsql") as health:
            guard = DatabaseGuard(engine, health)
            attempts = count_connect_attempts(engine.sync_engine)
            async with guard.async_session_scope() as session:
                assert (await session.execute(text("SELECT 1"))).scalar() == 1
            postgres_server.stop()
            await pub.publish("postgres-main", "unavailable", retry_in=30)
            await health.wait_for("postgres-main", "unavailable", timeout=5)
            tried = len(attempts)
            with pytest.raises(DependencyUnavailable) as info:
                async with guard.async_session_scope():
                    pass
            assert len(attempts) == tried  # refused before the pool: no connection attempt
            assert info.value.retry_at is not None
            assert guard.connection_errors == 0  # decided by the bus, no attempt made
            postgres_server.start()
            await pub.publish("postgres-main", "healthy")
            await health.wait_for("postgres-main", "healthy", timeout=5)
            async with guard.async_session_scope() as session:
                assert (await session.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()
        await nc.close()
