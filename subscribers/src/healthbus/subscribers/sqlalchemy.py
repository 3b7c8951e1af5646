"""SQLAlchemy adapter: sessions fail fast with DependencyUnavailable while the database is down.

``pip install 'healthbus-subscribers[sqlalchemy]'``::

    from healthbus.subscribers.sqlalchemy import DatabaseGuard

    db = DatabaseGuard(async_engine, health, target="postgres-main")
    async with db.async_session_scope() as session:   # raises DependencyUnavailable at once
        session.add(order)                             # when postgres-main is unavailable
    # committed here; rolled back on any error

Rules this guard keeps:

- Before touching the pool, ``session_scope()`` / ``async_session_scope()`` (and
  ``check()``) raise :class:`~healthbus.subscribers.DependencyUnavailable` (target,
  ``retry_at``, reason) when the health client says the target is not available, or a
  connection-level error happened here less than ``local_cooldown`` seconds ago and no
  newer verdict has arrived since. No connect timeout is waited for.
- A connection-level error from a real attempt is classified (refused, timeout, dns,
  disconnected, pool_timeout, shutdown, too_many_connections, auth, connection) and
  raised as DependencyUnavailable with that ``kind``; other errors (a constraint
  violation, bad SQL) propagate unchanged. asyncpg's errors are not wrapped by SQLAlchemy
  (a closed port raises the builtin ConnectionRefusedError), so both are recognised; a
  builtin connection error only counts when it came out of SQLAlchemy or the driver (its
  traceback passes through them), so another client failing inside the scope (HTTP,
  Redis) propagates unchanged and does not trip the guard.
- Never pretends a write succeeded: the scope commits at the end and only returns if the
  commit returned; any error rolls back and raises. If the connection died *during* the
  commit, the reason says the outcome is unknown (the server may have committed).
- No message carries a credential: the database URL's password is masked in every
  message (``healthbus.protocol.redact``), and the original exception is summarised, not
  chained, so a traceback cannot leak it either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

try:
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "healthbus.subscribers.sqlalchemy needs SQLAlchemy: pip install 'healthbus-subscribers[sqlalchemy]'"
    ) from exc

from healthbus.protocol import redact, url_secrets
from healthbus.subscribers._trip import LocalTrip
from healthbus.subscribers._view import DependencyUnavailable, HealthView

__all__ = ["DatabaseGuard", "DependencyUnavailable", "classify_error"]

log = logging.getLogger("healthbus.subscribers.sqlalchemy")

# asyncpg exception class names (matched by name so asyncpg is never imported here).
_ASYNCPG_KINDS = {
    "CannotConnectNowError": "shutdown",
    "AdminShutdownError": "shutdown",
    "CrashShutdownError": "shutdown",
    "ConnectionDoesNotExistError": "disconnected",
    "ConnectionFailureError": "connection",
    "ClientCannotConnectError": "connection",
    "PostgresConnectionError": "connection",
    "TooManyConnectionsError": "too_many_connections",
    "InvalidPasswordError": "auth",
    "InvalidAuthorizationSpecificationError": "auth",
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    # ``orig`` and ``__cause__`` only: that is how SQLAlchemy and its drivers wrap errors.
    # ``__context__`` is whatever was being handled when the error was raised — often the
    # caller's own (an IntegrityError raised inside ``except TimeoutError:``) — and must
    # not turn a constraint violation into a "timeout".
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend([getattr(current, "orig", None), current.__cause__])


_DB_MODULES = ("sqlalchemy", "asyncpg", "psycopg", "pg8000", "aiosqlite", "sqlite3", "pymysql", "aiomysql", "asyncmy")


def _from_database(exc: BaseException) -> bool:
    """Whether ``exc`` came out of SQLAlchemy or a driver, not from other code run inside the scope.

    A builtin ``ConnectionRefusedError`` is what asyncpg raises for a closed port, but also
    what an HTTP or Redis client raises inside the same ``with`` block: only the first one
    has SQLAlchemy or driver frames in its traceback.
    """
    for item in _chain(exc):
        if type(item).__module__.split(".")[0] in _DB_MODULES:
            return True
        tb = item.__traceback__
        while tb is not None:
            if str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0] in _DB_MODULES:
                return True
            tb = tb.tb_next
    return False


def classify_error(exc: BaseException) -> str | None:
    """The kind of connection-level failure ``exc`` is, or None for any other error."""
    if isinstance(exc, DependencyUnavailable):
        return exc.kind
    if isinstance(exc, sa_exc.TimeoutError):  # the pool had no connection to give in time
        return "pool_timeout"
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return "disconnected"
    for item in _chain(exc):
        if type(item).__module__.startswith("asyncpg"):
            for cls in type(item).__mro__:
                kind = _ASYNCPG_KINDS.get(cls.__name__)
                if kind is not None:
                    return kind
            if type(item).__name__ == "InterfaceError" and "closed" in str(item):
                return "disconnected"
        if isinstance(item, ConnectionRefusedError):
            return "refused"
        if isinstance(item, socket.gaierror):
            return "dns"
        if isinstance(item, TimeoutError | asyncio.TimeoutError):
            return "timeout"
        if isinstance(item, ConnectionError):
            return "disconnected"
        if isinstance(item, OSError) and not isinstance(item, FileNotFoundError | PermissionError):
            return "connection"
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        # The sync drivers (psycopg, pg8000) report connect failures as OperationalError.
        text = str(exc).lower()
        if "could not connect" in text or "connection refused" in text or "server closed the connection" in text:
            return "connection"
    return None


class DatabaseGuard:
    """Guards an ``Engine`` or ``AsyncEngine`` with the health of one target (module docstring)."""

    def __init__(
        self,
        engine: Engine | AsyncEngine,
        health: HealthView,
        target: str = "postgres-main",
        *,
        local_cooldown: float = 2.0,
        session_options: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.health = health
        self.target = target
        self._sync_engine: Engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        self._secrets = url_secrets(self._sync_engine.url.render_as_string(hide_password=False))
        self._trip = LocalTrip(health, target, local_cooldown, clock)
        self._session_options = dict(session_options or {})
        self.rejected = 0
        """Sessions refused before touching the pool."""
        self.connection_errors = 0
        """Connection-level errors from real attempts (raised as DependencyUnavailable)."""

    # ------------------------------------------------------------ checks

    def check(self) -> None:
        """Raise DependencyUnavailable at once when the database must not be tried now."""
        if self._trip.usable():
            return
        self.rejected += 1
        state = self.health.state(self.target)
        retry_at = state.retry_at if state is not None else None
        if self._trip.active and (state is None or state.available):
            reason = "connection failed here moments ago"
        elif state is None:
            reason = "state unknown (no verdict from healthbus yet)"
        else:
            reason = f"{state.state}" + (f": {self._clean(state.reason)}" if state.reason else "")
            if state.stale:
                reason += " (stale: healthbus unreachable)"
        raise DependencyUnavailable(self.target, retry_at, reason)

    def _clean(self, text: str) -> str:
        return redact(text, self._secrets)

    def _wrap(self, exc: BaseException, during_commit: bool) -> DependencyUnavailable | None:
        if isinstance(exc, DependencyUnavailable):
            return None
        if not during_commit and not _from_database(exc):
            return None  # e.g. another service's client refused inside the scope: not the database's
        kind = classify_error(exc)
        if kind is None:
            return None
        self.connection_errors += 1
        summary = self._clean(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        reason = f"{kind}: {type(exc).__name__}: {summary}"
        self._trip.trip(kind, f"{type(exc).__name__}: {summary}")
        if during_commit:
            reason += " (during COMMIT: the outcome is unknown, the transaction may or may not have been applied)"
        state = self.health.state(self.target)
        error = DependencyUnavailable(self.target, state.retry_at if state is not None else None, reason, kind=kind)
        log.warning("%s: %s", self.target, reason)
        return error

    # ------------------------------------------------------------ sessions

    @contextlib.contextmanager
    def session_scope(self, **options: Any) -> Iterator[Session]:
        """A Session for a sync Engine: committed on success, rolled back on error; fails fast."""
        if isinstance(self.engine, AsyncEngine):
            raise TypeError("session_scope() needs a sync Engine; use async_session_scope() with an AsyncEngine")
        self.check()
        session = Session(self.engine, **{**self._session_options, **options})
        committing = False
        try:
            yield session
            committing = True
            session.commit()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                session.rollback()
            wrapped = self._wrap(exc, committing)
            if wrapped is not None:
                raise wrapped from None
            raise
        finally:
            with contextlib.suppress(Exception):
                session.close()

    @contextlib.asynccontextmanager
    async def async_session_scope(self, **options: Any) -> AsyncIterator[AsyncSession]:
        """An AsyncSession for an AsyncEngine: committed on success, rolled back on error; fails fast."""
        if not isinstance(self.engine, AsyncEngine):
            raise TypeError("async_session_scope() needs an AsyncEngine; use session_scope() with a sync Engine")
        self.check()
        session = AsyncSession(self.engine, **{**self._session_options, **options})
        committing = False
        try:
            yield session
            committing = True
            await session.commit()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await session.rollback()
            wrapped = self._wrap(exc, committing)
            if wrapped is not None:
                raise wrapped from None
            raise
        finally:
            with contextlib.suppress(Exception):
                await session.close()

    # ------------------------------------------------------------ metrics

    def pool_metrics(self) -> dict[str, Any]:
        """The pool's numbers (size, checked in/out, overflow where the pool has them) and the guard's counters."""
        pool = self._sync_engine.pool
        metrics: dict[str, Any] = {"pool": type(pool).__name__, "status": pool.status()}
        for name, attr in (
            ("size", "size"),
            ("checked_in", "checkedin"),
            ("checked_out", "checkedout"),
            ("overflow", "overflow"),
        ):
            method = getattr(pool, attr, None)
            if callable(method):
                with contextlib.suppress(Exception):
                    metrics[name] = method()
        metrics["rejected"] = self.rejected
        metrics["connection_errors"] = self.connection_errors
        metrics["local_trips"] = self._trip.trips
        return metrics

    def __repr__(self) -> str:
        url = self._sync_engine.url.render_as_string(hide_password=True)
        return f"DatabaseGuard({url!r}, target={self.target!r})"
