"""Which errors are a dependency's fault: one classification table per driver (pure: matched by name).

Every adapter and web helper asks :func:`classify` what an exception means; nothing else
in the library decides it. A :class:`Row` of :data:`TABLES` names the driver, the error
it matches (exception class names anywhere in the class's MRO, SQLSTATEs, or words of the
message), and what follows from it:

- ``kind``: the kind of failure (``refused``, ``shutdown``, ``too_many_connections``...);
  failure reports carry it as a wire error kind (``_report.report_kind``).
- ``trips``: the adapter stops using the dependency locally for its cool-down
  (``_trip.LocalTrip``), and a web helper answers ``503`` instead of ``500``.
- ``reports``: a failure report goes to the coordinator (checks start now).
- ``dependency``: the dependency's fault at all. Rows with ``dependency=False`` (a
  constraint violation, bad SQL, a wrong Redis type) never trip, report or become 503:
  the error propagates unchanged. They are listed so the docs show them and the tests
  prove them; an error no row matches is treated the same way.

The first row that matches wins, so the more specific rows come first. The errors are
looked at through their wrappers: SQLAlchemy's ``orig`` and every ``__cause__`` (never
``__context__``: that is whatever the caller was handling, not what caused this error).
A builtin ``OSError`` (asyncpg raises ``ConnectionRefusedError`` for a closed port) is
only attributed to a driver when its traceback passes through that driver, so another
client failing inside the same block is not taken for the database.

Only :func:`driver_error_types` imports drivers (those installed), for the web helpers
that register error handlers by class.

docs/subscribers.md's table of these rows is checked against :func:`markdown_table` by a
test, and every row is proven against the real server state it names
(tests/subscribers/test_error_tables.py).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Final

__all__ = ["SYSTEMS", "TABLES", "ErrorClass", "Row", "classify", "driver_error_types", "driver_of", "markdown_table"]

#: The kind of server each driver talks to: a web helper names an unattributed error's target by it.
SYSTEMS: Final = {
    "psycopg": "postgresql",
    "psycopg2": "postgresql",
    "asyncpg": "postgresql",
    "pg8000": "postgresql",
    "sqlalchemy": "sql",
    "redis": "redis",
    "pymilvus": "milvus",
    "elasticsearch": "elasticsearch",
}


@dataclass(frozen=True, slots=True)
class ErrorClass:
    """What an error means for the dependency it came from (see the module docstring)."""

    driver: str
    kind: str
    trips: bool
    reports: bool
    dependency: bool
    row: str
    """The :attr:`Row.state` of the row that matched (for logs and tests)."""

    @property
    def system(self) -> str:
        """The kind of server (``postgresql``, ``redis``...): :data:`SYSTEMS`, else the driver's name."""
        return SYSTEMS.get(self.driver, self.driver)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a driver's table: what it matches and what follows from it."""

    driver: str
    state: str
    """The server state (or mistake) that produces this error, as the docs table says it."""
    kind: str
    types: tuple[str, ...] = ()
    """Exception class names, matched anywhere in the error class's MRO."""
    sqlstates: tuple[str, ...] = ()
    """SQLSTATE codes or class prefixes (``"23"``: every integrity violation)."""
    text: tuple[str, ...] = ()
    """Lower-case words of the message; with ``types`` too, both must match."""
    trips: bool = True
    reports: bool = True
    dependency: bool = True

    def matches(self, error: BaseException, names: frozenset[str]) -> bool:
        """Whether ``error`` is this row's. A row of message words alone matches only an error without a
        SQLSTATE (what drivers raise while connecting): an error with one is decided by its code."""
        if self.text and not self.types and not self.sqlstates and _sqlstate(error) is not None:
            return False
        if self.types and not names.intersection(self.types):
            return False
        if self.sqlstates:
            code = _sqlstate(error)
            if code is None or not code.startswith(self.sqlstates):
                return False
        if self.text:
            message = _message(error)
            if not any(word in message for word in self.text):
                return False
        return bool(self.types or self.sqlstates or self.text)

    def classify(self) -> ErrorClass:
        dependency = self.dependency
        return ErrorClass(
            self.driver,
            self.kind,
            self.trips and dependency,
            self.reports and dependency,
            dependency,
            self.state,
        )


