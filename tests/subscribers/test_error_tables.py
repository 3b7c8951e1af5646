"""Every driver's error-classification table (healthbus.subscribers._errors), proven row by row against
the real server states it names: a real PostgreSQL stopped in each mode, held in start-up, out of
connections, with a backend terminated; a real Redis refusing, loading, replica, out of memory, paused.

Each test drives the states, asks ``classify`` about the error each client raised, and at the end
checks that every row of its tables was met (the rows not reproducible here are named, with why).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from healthbus.subscribers._errors import TABLES, ErrorClass, classify, markdown_table
from tests.harness._es import FakeElasticsearch
from tests.harness._milvus import MilvusServer
from tests.harness._postgres import PostgresServer
from tests.harness._redis import RedisServer
from tests.helpers import freeze

from ._sync_support import wait_until_sync

DOCS = Path(__file__).resolve().parents[2] / "docs" / "subscribers.md"

#: Rows no test here can drive, and why (every other row must be met by a real server state).
NOT_DRIVEN = {
    ("psycopg", "crash recovery after `-m immediate` or a backend crash"): "lasts milliseconds after a crash",
    ("psycopg", "host name does not resolve"): "no resolver to ask on a test machine",
    ("psycopg", "serialization failure or deadlock (class 40)"): "a deadlock takes deadlock_timeout",
    ("psycopg", "any other connection failure"): "a catch-all for messages of other libpq versions",
    ("asyncpg", "any other connection failure (SQLSTATE class 08)"): "a catch-all",
    ("asyncpg", "serialization failure or deadlock (class 40)"): "a deadlock takes deadlock_timeout",
    ("asyncpg", "connection closed under the pool"): "the pool's own state, met in test_sqlalchemy.py",
    ("redis", "host name does not resolve"): "no resolver to ask on a test machine",
    ("elasticsearch", "server stopped or unreachable"): "the generic row under `refused`: other transport errors",
    ("pymilvus", "deadline exceeded"): "pymilvus 3 lets gRPC's own error through (the next rows)",
    ("pymilvus", "server gone mid-call: gRPC unavailable (raised as grpc's error)"): "pymilvus reconnects first",
}


class Seen:
    """The rows met, checked against what each state must give."""

    def __init__(self) -> None:
        self.rows: set[tuple[str, str]] = set()
        self.log: list[str] = []

    def check(self, what: str, error: BaseException | None, kind: str | None, *, driver: str | None = None) -> None:
        """``error`` (raised by a client in state ``what``) classifies as ``kind`` (None: not the dependency's)."""
        assert error is not None, f"{what}: the client raised nothing"
        found: ErrorClass | None = classify(error)
        self.log.append(f"{what}: {type(error).__name__}: {str(error)[:80]!r} -> {found}")
        if kind is None:
            assert found is None or not found.dependency, f"{what}: {error!r} classified {found}"
            assert found is None or not (found.trips or found.reports), found
        else:
            assert found is not None, f"{what}: {type(error).__module__}.{type(error).__name__}: {error} unclassified"
            assert found.kind == kind, f"{what}: {error!r} classified {found}, expected {kind}"
            assert found.dependency
        if driver is not None and found is not None:
            assert found.driver == driver, f"{what}: {found}"
        if found is not None:
            self.rows.add((found.driver, found.row))

    def assert_covered(self, *drivers: str) -> None:
        missing = [
            (driver, row.state)
            for driver in drivers
            for row in TABLES[driver]
            if (driver, row.state) not in self.rows and (driver, row.state) not in NOT_DRIVEN
        ]
        assert not missing, "rows no real state produced: " + repr(missing) + "\n" + "\n".join(self.log)


def caught(call: Callable[[], Any]) -> BaseException | None:
    try:
        call()
    except Exception as exc:
        return exc
    return None


async def caught_async(call: Callable[[], Awaitable[Any]]) -> BaseException | None:
    try:
        await call()
    except Exception as exc:
        return exc
    return None


# ---------------------------------------------------------------- PostgreSQL


def _sa_url(dsn: str, driver: str) -> str:
    return f"postgresql+{driver}://" + dsn.split("://", 1)[1]


class PgClients:
    """psycopg, asyncpg, and SQLAlchemy over each, each asked the same question."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def psycopg(self, dsn: str | None = None, sql: str = "select 1") -> BaseException | None:
        def go() -> None:
            with psycopg.connect(dsn or self.dsn, connect_timeout=5, autocommit=True) as conn:
                conn.execute(sql)

        return caught(go)

    def asyncpg(self, dsn: str | None = None, sql: str = "select 1") -> BaseException | None:
        import asyncpg  # type: ignore[import-untyped]

        async def go() -> None:
            conn = await asyncpg.connect(dsn or self.dsn, timeout=5)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        return asyncio.run(caught_async(go))

    def sa_psycopg(self, dsn: str | None = None, sql: str = "select 1") -> BaseException | None:
        engine = create_engine(_sa_url(dsn or self.dsn, "psycopg"), connect_args={"connect_timeout": 5})

        def go() -> None:
            with engine.begin() as conn:
                conn.execute(text(sql))

        try:
            return caught(go)
        finally:
            engine.dispose()

    def sa_asyncpg(self, dsn: str | None = None, sql: str = "select 1") -> BaseException | None:
        async def go() -> BaseException | None:
            engine = create_async_engine(_sa_url(dsn or self.dsn, "asyncpg"), connect_args={"timeout": 5})

            async def run() -> None:
                async with engine.begin() as conn:
                    await conn.execute(text(sql))

            try:
                return await caught_async(run)
            finally:
                await engine.dispose()

        return asyncio.run(go())

    def all(self, seen: Seen, what: str, kind: str | None, dsn: str | None = None, sql: str = "select 1") -> None:
        """Every client connects anew and runs ``sql``: each error classifies as ``kind``."""
        seen.check(f"{what} [psycopg]", self.psycopg(dsn, sql), kind, driver="psycopg")
        seen.check(f"{what} [asyncpg]", self.asyncpg(dsn, sql), kind)
        seen.check(f"{what} [sqlalchemy+psycopg]", self.sa_psycopg(dsn, sql), kind, driver="psycopg")
        seen.check(f"{what} [sqlalchemy+asyncpg]", self.sa_asyncpg(dsn, sql), kind)


def backends(conn: psycopg.Connection[Any]) -> int:
    """How many client backends the server has (``conn``'s own included)."""
    row = conn.execute("select count(*) from pg_stat_activity where backend_type = 'client backend'").fetchone()
    assert row is not None
    return int(row[0])


@contextlib.contextmanager
def open_sessions(dsn: str) -> Iterator[tuple[psycopg.Connection[Any], Any, Any, asyncio.AbstractEventLoop]]:
    """An open psycopg session, an open asyncpg session and an SQLAlchemy+psycopg connection (with its loop)."""
    import asyncpg

    loop = asyncio.new_event_loop()
    sync_conn = psycopg.connect(dsn, autocommit=True)
    async_conn = loop.run_until_complete(asyncpg.connect(dsn))
    engine = create_engine(_sa_url(dsn, "psycopg"))
    sa_conn = engine.connect()
    sa_conn.execute(text("select 1"))
    try:
        yield sync_conn, async_conn, sa_conn, loop
    finally:
        with contextlib.suppress(Exception):
            sync_conn.close()
        with contextlib.suppress(Exception):
            loop.run_until_complete(async_conn.close(timeout=1))
        with contextlib.suppress(Exception):
            sa_conn.close()
        engine.dispose()
        loop.close()


def check_sessions(seen: Seen, what: str, sessions: Any, kind: str) -> None:
    sync_conn, async_conn, sa_conn, loop = sessions
    seen.check(f"{what} [psycopg session]", caught(lambda: sync_conn.execute("select 1")), kind, driver="psycopg")
    seen.check(
        f"{what} [asyncpg session]",
        loop.run_until_complete(caught_async(lambda: async_conn.execute("select 1"))),
        kind,
        driver="asyncpg",
    )
    sa_error = caught(lambda: sa_conn.execute(text("select 1")))
    seen.check(f"{what} [sqlalchemy+psycopg session]", sa_error, kind, driver="psycopg")


def _backend_pids(dsn: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as admin:
        rows = admin.execute(
            "select pid from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()"
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_tables_against_real_server_states(
    postgres_server_factory: Callable[..., PostgresServer],
) -> None:
    """psycopg 3, asyncpg and SQLAlchemy over both, in every state of a real PostgreSQL the tables name."""
    server = postgres_server_factory(password="s3cret-pw")
    pg = PgClients(server.dsn)
    seen = Seen()

    # Application errors: never the dependency's.
    assert [pg.psycopg(), pg.asyncpg(), pg.sa_psycopg(), pg.sa_asyncpg()] == [None] * 4  # all connect
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute("create table t (a int primary key)")
        admin.execute("insert into t values (1)")
    pg.all(seen, "unique violation", None, sql="insert into t values (1)")
    pg.all(seen, "syntax error", None, sql="selec 1")
    pg.all(seen, "division by zero", None, sql="select 1/0")
    with psycopg.connect(server.dsn, autocommit=True) as admin:  # a database that takes no writes, as a standby
        admin.execute("create database readonly")
        admin.execute("alter database readonly set default_transaction_read_only = on")
    readonly = re.sub(r"/postgres$", "/readonly", server.dsn)
    pg.all(seen, "read-only (standby-like)", "read_only", dsn=readonly, sql="create table w (a int)")

    # Wrong password, missing database.
    pg.all(seen, "wrong password", "auth", dsn=server.dsn.replace("s3cret-pw", "wrong"))
    pg.all(seen, "missing database", "no_database", dsn=re.sub(r"/postgres$", "/nosuch", server.dsn))

    # pg_terminate_backend on open sessions.
    with open_sessions(server.dsn) as sessions:
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where backend_type = 'client backend' and pid <> pg_backend_pid()"
            )
        check_sessions(seen, "pg_terminate_backend", sessions, "disconnected")

    # max_connections exhausted (the sessions already open keep working).
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute("alter system set max_connections = 6")
        admin.execute("alter system set superuser_reserved_connections = 0")
    server.stop_mode("fast")
    server.start()
    held: list[psycopg.Connection[Any]] = []
    try:
        while True:
            try:
                held.append(psycopg.connect(server.dsn, connect_timeout=5))
            except psycopg.OperationalError:
                break
            assert len(held) < 50, "max_connections never ran out"
        pg.all(seen, "max_connections exhausted", "too_many_connections")
        held[0].execute("select 1")  # an open session still works
        held[0].rollback()
        held[0].autocommit = True
        held[0].execute("alter system reset all")  # for the next start: no new connection could get a slot yet
        for conn in held[1:]:
            conn.close()
        # A slot is free only once its backend process has exited, a moment after the client closed: wait for
        # it, or the next connection here is refused "too many clients" (a race CI met).
        wait_until_sync(lambda: backends(held[0]) == 1, 30, "the closed sessions' backends to exit")
    finally:
        for conn in held:
            conn.close()

    # pg_ctl stop -m smart: waits for the open session; new connections are refused meanwhile.
    with psycopg.connect(server.dsn, autocommit=True) as holder:
        server.stop_mode("smart", wait=False)
        wait_until_sync(
            lambda: "shutting down" in str(pg.psycopg()), 30, "the smart shutdown to refuse new connections"
        )
        pg.all(seen, "pg_ctl stop -m smart (in progress)", "shutdown")
        holder.execute("select 1")  # the session it waits for still works
    wait_until_sync(lambda: not server.is_running, 30, "the smart shutdown to end")
    pg.all(seen, "stopped", "refused")

    # pg_ctl stop -m fast / -m immediate with sessions open.
    server.start()
    with open_sessions(server.dsn) as sessions:
        server.stop_mode("fast")
        check_sessions(seen, "pg_ctl stop -m fast", sessions, "disconnected")
    server.start()
    with open_sessions(server.dsn) as sessions:
        server.stop_mode("immediate")
        check_sessions(seen, "pg_ctl stop -m immediate", sessions, "disconnected")

    # Starting up: a standby whose restore_command sleeps holds start-up for seconds.
    server.start_held_in_startup(20)
    try:
        wait_until_sync(lambda: "starting up" in str(pg.psycopg()), 30, "the server to be starting up")
        pg.all(seen, "starting up", "starting_up")
    finally:
        server.stop_mode("immediate")
        server.leave_standby()

    # A connect that is never answered: a listening socket nobody accepts on.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        port = silent.getsockname()[1]
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        seen.check("connect timeout [psycopg]", caught(lambda: psycopg.connect(dsn, connect_timeout=1)), "timeout")
        import asyncpg

        seen.check(
            "connect timeout [asyncpg]",
            asyncio.run(caught_async(lambda: asyncpg.connect(dsn, timeout=1))),
            "timeout",
            driver="asyncpg",
        )

    print("\n".join(seen.log))
    seen.assert_covered("psycopg", "asyncpg")


def test_sqlalchemy_rows_and_other_clients_inside_a_block() -> None:
    """SQLAlchemy's own rows; a builtin socket error is the database's only when it came out of a driver."""
    from sqlalchemy import exc as sa_exc

    pool = classify(sa_exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached"))
    assert pool is not None
    assert (pool.kind, pool.trips, pool.reports) == ("pool_timeout", True, False)
    invalidated = classify(sa_exc.InterfaceError("x", {}, Exception("gone"), connection_invalidated=True))
    assert invalidated is not None
    assert invalidated.kind == "disconnected"
    other = caught(_refuse)
    assert other is not None
    assert classify(other) is None  # another client's: no driver frame in its traceback
    found = classify(other, attribute=False)
    assert found is not None
    assert found.kind == "refused"


def _refuse() -> None:
    raise ConnectionRefusedError(111, "Connect call failed ('10.0.0.9', 8080)")


# ---------------------------------------------------------------- Redis


def _sync_client(url: str, **options: Any) -> redis.Redis:
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2, **options)


def _async_client(url: str, **options: Any) -> redis.asyncio.Redis:
    from redis.asyncio.retry import Retry as AsyncRetry

    return redis.asyncio.Redis.from_url(url, retry=AsyncRetry(NoBackoff(), 0), socket_connect_timeout=2, **options)


def redis_cmd(client: Any, *args: Any) -> Any:
    """``client.execute_command(*args)`` (redis-py leaves it untyped)."""
    return client.execute_command(*args)


def both(seen: Seen, what: str, url: str, kind: str | None, command: tuple[Any, ...], **options: Any) -> None:
    """The sync and the asyncio client, each fresh, run ``command``: the error classifies as ``kind``."""
    client = _sync_client(url, **options)
    try:
        seen.check(f"{what} [redis]", caught(lambda: redis_cmd(client, *command)), kind, driver="redis")
    finally:
        client.close()

    async def go() -> BaseException | None:
        aclient = _async_client(url, **options)
        try:
            return await caught_async(lambda: redis_cmd(aclient, *command))
        finally:
            await aclient.aclose()

    seen.check(f"{what} [redis.asyncio]", asyncio.run(go()), kind, driver="redis")


@pytest.mark.redis
@pytest.mark.slow
def test_redis_tables_against_real_server_states(redis_server_factory: Callable[..., RedisServer]) -> None:
    """redis-py, sync and asyncio, in every state of a real redis-server the table names."""
    server = redis_server_factory(password="r3dis-pw")
    url = server.url
    seen = Seen()
    admin = _sync_client(url)
    try:
        admin.set("s", "x")
        both(seen, "wrong type", url, None, ("HGET", "s", "f"))
        both(seen, "unknown command", url, None, ("NOSUCHCOMMAND",))
        both(seen, "wrong password", url.replace("r3dis-pw", "wrong"), "auth", ("GET", "s"))
        both(seen, "no password (NOAUTH)", url.replace(":r3dis-pw@", ""), "auth", ("GET", "s"))

        admin.config_set("maxmemory", "1")
        admin.config_set("maxmemory-policy", "noeviction")
        both(seen, "OOM", url, "out_of_memory", ("SET", "k", "v"))
        admin.config_set("maxmemory", "0")

        with socket.socket() as dead:  # a master that is not there
            dead.bind(("127.0.0.1", 0))
            dead_port = dead.getsockname()[1]
        redis_cmd(admin, "REPLICAOF", "127.0.0.1", str(dead_port))
        both(seen, "replica (READONLY)", url, "read_only", ("SET", "k", "v"))
        admin.config_set("replica-serve-stale-data", "no")
        both(seen, "replica without its master (MASTERDOWN)", url, "master_down", ("GET", "s"))
        redis_cmd(admin, "REPLICAOF", "NO", "ONE")
        admin.config_set("replica-serve-stale-data", "yes")

        redis_cmd(admin, "CLIENT", "PAUSE", "3000", "ALL")
        both(seen, "paused (socket timeout)", url, "timeout", ("GET", "s"), socket_timeout=0.3)
        redis_cmd(admin, "CLIENT", "UNPAUSE")

        admin.config_set("maxclients", "1")
        both(seen, "maxclients reached", url, "too_many_connections", ("GET", "s"))
        admin.config_set("maxclients", "10000")

        # LOADING: a saved dataset loaded slowly on restart (key-load-delay: microseconds per key).
        pipe = admin.pipeline(transaction=False)
        for i in range(3000):
            pipe.set(f"load:{i}", "x")
        pipe.execute()
        admin.save()  # dump.rdb in the server's --dir, loaded at the next start

        # Connection lost mid-call: the server closes a client waiting in BLPOP.
        def kill_waiters() -> None:
            wait_until_sync(lambda: "cmd=blpop" in str(redis_cmd(admin, "CLIENT", "LIST")), 30, "BLPOP")
            redis_cmd(admin, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")

        waiter = _sync_client(url)
        killer = threading.Thread(target=kill_waiters)
        killer.start()
        lost = caught(lambda: waiter.blpop(["nothing"], 20))
        killer.join()
        waiter.close()
        seen.check("connection closed mid-call [redis]", lost, "disconnected", driver="redis")

        async def lost_async() -> BaseException | None:
            awaiter = _async_client(url)
            try:
                killing = asyncio.create_task(asyncio.to_thread(kill_waiters))
                error = await caught_async(lambda: awaiter.blpop(["nothing"], 20))
                await killing
                return error
            finally:
                await awaiter.aclose()

        seen.check("connection closed mid-call [redis.asyncio]", asyncio.run(lost_async()), "disconnected")
    finally:
        admin.close()

    server.kill()
    both(seen, "stopped", url, "refused", ("GET", "s"))

    server.extra_args = ["--key-load-delay", "2000", "--loading-process-events-interval-bytes", "1024"]
    server.start()
    try:
        probe = _sync_client(url)
        wait_until_sync(lambda: "loading" in str(caught(lambda: probe.get("s"))), 30, "redis to be loading")
        probe.close()
        both(seen, "loading the dataset (LOADING)", url, "loading", ("GET", "s"))
    finally:
        server.stop()

    print("\n".join(seen.log))
    seen.assert_covered("redis")


# ---------------------------------------------------------------- docs


def test_docs_table_is_the_code_table() -> None:
    """docs/subscribers.md carries exactly the rows of the code (regenerate with markdown_table())."""
    text_ = DOCS.read_text()
    start = text_.index("<!-- error-table: start -->\n") + len("<!-- error-table: start -->\n")
    end = text_.index("<!-- error-table: end -->")
    assert text_[start:end] == markdown_table(), (
        "docs/subscribers.md's error table differs from healthbus.subscribers._errors: paste\n" + markdown_table()
    )


# ---------------------------------------------------------------- Elasticsearch, Milvus


def test_elasticsearch_table_against_the_stand_in(es_server: FakeElasticsearch) -> None:
    """elasticsearch-py against the HTTP stand-in (tests/harness/_es.py): answers, a slow one, a stopped one."""
    from elasticsearch import Elasticsearch

    seen = Seen()
    es = Elasticsearch(es_server.url, request_timeout=0.5, max_retries=0, retry_on_timeout=False)
    try:
        assert es.cluster.health()["status"] == "green"
        for http_status, kind in ((503, "unavailable"), (429, "unavailable"), (401, "auth"), (400, None)):
            es_server.set_health(http_status=http_status)
            seen.check(f"HTTP {http_status}", caught(es.cluster.health), kind, driver="elasticsearch")
        es_server.set_health()
        seen.check("unknown index (404)", caught(lambda: es.indices.get(index="nosuch")), None)
        es_server.set_health(delay=3)
        seen.check("slow answer", caught(es.cluster.health), "timeout", driver="elasticsearch")
        es_server.set_health()
        es_server.stop()
        seen.check("stopped", caught(es.cluster.health), "refused", driver="elasticsearch")
    finally:
        es.close()
    print("\n".join(seen.log))
    seen.assert_covered("elasticsearch")


@pytest.mark.milvus
@pytest.mark.slow
def test_pymilvus_table_against_a_real_milvus_lite_server(milvus_server: MilvusServer) -> None:
    """pymilvus against a milvus-lite server: an unknown collection, a frozen server, a stopped one."""
    from pymilvus import MilvusClient

    seen = Seen()
    client = MilvusClient(uri=milvus_server.uri, dedicated=True)
    try:
        assert client.list_collections() == []
        seen.check("unknown collection", caught(lambda: client.describe_collection("nosuch")), None)
        seen.check("unknown collection", caught(lambda: client.search("nosuch", data=[[0.1]], limit=1)), None)
        pid = milvus_server.pid
        assert pid is not None
        freeze(pid)  # frozen: accepts nothing, answers nothing
        try:
            seen.check("frozen server", caught(lambda: client.list_collections(timeout=1)), "timeout")
        finally:
            os.kill(pid, signal.SIGCONT)
        milvus_server.stop()
        seen.check("stopped", caught(lambda: client.list_collections(timeout=3)), "connection", driver="pymilvus")
    finally:
        client.close()
    print("\n".join(seen.log))
    seen.assert_covered("pymilvus")
