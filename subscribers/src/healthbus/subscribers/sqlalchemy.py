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
- A connection-level error from a real attempt is classified by the driver's table
  (``healthbus.subscribers._errors``: psycopg, psycopg2, asyncpg and SQLAlchemy's own)
  and raised as DependencyUnavailable with that ``kind``; other errors (a constraint
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

:class:`GroupRouter` does the same for a group of databases (``[[groups]]``: a primary and
read replicas): one DatabaseGuard (and engine, and pool) per member; a read-only scope
goes to the member ``health.pick(group, read_only=True)`` gives (never the primary unless
the group allows reads there), a write scope to the primary (a group without one: to
``pick(group)``). A member tripped here (a connection error moments ago) is passed over
for the next one the policy gives; with none usable it raises at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

try:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "healthbus.subscribers.sqlalchemy needs SQLAlchemy: pip install 'healthbus-subscribers[sqlalchemy]'"
    ) from exc

from healthbus.protocol import Config, url_secrets
from healthbus.protocol.clock import Clock
from healthbus.subscribers._errors import classify
from healthbus.subscribers._guard import TargetGuard
from healthbus.subscribers._route import check_members, choose
from healthbus.subscribers._view import DependencyUnavailable, GroupHealthView, HealthView, clock_of

__all__ = ["DatabaseGuard", "DependencyUnavailable", "GroupRouter", "classify_error"]


def classify_error(exc: BaseException) -> str | None:
    """The kind of connection-level failure ``exc`` is, or None for any other error.

    The drivers' tables are in ``healthbus.subscribers._errors`` (docs/subscribers.md shows
    them): only a row that is the database's fault and trips gives a kind.
    """
    if isinstance(exc, DependencyUnavailable):
        return exc.kind
    found = classify(exc, attribute=False)
    return found.kind if found is not None and found.trips else None


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
        clock: Clock | None = None,
    ) -> None:
        clock = clock_of(health, clock, "DatabaseGuard(clock=...)")
        self.engine = engine
        self.health = health
        self.target = target
        self._sync_engine: Engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        secrets = url_secrets(self._sync_engine.url.render_as_string(hide_password=False))
        self._guard = TargetGuard(health, target, local_cooldown=local_cooldown, secrets=secrets, clock=clock)
        self._session_options = dict(session_options or {})

    # ------------------------------------------------------------ checks

    def usable(self) -> bool:
        """Whether a scope may try the database now (available, and no local trip in force)."""
        return self._guard.trip.usable()

    def check(self) -> None:
        """Raise DependencyUnavailable at once when the database must not be tried now."""
        self._guard.check()

    @property
    def rejected(self) -> int:
        """Sessions refused before touching the pool."""
        return self._guard.rejected

    @property
    def connection_errors(self) -> int:
        """Connection-level errors from real attempts (raised as DependencyUnavailable)."""
        return self._guard.connection_errors

    # ------------------------------------------------------------ sessions
    #
    # One rule for both scopes, stated once here: check before touching the pool; commit
    # at the end (``committing`` from then on); on any error roll back, and raise
    # DependencyUnavailable for a connection-level one; always close. The two scopes
    # below differ only in awaiting the session's calls.

    def _begin(self, options: dict[str, Any]) -> dict[str, Any]:
        """Fail fast when the target is out (before touching the pool), then the session's options."""
        self.check()
        return {**self._session_options, **options}

    def _raise_unavailable(self, exc: BaseException, committing: bool) -> None:
        """Raise DependencyUnavailable for a connection-level ``exc``; return for any other."""
        wrapped = self._guard.wrap(exc, during_commit=committing)
        if wrapped is not None:
            raise wrapped from None

    @contextlib.contextmanager
    def session_scope(self, **options: Any) -> Iterator[Session]:
        """A Session for a sync Engine: committed on success, rolled back on error; fails fast."""
        engine = self.engine
        if isinstance(engine, AsyncEngine):
            raise TypeError("session_scope() needs a sync Engine; use async_session_scope() with an AsyncEngine")
        session = Session(engine, **self._begin(options))
        committing = False
        try:
            yield session
            committing = True
            session.commit()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                session.rollback()
            self._raise_unavailable(exc, committing)
            raise
        finally:
            with contextlib.suppress(Exception):
                session.close()

    @contextlib.asynccontextmanager
    async def async_session_scope(self, **options: Any) -> AsyncIterator[AsyncSession]:
        """An AsyncSession for an AsyncEngine: committed on success, rolled back on error; fails fast."""
        engine = self.engine
        if not isinstance(engine, AsyncEngine):
            raise TypeError("async_session_scope() needs an AsyncEngine; use session_scope() with a sync Engine")
        session = AsyncSession(engine, **self._begin(options))
        committing = False
        try:
            yield session
            committing = True
            await session.commit()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await session.rollback()
            self._raise_unavailable(exc, committing)
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
        metrics["local_trips"] = self._guard.trip.trips
        return metrics

    def __repr__(self) -> str:
        url = self._sync_engine.url.render_as_string(hide_password=True)
        return f"DatabaseGuard({url!r}, target={self.target!r})"


