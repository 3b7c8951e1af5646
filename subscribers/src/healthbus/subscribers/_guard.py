"""The database guard's rules, shared by DatabaseGuard (SQLAlchemy) and the Django ORM guard.

- :meth:`TargetGuard.check` raises :class:`DependencyUnavailable` before any connection
  is tried while the health client says the target is not available, or a connection
  failure happened here less than ``local_cooldown`` seconds ago and no newer verdict
  has arrived since (``_trip.LocalTrip``).
- :meth:`TargetGuard.wrap` turns an error the driver's table (``_errors``) says trips into
  that DependencyUnavailable (with the row's ``kind``), trips locally and reports (when
  the row reports). Any other error is left alone: the caller re-raises it unchanged.
- No message carries a credential: every text is redacted with the target's secrets, and
  the original exception is summarised, never chained.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

from healthbus.protocol import redact
from healthbus.protocol.clock import Clock
from healthbus.subscribers._errors import classify
from healthbus.subscribers._trip import LocalTrip
from healthbus.subscribers._view import DependencyUnavailable, HealthView, clock_of

log = logging.getLogger("healthbus.subscribers.sqlalchemy")

#: The drivers whose errors are the database's (a Redis or HTTP client's error inside a scope is not).
DATABASE_DRIVERS: Final = frozenset(
    {"psycopg", "psycopg2", "asyncpg", "sqlalchemy", "pg8000", "aiosqlite", "sqlite3", "pymysql", "aiomysql", "asyncmy"}
)


class TargetGuard:
    """Fail fast while ``target`` is unavailable; classify, trip and report on a connection failure."""

    def __init__(
        self,
        health: HealthView,
        target: str,
        *,
        local_cooldown: float = 2.0,
        secrets: Iterable[str] = (),
        clock: Clock | None = None,
    ) -> None:
        self.health = health
        self.target = target
        self.trip = LocalTrip(health, target, local_cooldown, clock_of(health, clock, "TargetGuard(clock=...)"))
        self._secrets = list(secrets)
        self.rejected = 0
        """Attempts refused before touching the database."""
        self.connection_errors = 0
        """Connection-level errors from real attempts (raised as DependencyUnavailable)."""

    def clean(self, text: str) -> str:
        """``text`` with the target's credentials masked."""
        return redact(text, self._secrets)

    def check(self) -> None:
        """Raise DependencyUnavailable at once when the database must not be tried now."""
        if self.trip.usable():
            return
        self.rejected += 1
        state = self.health.state(self.target)
        retry_at = state.retry_at if state is not None else None
        if self.trip.active and (state is None or state.available):
            reason = "connection failed here moments ago"
        elif state is None:
            reason = "state unknown (no verdict from healthbus yet)"
        else:
            reason = f"{state.state}" + (f": {self.clean(state.reason)}" if state.reason else "")
            if state.stale:
                reason += " (stale: healthbus unreachable)"
        raise DependencyUnavailable(self.target, retry_at, reason)

    def wrap(self, exc: BaseException, *, during_commit: bool = False) -> DependencyUnavailable | None:
        """The DependencyUnavailable ``exc`` stands for (tripping and reporting), or None to re-raise it as is.

        During COMMIT every error is the database's; elsewhere a builtin socket error must
        have come out of a driver (another service's client may fail inside the block).
        """
        if isinstance(exc, DependencyUnavailable):
            return None
        found = classify(exc, attribute=not during_commit)
        if found is None or not found.trips or found.driver not in DATABASE_DRIVERS | {"builtin"}:
            return None
        kind = found.kind
        self.connection_errors += 1
        summary = self.clean(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        reason = f"{kind}: {type(exc).__name__}: {summary}"
        self.trip.trip(kind, f"{type(exc).__name__}: {summary}", report=found.reports)
        if during_commit:
            reason += " (during COMMIT: the outcome is unknown, the transaction may or may not have been applied)"
        state = self.health.state(self.target)
        error = DependencyUnavailable(self.target, state.retry_at if state is not None else None, reason, kind=kind)
        log.warning("%s: %s", self.target, reason)
        return error
