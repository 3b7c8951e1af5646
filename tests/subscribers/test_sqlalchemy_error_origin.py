"""DatabaseGuard only blames the database for errors that came from the database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, exc, select
from sqlalchemy.ext.asyncio import create_async_engine

from healthbus.subscribers.sqlalchemy import DatabaseGuard, classify_error
from healthbus.subscribers.testing import FakeHealthClient

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("name", String(50)))


async def _call_other_service() -> None:
    """Stands in for an HTTP/Redis client inside the transaction whose server refused the connection."""
    raise ConnectionRefusedError(111, "Connect call failed ('10.0.0.9', 8080)")


async def _write_then_call_other_service(guard: DatabaseGuard) -> None:
    async with guard.async_session_scope() as session:
        await session.execute(items.insert().values(id=1, name="a"))
        await _call_other_service()


async def test_other_services_connection_errors_are_not_the_databases(tmp_path: Path) -> None:
    """A ConnectionError from another client in the body passes through and does not trip the guard."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    guard = DatabaseGuard(engine, FakeHealthClient({"postgres-main": "healthy"}))
    try:
        with pytest.raises(ConnectionRefusedError):
            await _write_then_call_other_service(guard)
        assert guard.pool_metrics()["connection_errors"] == 0
        # The database is fine: the next scope runs (no local fail-fast cool-down).
        async with guard.async_session_scope() as session:
            assert (await session.execute(select(items.c.id))).scalars().all() == []
    finally:
        await engine.dispose()


def test_a_database_error_raised_while_handling_a_timeout_is_not_a_timeout() -> None:
    """An IntegrityError whose driver error was raised inside ``except TimeoutError`` is not a connection error."""
    driver_error = Exception("duplicate key value violates unique constraint")
    try:
        raise TimeoutError("the cache did not answer")
    except TimeoutError as handled:
        driver_error.__context__ = handled  # what Python sets when asyncpg raises in that block
    error = exc.IntegrityError("INSERT", {}, driver_error)
    assert classify_error(error) is None