def _pg_rows(driver: str, error: str) -> tuple[Row, ...]:
    """The PostgreSQL server states every PostgreSQL driver meets; ``error`` is the driver's base class name.

    psycopg (3 and 2) report connection-time failures as ``OperationalError`` without a
    SQLSTATE, so those rows match the server's message; errors inside a session carry one.
    """
    return (
        Row(driver, "server stopped or not listening (connection refused)", "refused",
            text=("connection refused",)),
        Row(driver, "`pg_ctl stop -m smart` / `-m fast` in progress: new connection", "shutdown",
            text=("the database system is shutting down",)),
        Row(driver, "starting up (before it accepts connections)", "starting_up",
            text=("the database system is starting up", "not yet accepting connections",
                  "is not accepting connections")),
        Row(driver, "crash recovery after `-m immediate` or a backend crash", "starting_up",
            text=("the database system is in recovery mode",)),
        Row(driver, "`max_connections` exhausted", "too_many_connections",
            sqlstates=("53300",)),
        Row(driver, "`max_connections` exhausted", "too_many_connections",
            text=("too many clients already", "remaining connection slots are reserved")),
        Row(driver, "`pg_ctl stop -m fast` / `pg_terminate_backend()`: open session", "disconnected",
            sqlstates=("57P01", "57P02")),
        Row(driver, "`pg_ctl stop -m fast` / `pg_terminate_backend()`: open session", "disconnected",
            text=("terminating connection due to administrator command",
                  "terminating connection because of crash of another server process")),
        Row(driver, "`pg_ctl stop -m immediate`: open session", "disconnected",
            text=("server closed the connection unexpectedly", "connection is closed",
                  "consuming input failed", "the connection is lost")),
        Row(driver, "wrong password / no such role", "auth",
            sqlstates=("28",)),
        Row(driver, "wrong password / no such role", "auth",
            text=("password authentication failed", "no password supplied", "role \"")),
        Row(driver, "missing database", "no_database",
            sqlstates=("3D000",)),
        Row(driver, "missing database", "no_database",
            text=("does not exist",), types=(error,)),
        Row(driver, "read-only standby after a failover", "read_only",
            sqlstates=("25006",)),
        Row(driver, "host name does not resolve", "dns",
            text=("could not translate host name", "name or service not known",
                  "temporary failure in name resolution")),
        Row(driver, "connect timeout", "timeout",
            text=("timeout expired", "connection timeout")),
        Row(driver, "any other connection failure", "connection",
            text=("could not connect", "connection failed", "connection to server")),
        Row(driver, "constraint violation (SQLSTATE class 23)", "integrity",
            sqlstates=("23",), dependency=False),
        Row(driver, "syntax error, unknown table or column (class 42)", "sql",
            sqlstates=("42",), dependency=False),
        Row(driver, "bad data: division by zero, invalid input (class 22)", "data",
            sqlstates=("22",), dependency=False),
        Row(driver, "serialization failure or deadlock (class 40)", "conflict",
            sqlstates=("40",), dependency=False),
    )  # fmt: skip


_PSYCOPG: Final = _pg_rows("psycopg", "OperationalError")
_PSYCOPG2: Final = _pg_rows("psycopg2", "OperationalError")

_ASYNCPG: Final = (
    Row("asyncpg", "`pg_ctl stop -m smart` / `-m fast` in progress: new connection", "shutdown",
        types=("CannotConnectNowError",), text=("shutting down",)),
    Row("asyncpg", "starting up or in recovery (SQLSTATE 57P03)", "starting_up",
        types=("CannotConnectNowError",)),
    Row("asyncpg", "`max_connections` exhausted", "too_many_connections",
        types=("TooManyConnectionsError",)),
    Row("asyncpg", "`pg_ctl stop -m fast|immediate` / `pg_terminate_backend()`: open session", "disconnected",
        types=("ConnectionDoesNotExistError", "AdminShutdownError", "CrashShutdownError")),
    Row("asyncpg", "connection closed under the pool", "disconnected",
        types=("InterfaceError",), text=("closed", "connection was lost")),
    Row("asyncpg", "wrong password / no such role", "auth",
        types=("InvalidPasswordError", "InvalidAuthorizationSpecificationError")),
    Row("asyncpg", "missing database", "no_database",
        types=("InvalidCatalogNameError",)),
    Row("asyncpg", "read-only standby after a failover", "read_only",
        types=("ReadOnlySQLTransactionError",)),
    Row("asyncpg", "any other connection failure (SQLSTATE class 08)", "connection",
        types=("PostgresConnectionError", "ConnectionFailureError", "ClientCannotConnectError")),
    Row("asyncpg", "constraint violation (SQLSTATE class 23)", "integrity",
        types=("IntegrityConstraintViolationError",), dependency=False),
    Row("asyncpg", "syntax error, unknown table or column (class 42)", "sql",
        types=("SyntaxOrAccessError",), dependency=False),
    Row("asyncpg", "bad data: division by zero, invalid input (class 22)", "data",
        types=("DataError",), dependency=False),
    Row("asyncpg", "serialization failure or deadlock (class 40)", "conflict",
        types=("TransactionRollbackError",), dependency=False),
)  # fmt: skip

