"""The postgres and sqlalchemy checkers against a real PostgreSQL (and SQLite through aiosqlite)."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from healthbus.probes import build_checker
from healthbus.probes._checkers._sqlalchemy import SqlAlchemyChecker
from healthbus.protocol import Duration, TargetConfig
from tests.harness._postgres import PostgresServer
from tests.helpers import wait_until
from tests.probes._support import assert_refused_while_stopped

pytestmark = pytest.mark.postgres

PASSWORD = "pg-Vb93-never-shown"
WRONG = "pg-wr0ng-Lt55-never-shown"


def _target(kind: str, url: str, **options: str | int | bool) -> TargetConfig:
    return TargetConfig(name="db", kind=kind, url=url, timeout=Duration(3.0), interval=Duration(5.0), options=options)  # type: ignore[arg-type]


async def test_postgres_pass_fail_pass(postgres_server: PostgresServer) -> None:
    """SELECT 1 passes while up (with version and role), fails as refused once stopped, passes after restart."""
    checker = build_checker(_target("postgres", postgres_server.dsn))
    try:
        up = await checker.check()
        assert up.outcome == "pass", up
        assert up.details["role"] == "primary"
        assert up.details["in_recovery"] is False
        assert str(up.details["server_version"])[0].isdigit()
        await assert_refused_while_stopped(checker, postgres_server)
    finally:
        await checker.close()


async def test_postgres_expect_role(postgres_server: PostgresServer) -> None:
    """expect_role = replica fails as unhealthy against a primary."""
    checker = build_checker(_target("postgres", postgres_server.dsn, expect_role="replica"))
    try:
        result = await checker.check()
        assert result.outcome == "fail"
        assert result.error_kind == "unhealthy"
        assert result.details["role"] == "primary"
    finally:
        await checker.close()


async def test_postgres_wrong_password(postgres_server_factory: object, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong password is auth, and neither password shows in the result or logs."""
    caplog.set_level(logging.DEBUG)
    server: PostgresServer = postgres_server_factory(password=PASSWORD)  # type: ignore[operator]
    good = build_checker(_target("postgres", server.dsn))
    bad = build_checker(_target("postgres", server.dsn.replace(PASSWORD, WRONG)))
    sa_bad = build_checker(_target("sqlalchemy", server.sqlalchemy_url.replace(PASSWORD, WRONG)))
    try:
        assert (await good.check()).outcome == "pass"
        for checker in (bad, sa_bad):
            result = await checker.check()
            assert result.outcome == "fail"
            assert result.error_kind == "auth", result
            assert PASSWORD not in repr(result)
            assert WRONG not in repr(result)
        assert PASSWORD not in caplog.text
        assert WRONG not in caplog.text
    finally:
        for c in (good, bad, sa_bad):
            await c.close()


@pytest.mark.parametrize("reuse", [False, True])
async def test_sqlalchemy_postgres_pass_fail_pass(postgres_server: PostgresServer, reuse: bool) -> None:
    """Through SQLAlchemy + asyncpg: pass (with pool status when reusing a pooled connection),
    refused when stopped, pass after restart."""
    checker = build_checker(_target("sqlalchemy", postgres_server.sqlalchemy_url, reuse_connection=reuse))
    try:
        up = await checker.check()
        assert up.outcome == "pass", up
        assert up.details["dialect"] == "postgresql"
        if reuse:
            assert up.details["pool_size"] == 1
            assert up.details["pool_checked_out"] == 0
        else:  # a fresh connection per check: no pool to report
            assert "pool_size" not in up.details
        await assert_refused_while_stopped(checker, postgres_server)
    finally:
        await checker.close()


