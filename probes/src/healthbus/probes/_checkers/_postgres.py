"""``postgres``: ``SELECT 1`` over a fresh asyncpg connection per check (or a kept one).

URL form: ``postgresql://[user[:password]@]host[:port]/db[?sslmode=...]`` (``postgres://``
too). asyncpg's connect errors are builtins (ConnectionRefusedError, TimeoutError,
socket.gaierror) or its own (InvalidPasswordError, CannotConnectNowError): see
:func:`healthbus.probes._classify.classify_asyncpg`.

Each check connects the way a new client does and closes its session before returning
(:class:`~healthbus.probes._base.BaseChecker`): a server out of connection slots or in a
smart shutdown is seen at once, and the probe never holds a shutdown up. With option
``reuse_connection`` the connection is kept, with a fresh connect at least every
``fresh_connect_every`` checks; when the kept connection turns out dead (server
restarted), the check reconnects once at once, so a restarted server passes at the next
check. The session's ``application_name`` is ``healthbus-probe`` (option), so an operator
sees the probes in ``pg_stat_activity``.

Outcome: pass when the query answers; warn with ``no_new_connections`` when the server
refuses the new connection but serves its sessions (too many clients, shutting down, or
an auth failure after earlier logins); fail otherwise. Details: ``server_version``,
``in_recovery`` (True on a replica), ``role`` (``primary``/``replica``).
Option ``expect_role`` (``primary``/``replica``): fail with ``unhealthy`` on the other.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from healthbus.probes._base import BaseChecker, CheckResult, Closer, driver_missing
from healthbus.probes._classify import classify_asyncpg
from healthbus.protocol import DetailValue, ErrorKind, TargetConfig

try:
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise driver_missing("postgres", "asyncpg", "postgres", exc) from None

_QUERY = "SELECT 1 AS ok, pg_is_in_recovery() AS in_recovery, current_setting('server_version') AS version"


class PostgresChecker(BaseChecker):
    """``SELECT 1`` (plus version and recovery state) against one PostgreSQL server."""

    kind = "postgres"
    holds_connections = True

    def __init__(self, target: TargetConfig) -> None:
        super().__init__(target)
        self._conn: Any = None  # asyncpg.Connection
        expect = self.opt_str("expect_role")
        if expect not in (None, "primary", "replica"):
            raise ValueError(f"target {target.name}: options.expect_role must be 'primary' or 'replica'")
        self._expect_role = expect

    def _ssl(self) -> ssl.SSLContext | None:
        ca = self.opt_str("tls_ca")
        if not ca:
            return None
        ctx = ssl.create_default_context(cafile=ca)
        cert = self.opt_str("tls_cert")
        if cert:
            ctx.load_cert_chain(cert, self.opt_str("tls_key"))
        if not self.opt_bool("tls_verify", True):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _connect(self) -> Any:
        kwargs: dict[str, Any] = {"timeout": float(self.target.timeout), "command_timeout": float(self.target.timeout)}
        context = self._ssl()
        if context is not None:
            kwargs["ssl"] = context
        kwargs["server_settings"] = {"application_name": self.opt_str("application_name", "healthbus-probe") or ""}
        return await asyncpg.connect(self.target.url, **kwargs)

    async def _check(self) -> CheckResult:
        try:
            return await self._check_once()
        except asyncio.CancelledError:
            # Cancelled by the hard timeout mid-query: the connection's state is unknown.
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.terminate()
            raise

    async def _check_once(self) -> CheckResult:
        fresh = False
        if self._conn is None or self._conn.is_closed():
            await self._release()
            self._conn = await self._connect()
            fresh = True
        try:
            row = await self._conn.fetchrow(_QUERY)
        except (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, ConnectionError, OSError):
            if fresh:
                raise
            # The kept connection died (server restart): one new connection, at once.
            await self._release()
            self._conn = await self._connect()
            row = await self._conn.fetchrow(_QUERY)
        in_recovery = bool(row["in_recovery"])
        role = "replica" if in_recovery else "primary"
        details: dict[str, DetailValue] = {
            "server_version": str(row["version"]),
            "in_recovery": in_recovery,
            "role": role,
        }
        if self._expect_role is not None and role != self._expect_role:
            return self.fail("unhealthy", f"server is a {role}, expected a {self._expect_role}", details)
        return CheckResult(outcome="pass", details=details)

    def _classify(self, exc: BaseException) -> tuple[ErrorKind, str]:
        return classify_asyncpg(exc)

    async def _after_error(self, exc: BaseException) -> None:
        await self._release()

    def _detach(self) -> Closer | None:
        conn, self._conn = self._conn, None
        if conn is None:
            return None

        async def closer() -> None:
            try:
                await conn.close(timeout=1)
            except Exception:
                conn.terminate()

        return closer

    async def close(self) -> None:
        await self._release()