_SQLALCHEMY: Final = (
    Row("sqlalchemy", "pool exhausted (`pool_timeout` passed: a local limit, not reported)", "pool_timeout",
        types=("TimeoutError",), reports=False),
    Row("sqlalchemy", "a pooled connection found dead (`connection_invalidated`)", "disconnected",
        types=("DBAPIError",), text=()),
)  # fmt: skip

_REDIS: Final = (
    Row("redis", "wrong password / `NOAUTH` / `WRONGPASS`", "auth",
        types=("AuthenticationError", "AuthenticationWrongNumberOfArgsError", "AuthorizationError")),
    Row("redis", "`LOADING`: loading the dataset after a restart", "loading",
        types=("BusyLoadingError",)),
    Row("redis", "`MASTERDOWN`: replica lost its master", "master_down",
        types=("MasterDownError",)),
    Row("redis", "`READONLY`: writing to a replica after a failover", "read_only",
        types=("ReadOnlyError",)),
    Row("redis", "`OOM`: `maxmemory` reached (reads still work: no trip)", "out_of_memory",
        types=("OutOfMemoryError",), trips=False),
    Row("redis", "`max number of clients reached`", "too_many_connections",
        types=("ConnectionError",), text=("max number of clients",)),
    Row("redis", "socket timeout", "timeout",
        types=("TimeoutError",)),
    Row("redis", "server stopped (connection refused)", "refused",
        types=("ConnectionError",), text=("refused", "connect call failed", "error 111 ")),
    Row("redis", "host name does not resolve", "dns",
        types=("ConnectionError",), text=("name or service not known", "name resolution", "nodename nor servname")),
    Row("redis", "connection lost (server stopped or killed mid-call)", "disconnected",
        types=("ConnectionError",)),
    Row("redis", "wrong type, unknown command, bad arguments (`ResponseError`)", "command",
        types=("ResponseError", "DataError"), dependency=False),
)  # fmt: skip

_PYMILVUS: Final = (
    Row("pymilvus", "server stopped or unreachable", "connection",
        types=("MilvusUnavailableException", "ConnectError", "ConnectionNotExistException")),
    Row("pymilvus", "server stopped or unreachable", "connection",
        types=("MilvusException",), text=("fail connecting", "unavailable", "connection refused", "failed to connect")),
    Row("pymilvus", "deadline exceeded", "timeout",
        types=("MilvusException",), text=("deadline exceeded", "timeout")),
    Row("pymilvus", "server frozen or overloaded: gRPC deadline exceeded (raised as grpc's error)", "timeout",
        types=("RpcError",), text=("deadline_exceeded", "deadline exceeded")),
    Row("pymilvus", "server gone mid-call: gRPC unavailable (raised as grpc's error)", "connection",
        types=("RpcError",), text=("statuscode.unavailable",)),
    Row("pymilvus", "unknown collection, bad parameters", "request",
        types=("MilvusException", "ParamError"), dependency=False),
)  # fmt: skip