async def test_sqlalchemy_pool_exhausted_is_warn(postgres_server: PostgresServer) -> None:
    """When an application engine's pool is exhausted, the check warns and shows the pool status."""
    engine = create_async_engine(postgres_server.sqlalchemy_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    checker = SqlAlchemyChecker(_target("sqlalchemy", postgres_server.sqlalchemy_url), engine=engine)
    try:
        assert (await checker.check()).outcome == "pass"
        async with engine.connect():  # the application holds the only connection
            result = await checker.check()
        assert result.outcome == "warn", result
        assert result.error is not None
        assert "pool exhausted" in result.error
        assert result.details["pool_checked_out"] == 1
        assert (await checker.check()).outcome == "pass"
    finally:
        await checker.close()
        await engine.dispose()


async def test_sqlite_file(tmp_path: Path) -> None:
    """An SQLite file through aiosqlite passes; one in a directory that does not exist fails."""
    good = build_checker(_target("sqlalchemy", f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"))
    bad = build_checker(_target("sqlalchemy", f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'app.db'}"))
    try:
        up = await good.check()
        assert up.outcome == "pass", up
        assert up.details["dialect"] == "sqlite"
        down = await bad.check()
        assert down.outcome == "fail"
        assert down.error is not None
        assert "unable to open database file" in down.error
    finally:
        await good.close()
        await bad.close()


def _aiosqlite_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "_connection_worker_thread" in t.name and t.is_alive()]


def test_sqlite_checker_leaves_no_worker_thread_behind(tmp_path: Path) -> None:
    """Once check() of an SQLite file that cannot be opened returns, and once close() returns
    after a passing check, no aiosqlite worker thread of the checker is left: none can answer
    an event loop that is closed by then ("Exception in thread ... Event loop is closed")."""

    async def scenario() -> None:
        before = set(_aiosqlite_threads())
        bad = build_checker(_target("sqlalchemy", f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'app.db'}"))
        good = build_checker(_target("sqlalchemy", f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"))
        try:
            for _ in range(3):
                assert (await bad.check()).outcome == "fail"
                assert [t for t in _aiosqlite_threads() if t not in before] == []
            assert (await good.check()).outcome == "pass"
        finally:
            await bad.close()
            await good.close()
        assert [t for t in _aiosqlite_threads() if t not in before] == []

    # A loop of its own, closed as soon as the scenario returns.
    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["postgres", "sqlalchemy"])
async def test_postgres_checks_hold_no_session(postgres_server: PostgresServer, kind: str) -> None:
    """By default each check opens its own session and closes it before returning: between
    checks the probe holds none (seen in pg_stat_activity by its application_name), and
    every check is a new backend (pg_stat_database counts the sessions)."""
    url = postgres_server.dsn if kind == "postgres" else postgres_server.sqlalchemy_url
    checker = build_checker(_target(kind, url))
    admin = await asyncpg.connect(postgres_server.dsn)
    held = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'healthbus-probe'"
    sessions = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    try:
        before = await admin.fetchval(sessions)
        for _ in range(5):
            assert (await checker.check()).outcome == "pass"
            assert await admin.fetchval(held) == 0
        # Session statistics reach pg_stat_database when each backend ends (pgstat flush).
        counted: list[object] = [before]

        async def five_more() -> bool:
            counted[0] = await admin.fetchval(sessions)
            return int(str(counted[0])) >= int(before) + 5

        await wait_until(five_more, 10, "5 new sessions counted", seen=lambda: (before, counted[0]))
    finally:
        await checker.close()
        await admin.close()


async def test_postgres_reused_connection_is_renewed(postgres_server: PostgresServer) -> None:
    """With reuse_connection the checks share one session, replaced by a fresh connect every
    fresh_connect_every checks (a new backend pid); close() ends it."""
    checker = build_checker(_target("postgres", postgres_server.dsn, reuse_connection=True, fresh_connect_every=3))
    admin = await asyncpg.connect(postgres_server.dsn)
    query = "SELECT pid FROM pg_stat_activity WHERE application_name = 'healthbus-probe'"
    pids: list[list[int]] = []
    try:
        for _ in range(6):
            assert (await checker.check()).outcome == "pass"
            pids.append([row["pid"] for row in await admin.fetch(query)])
        assert all(len(p) == 1 for p in pids), pids
        assert pids[0] == pids[1] == pids[2], pids
        assert pids[3] == pids[4] == pids[5], pids
        assert pids[2] != pids[3], pids
        await checker.close()
        assert await admin.fetch(query) == []
    finally:
        await checker.close()
        await admin.close()


async def test_postgres_replica_role(postgres_server: PostgresServer) -> None:
    """A standby (in recovery) reports role replica and in_recovery; expect_role = primary fails it as unhealthy."""
    import os

    postgres_server.stop()
    signal_file = postgres_server.data_dir / "standby.signal"
    signal_file.touch()  # a standby with no primary to follow: read-only, in recovery
    owner = postgres_server.data_dir.stat()
    os.chown(signal_file, owner.st_uid, owner.st_gid)
    postgres_server.start()
    replica = build_checker(_target("postgres", postgres_server.dsn))
    must_be_primary = build_checker(_target("postgres", postgres_server.dsn, expect_role="primary"))
    try:
        result = await replica.check()
        assert result.outcome == "pass", result
        assert result.details["role"] == "replica"
        assert result.details["in_recovery"] is True
        wrong = await must_be_primary.check()
        assert wrong.error_kind == "unhealthy"
    finally:
        await replica.close()
        await must_be_primary.close()