class GroupRouter:
    """Sessions over a group of databases: reads to a usable replica by ``pick()``, writes to the primary.

    ``engines`` maps each member (target name) to its Engine or AsyncEngine; build them
    from the configuration with :meth:`from_config`. Each member has its own
    :class:`DatabaseGuard` (``guards[member]``: its local trip, counters and pool).
    """

    def __init__(
        self,
        engines: Mapping[str, Engine | AsyncEngine],
        health: GroupHealthView,
        group: str,
        *,
        primary: str | None = None,
        local_cooldown: float = 2.0,
        session_options: dict[str, Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        clock = clock_of(health, clock, "GroupRouter(clock=...)")
        check_members(group, engines, primary, "an engine")
        self.health = health
        self.group = group
        self.primary = primary
        self.guards = {
            member: DatabaseGuard(
                engine,
                health,
                member,
                local_cooldown=local_cooldown,
                session_options=session_options,
                clock=clock,
            )
            for member, engine in engines.items()
        }
        self.reads: dict[str, int] = dict.fromkeys(self.guards, 0)
        """Read-only scopes opened per member."""
        self.writes: dict[str, int] = dict.fromkeys(self.guards, 0)
        """Write scopes opened per member."""

    @classmethod
    def from_config(
        cls,
        config: Config,
        group: str,
        health: GroupHealthView,
        *,
        engine_factory: Callable[..., Engine | AsyncEngine] | None = None,
        driver: str = "postgresql+asyncpg",
        **engine_options: Any,
    ) -> GroupRouter:
        """One pooled engine per member of ``[[groups]]`` entry ``group``, from its targets' URLs.

        ``postgres`` targets get ``driver`` as their scheme (default asyncpg, with
        ``create_async_engine``); ``sqlalchemy`` targets keep their URL. ``engine_options``
        go to every engine (``pool_size``, ``pool_timeout``, ``connect_args`` ...).
        """
        spec = config.group(group)
        if engine_factory is None:
            from sqlalchemy.ext.asyncio import create_async_engine

            engine_factory = create_async_engine
        engines: dict[str, Engine | AsyncEngine] = {}
        for member in spec.members:
            target = config.target(member)
            url = target.url
            if target.kind == "postgres":
                url = driver + url[url.index("://") :]
            elif target.kind != "sqlalchemy":
                raise ValueError(f"group {group!r}: member {member!r} is a {target.kind} target, not a database")
            engines[member] = engine_factory(url, **engine_options)
        return cls(engines, health, group, primary=spec.primary)

    # ------------------------------------------------------------ choosing

    def choose(self, *, read_only: bool = False) -> str:
        """The member a scope would use now; DependencyUnavailable (``target`` the group) when none is usable.

        Writes: the primary when the group has one (its own guard decides whether it may
        be tried), else ``pick(group)``. Reads: ``pick(group, read_only=True)``. A member
        tripped here is passed over for the policy's next one.
        """
        if not read_only and self.primary is not None:
            self.guards[self.primary].check()
            return self.primary
        guards = self.guards
        return choose(
            self.health,
            self.group,
            list(guards),
            lambda member: member in guards and guards[member].usable(),
            primary=self.primary,
            read_only=read_only,
        )

    # ------------------------------------------------------------ sessions

    @contextlib.contextmanager
    def session_scope(self, *, read_only: bool = False, **options: Any) -> Iterator[Session]:
        """A Session on the chosen member (sync engines); see :meth:`DatabaseGuard.session_scope`."""
        member = self.choose(read_only=read_only)
        (self.reads if read_only else self.writes)[member] += 1
        with self.guards[member].session_scope(**options) as session:
            session.info["healthbus_member"] = member
            yield session

    @contextlib.asynccontextmanager
    async def async_session_scope(self, *, read_only: bool = False, **options: Any) -> AsyncIterator[AsyncSession]:
        """An AsyncSession on the chosen member; see :meth:`DatabaseGuard.async_session_scope`."""
        member = self.choose(read_only=read_only)
        (self.reads if read_only else self.writes)[member] += 1
        async with self.guards[member].async_session_scope(**options) as session:
            session.info["healthbus_member"] = member
            yield session

    # ------------------------------------------------------------ metrics and life cycle

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Per member: its pool and guard counters (:meth:`DatabaseGuard.pool_metrics`), reads and writes."""
        return {
            member: {**guard.pool_metrics(), "reads": self.reads[member], "writes": self.writes[member]}
            for member, guard in self.guards.items()
        }

    async def dispose(self) -> None:
        """Close every member's pool."""
        for guard in self.guards.values():
            if isinstance(guard.engine, AsyncEngine):
                await guard.engine.dispose()
            else:
                guard.engine.dispose()

    def __repr__(self) -> str:
        return f"GroupRouter(group={self.group!r}, members={list(self.guards)!r}, primary={self.primary!r})"