_ELASTICSEARCH: Final = (
    Row("elasticsearch", "connect or read timeout", "timeout",
        types=("ConnectionTimeout",)),
    Row("elasticsearch", "server stopped or unreachable", "refused",
        types=("ConnectionError",), text=("refused",)),
    Row("elasticsearch", "server stopped or unreachable", "connection",
        types=("ConnectionError", "SSLError", "TransportError")),
    Row("elasticsearch", "wrong credentials (401/403)", "auth",
        types=("AuthenticationException", "AuthorizationException")),
    Row("elasticsearch", "cluster unavailable or overloaded (HTTP 429, 502, 503, 504)", "unavailable",
        types=("ApiError",), text=("429", "502", "503", "504")),
    Row("elasticsearch", "bad request, unknown index, conflict (HTTP 4xx)", "request",
        types=("ApiError",), dependency=False),
)  # fmt: skip

#: Builtin socket errors, attributed to the driver whose frames they passed through.
_BUILTIN: Final = (
    Row("builtin", "connection refused (asyncpg: closed port)", "refused", types=("ConnectionRefusedError",)),
    Row("builtin", "host name does not resolve", "dns", types=("gaierror",)),
    Row("builtin", "connect timeout", "timeout", types=("TimeoutError",)),
    Row("builtin", "connection reset or broken", "disconnected", types=("ConnectionError",)),
    Row("builtin", "other socket error", "connection", types=("OSError",)),
)

#: Every driver's table, by driver name (module docstring).
TABLES: Final[dict[str, tuple[Row, ...]]] = {
    "psycopg": _PSYCOPG,
    "psycopg2": _PSYCOPG2,
    "asyncpg": _ASYNCPG,
    "sqlalchemy": _SQLALCHEMY,
    "redis": _REDIS,
    "pymilvus": _PYMILVUS,
    "elasticsearch": _ELASTICSEARCH,
    "builtin": _BUILTIN,
}

# The top-level module of an exception class, as the driver whose table applies.
_MODULE_DRIVERS: Final = {
    "psycopg": "psycopg",
    "psycopg_binary": "psycopg",
    "psycopg2": "psycopg2",
    "asyncpg": "asyncpg",
    "sqlalchemy": "sqlalchemy",
    "redis": "redis",
    "pymilvus": "pymilvus",
    "grpc": "pymilvus",
    "elasticsearch": "elasticsearch",
    "elastic_transport": "elasticsearch",
}

#: Modules whose frames attribute a builtin socket error to a database or cache client.
DRIVER_MODULES: Final = frozenset(_MODULE_DRIVERS) | {
    "pg8000",
    "aiosqlite",
    "sqlite3",
    "pymysql",
    "aiomysql",
    "asyncmy",
}

_OS_NOT_NETWORK: Final = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _sqlstate(error: BaseException) -> str | None:
    for attr in ("sqlstate", "pgcode"):  # asyncpg / psycopg 3, psycopg2
        code = getattr(error, attr, None)
        if isinstance(code, str) and code:
            return code
    return None


def _message(error: BaseException) -> str:
    """The error's text, lower case, with its string arguments (elastic_transport's str() is "Connection error")."""
    parts = [str(error), *(arg for arg in error.args if isinstance(arg, str))]
    return " ".join(parts).lower()


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it wraps: SQLAlchemy's ``orig`` and every ``__cause__`` (never ``__context__``)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        todo.extend([orig if isinstance(orig, BaseException) else None, current.__cause__])


def _frames(tb: TracebackType | None) -> Iterator[str]:
    while tb is not None:
        yield str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0]
        tb = tb.tb_next


def driver_of(exc: BaseException) -> str | None:
    """The driver ``exc`` came out of (its class's module, else a frame of its traceback), or None."""
    fallback: str | None = None
    for item in chain(exc):
        top = type(item).__module__.split(".")[0]
        if top in _MODULE_DRIVERS and top != "sqlalchemy":
            return _MODULE_DRIVERS[top]
        if top == "sqlalchemy":
            fallback = fallback or "sqlalchemy"
        for module in _frames(item.__traceback__):
            if module in DRIVER_MODULES and module != "sqlalchemy":
                return _MODULE_DRIVERS.get(module, module)
            if module == "sqlalchemy":
                fallback = fallback or "sqlalchemy"
    return fallback


def _names(error: BaseException) -> frozenset[str]:
    return frozenset(cls.__name__ for cls in type(error).__mro__)


