"""``sqlalchemy``: ``SELECT 1`` through an async SQLAlchemy engine kept between checks
(a fresh connection per check, or a kept pool).

URL form: any async SQLAlchemy URL, e.g. ``postgresql+asyncpg://user:pw@host/db`` or
``sqlite+aiosqlite:///path/to/file.db``. For a database server each check connects the
way a new client does (SQLAlchemy's ``NullPool``: the connection is closed when the check
returns; see :class:`~healthbus.probes._base.BaseChecker`), so a server refusing new
connections is seen at once and the probe holds no idle session. With option
``reuse_connection`` the engine keeps a small pre-pinging pool instead (options
``pool_size`` 1, ``max_overflow`` 0), disposed at least every ``fresh_connect_every``
checks, so a restarted server is reconnected to at the next check. SQLite files keep their
pool (no server to refuse anyone). A caller embedding the checker may pass its own
application engine: then the pool status in the details is the application's, and the
checker never disposes it. With asyncpg the session's ``application_name`` is
``healthbus-probe`` (option).

Outcome: pass when the query answers; warn when the pool is exhausted (no connection
within ``pool_timeout``: the database may be fine but this client cannot reach it), or
with ``no_new_connections`` when the server refuses a new connection but serves its
sessions (as for ``postgres``); fail otherwise. Details: ``dialect``, ``driver``,
``server_version`` (when known), and ``pool_size``, ``pool_checked_out``,
``pool_overflow`` for queue pools.

SQLite through aiosqlite: every connection has a worker thread that hands its last answer
to the event loop. A connection that fails to open (or is cancelled by the worker's hard
timeout while opening) is stopped by aiosqlite without anyone awaiting it, so its thread
could answer a loop already closed (``RuntimeError: Event loop is closed`` in that
thread). The checker opens those connections itself, waits for the thread of a failed
one, and ``close()`` waits for the threads of all it opened.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from healthbus.probes._base import BaseChecker, CheckResult, Closer, driver_missing
from healthbus.probes._classify import classify_sqlalchemy
from healthbus.protocol import DetailValue, ErrorKind, TargetConfig

try:
    from sqlalchemy import event, text
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
    from sqlalchemy.pool import NullPool
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise driver_missing("sqlalchemy", "SQLAlchemy", "sqlalchemy", exc) from None


async def _ended(thread: threading.Thread) -> None:
    """Wait (without blocking the loop, at most a few seconds) until ``thread`` has ended."""
    if thread.is_alive():
        await asyncio.to_thread(thread.join, 5.0)


def pool_details(engine: AsyncEngine) -> dict[str, DetailValue]:
    """Pool usage of ``engine`` (queue pools only; others have no counters)."""
    pool: Any = engine.pool
    details: dict[str, DetailValue] = {}
    for key, method in (("pool_size", "size"), ("pool_checked_out", "checkedout"), ("pool_overflow", "overflow")):
        fn = getattr(pool, method, None)
        if callable(fn):
            try:
                details[key] = int(fn())
            except Exception:  # a pool class without the counter
                continue
    return details


class SqlAlchemyChecker(BaseChecker):
    """``SELECT 1`` through an async SQLAlchemy engine (its own, or one passed in)."""

    kind = "sqlalchemy"
    holds_connections = True

    def __init__(self, target: TargetConfig, *, engine: AsyncEngine | None = None) -> None:
        super().__init__(target)
        self._engine = engine
        self._owns_engine = engine is None
        self._threads: list[threading.Thread] = []  # aiosqlite worker threads opened by this checker

    def _make_engine(self) -> AsyncEngine:
        url = make_url(self.target.url)
        timeout = float(self.target.timeout)
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        backend = url.get_backend_name()
        if backend != "sqlite" and not self.reuse:
            kwargs = {"poolclass": NullPool}  # a fresh connection per check, closed after it
        elif not (backend == "sqlite" and (url.database in (None, "", ":memory:"))):
            kwargs["pool_size"] = self.opt_int("pool_size", 1)
            kwargs["max_overflow"] = self.opt_int("max_overflow", 0)
            kwargs["pool_timeout"] = self.opt_float("pool_timeout", timeout)
        if url.get_driver_name() == "asyncpg":
            application_name = self.opt_str("application_name", "healthbus-probe") or ""
            kwargs["connect_args"] = {
                "timeout": timeout,
                "command_timeout": timeout,
                "server_settings": {"application_name": application_name},
            }
        engine = create_async_engine(url, **kwargs)
        if url.get_driver_name() == "aiosqlite":
            event.listen(engine.sync_engine, "do_connect", self._do_connect_sqlite)
        return engine

    def _do_connect_sqlite(self, dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        """Open an aiosqlite connection with SQLAlchemy's arguments, through :meth:`_open_sqlite`."""
        return dialect.dbapi.connect(*cargs, async_creator_fn=self._open_sqlite, **cparams)

    async def _open_sqlite(self, *args: Any, **kwargs: Any) -> Any:
        import aiosqlite

        conn = aiosqlite.connect(*args, **kwargs)
        thread = getattr(conn, "_thread", conn)  # aiosqlite < 0.22: the connection is the thread
        if not isinstance(thread, threading.Thread):
            return await conn
        thread.daemon = True  # as SQLAlchemy's own connect does
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        try:
            return await conn
        except BaseException:
            # aiosqlite stopped the connection's thread without awaiting it: wait for it here.
            await _ended(thread)
            raise

    async def _threads_done(self) -> None:
        """Wait until the aiosqlite worker threads this checker opened have ended."""
        threads, self._threads = self._threads, []
        for thread in threads:
            await _ended(thread)

    async def _check(self) -> CheckResult:
        if self._engine is None:
            self._engine = self._make_engine()
        engine = self._engine
        details: dict[str, DetailValue] = {"dialect": engine.dialect.name, "driver": engine.dialect.driver}
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                version = conn.dialect.server_version_info
                if version:
                    details["server_version"] = ".".join(str(p) for p in version)
        except sa_exc.TimeoutError as exc:  # QueuePool limit reached: this client, not the server
            details.update(pool_details(engine))
            return self.warn(f"connection pool exhausted: {exc}", details)
        details.update(pool_details(engine))
        return CheckResult(outcome="pass", details=details)

    def _classify(self, exc: BaseException) -> tuple[ErrorKind, str]:
        return classify_sqlalchemy(exc)

    def _detach(self) -> Closer | None:
        # Only a pooled engine of our own keeps a connection (NullPool closes each at the
        # end of the check; an SQLite file has no server; the application's engine is not
        # ours to dispose): the next check makes a new engine, the old one is disposed.
        engine = self._engine
        if engine is None or not self._owns_engine or not self.reuse or engine.dialect.name == "sqlite":
            return None
        self._engine = None
        return engine.dispose

    async def close(self) -> None:
        engine = self._engine
        if engine is not None and self._owns_engine:
            self._engine = None
            await engine.dispose()
        await self._threads_done()