def _classify_one(error: BaseException) -> ErrorClass | None:
    top = type(error).__module__.split(".")[0]
    driver = _MODULE_DRIVERS.get(top)
    names = _names(error)
    if driver == "sqlalchemy":
        if "TimeoutError" in names:
            return _SQLALCHEMY[0].classify()
        if getattr(error, "connection_invalidated", False):
            return _SQLALCHEMY[1].classify()
        return None  # a wrapper: its ``orig`` decides
    if driver is not None:
        for row in TABLES[driver]:
            if row.matches(error, names):
                return row.classify()
        return None
    if isinstance(error, OSError | asyncio.TimeoutError | socket.gaierror) and not isinstance(error, _OS_NOT_NETWORK):
        for row in _BUILTIN:
            if row.matches(error, names):
                return row.classify()
    return None


def classify(exc: BaseException, *, attribute: bool = True) -> ErrorClass | None:
    """What ``exc`` means for the dependency it came from, or None when no driver's table knows it.

    The first error in ``exc``'s chain (itself, SQLAlchemy's ``orig``, ``__cause__``) a
    driver's row matches decides; SQLAlchemy's own rows (pool timeout, invalidated
    connection) only when the driver's error says nothing. A builtin socket error counts
    only when it came out of a driver (its traceback passes through one): ``driver`` then
    names that driver. ``attribute=False`` skips that test (``driver`` is ``builtin``).
    """
    wrapper: ErrorClass | None = None
    for item in chain(exc):
        found = _classify_one(item)
        if found is None:
            continue
        if found.driver == "sqlalchemy":
            wrapper = wrapper or found
            continue
        if found.driver != "builtin" or not attribute:
            return found
        driver = driver_of(exc)
        if driver is None:
            return None  # another client's socket error inside the block: not the dependency's
        return ErrorClass(driver, found.kind, found.trips, found.reports, found.dependency, found.row)
    return wrapper


# (module, class names) whose errors the web helpers answer; the heavy ones only once imported.
_ERROR_BASES: Final = (
    ("sqlalchemy.exc", ("SQLAlchemyError",), True),
    ("psycopg", ("Error",), True),
    ("psycopg2", ("Error",), True),
    ("asyncpg", ("PostgresError", "InterfaceError"), True),
    ("redis.exceptions", ("RedisError",), True),
    ("elastic_transport", ("TransportError",), False),
    ("elasticsearch", ("ApiError",), False),
    ("pymilvus.exceptions", ("MilvusException",), False),
)


def driver_error_types() -> tuple[type[Exception], ...]:
    """The base error classes of the drivers installed here, plus ``OSError`` (asyncpg's connect errors).

    psycopg, psycopg2, asyncpg, SQLAlchemy and redis-py are imported if installed;
    elasticsearch and pymilvus (slow to import) only count once the application imported them.
    """
    found: list[type[Exception]] = [OSError]
    for module_name, names, import_if_installed in _ERROR_BASES:
        module = sys.modules.get(module_name)
        if module is None:
            top = module_name.split(".")[0]
            if not import_if_installed or importlib.util.find_spec(top) is None:
                continue
            try:
                module = importlib.import_module(module_name)
            except ImportError:  # pragma: no cover - a broken installation
                continue
        for name in names:
            cls = getattr(module, name, None)
            if isinstance(cls, type) and issubclass(cls, Exception) and cls not in found:
                found.append(cls)
    return tuple(found)


def markdown_table() -> str:
    """The docs table of every row (docs/subscribers.md carries exactly this text)."""
    yes = {True: "yes", False: "—"}
    lines = [
        "| driver | server state or mistake | kind | trips | reports | dependency's fault |",
        "|---|---|---|---|---|---|",
    ]
    shown: set[tuple[str, str, str]] = set()
    for driver, rows in TABLES.items():
        if driver == "psycopg2":
            continue  # the same rows as psycopg
        for row in rows:
            key = (driver, row.state, row.kind)
            if key in shown:
                continue
            shown.add(key)
            c = row.classify()
            label = "psycopg (3) / psycopg2" if driver == "psycopg" else driver
            lines.append(
                f"| {label} | {row.state} | `{row.kind}` | {yes[c.trips]} | {yes[c.reports]} | {yes[c.dependency]} |"
            )
    return "\n".join(lines) + "\n"
