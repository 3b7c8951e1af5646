"""Turning driver exceptions into the contract's ``error_kind`` values.

One function per driver family; each returns the kind it recognises, or None to let the
generic rules decide. The generic rules look at the whole exception chain (``__cause__``,
``__context__``, SQLAlchemy's ``.orig``, aiohttp's ``.os_error``) for the builtin errors
every driver ends up raising, then at the message text, then say ``other``.

Kinds: ``timeout`` (no answer in time), ``refused`` (connection refused, reset or
unreachable: nothing is accepting connections), ``dns`` (name resolution failed),
``auth`` (credentials or permissions rejected), ``tls`` (TLS handshake or certificate),
``protocol`` (something answered, but not the expected protocol), ``unhealthy`` (the
dependency answered and says it is not well: loading, starting up, ES red, HTTP 5xx),
``no_new_connections`` (the server answered a new connection and refused it while it
serves the sessions it has: too many clients, a smart shutdown; checkers report it as a
``warn``), ``other`` (anything else).

Driver modules are imported inside the functions: a classifier is only called for a
checker whose driver is installed.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Final

from healthbus.protocol import ErrorKind

SUMMARY: Final[dict[ErrorKind, str]] = {
    "timeout": "timed out",
    "refused": "connection refused",
    "dns": "name resolution failed",
    "auth": "authentication failed",
    "tls": "TLS error",
    "protocol": "protocol error",
    "unhealthy": "unhealthy",
    "no_new_connections": "new connections refused",
    "other": "error",
}

_TEXT_RULES: Final[tuple[tuple[ErrorKind, re.Pattern[str]], ...]] = (
    (
        "dns",
        re.compile(
            r"name or service not known|nodename nor servname|temporary failure in name resolution|"
            r"no address associated|domain name not found|errors resolving|lookup failed|getaddrinfo",
            re.I,
        ),
    ),
    ("tls", re.compile(r"\bssl\b|\btls\b|certificate|handshake", re.I)),
    (
        "auth",
        re.compile(
            r"wrongpass|noauth|authenticat|password|permission denied|unauthori[sz]ed|forbidden|not authori[sz]ed",
            re.I,
        ),
    ),
    ("refused", re.compile(r"connection refused|connect call failed|error 111\b|econnrefused|unreachable", re.I)),
    ("timeout", re.compile(r"timed? ?out|deadline exceeded|timeout", re.I)),
)

_REFUSED_ERRNOS: Final = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET})


def exception_chain(exc: BaseException, limit: int = 12) -> Iterator[BaseException]:
    """``exc`` and the exceptions behind it (cause, context, ``.orig``, ``.os_error``), once each."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < limit:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for attr in ("orig", "os_error", "__cause__", "__context__"):
            nxt = getattr(current, attr, None)
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def classify_builtin(exc: BaseException) -> ErrorKind | None:
    """The kind of one builtin exception (OSError family, TimeoutError), or None."""
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError on 3.11+
        return "timeout"
    if isinstance(exc, ConnectionRefusedError | ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return "refused"
    if isinstance(exc, OSError) and exc.errno in _REFUSED_ERRNOS:
        return "refused"
    return None


def classify_text(text: str) -> ErrorKind | None:
    """A kind guessed from a message, for drivers that only say it in words."""
    for kind, pattern in _TEXT_RULES:
        if pattern.search(text):
            return kind
    return None


def message(exc: BaseException) -> str:
    """The exception's text, or its class name when it has none."""
    text = str(exc).strip()
    return text or type(exc).__name__


def describe(kind: ErrorKind, exc: BaseException) -> str:
    """Short human text: ``"connection refused: <driver message>"``."""
    return f"{SUMMARY[kind]}: {message(exc)}"


def _classify_with(
    exc: BaseException, specific: Callable[[BaseException], ErrorKind | None] | None
) -> tuple[ErrorKind, str]:
    chain = list(exception_chain(exc))
    if specific is not None:
        for e in chain:
            kind = specific(e)
            if kind is not None:
                return kind, describe(kind, exc)
    for e in chain:
        kind = classify_builtin(e)
        if kind is not None:
            return kind, describe(kind, exc)
    for e in chain:
        kind = classify_text(message(e))
        if kind is not None:
            return kind, describe(kind, exc)
    return "other", describe("other", exc)


def classify_generic(exc: BaseException) -> tuple[ErrorKind, str]:
    """Kind and short text for any exception (builtin rules, then message text)."""
    return _classify_with(exc, None)


def admission_kind(kind: ErrorKind, text: str, *, admitted: bool) -> tuple[ErrorKind, str]:
    """``(kind, text)`` of a failed check, with an ``auth`` failure after earlier
    admission (``admitted``: this checker's connections were let in before, and the server
    rejected the login itself, see :func:`login_rejected`) read as ``no_new_connections``:
    pg_hba.conf or a password changed, so new sessions are refused while the open ones keep
    working. An auth failure from the start stays ``auth`` (the probe's own configuration is
    wrong)."""
    if kind == "auth" and admitted:
        return "no_new_connections", f"{SUMMARY['no_new_connections']} (was let in before): {text}"
    return kind, text


# --------------------------------------------------------------------------- redis


#: What redis-server answers a new connection beyond ``maxclients`` (then it closes it).
_REDIS_FULL: Final = "max number of clients reached"


def _redis_kind(exc: BaseException) -> ErrorKind | None:
    from redis import exceptions as rx

    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError | rx.NoPermissionError):
        return "auth"
    if isinstance(exc, rx.TimeoutError):
        return "timeout"
    if isinstance(exc, rx.BusyLoadingError | rx.MasterDownError | rx.OutOfMemoryError | rx.TryAgainError):
        return "unhealthy"
    if isinstance(exc, rx.ResponseError):
        text = str(exc)
        if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            return "auth"
        if text.startswith(("LOADING", "MASTERDOWN", "BUSY")):
            return "unhealthy"
        if _REDIS_FULL in text:
            return "no_new_connections"
        return "protocol"
    if isinstance(exc, rx.InvalidResponse | rx.DataError):
        return "protocol"
    if isinstance(exc, rx.ConnectionError):
        # redis-py puts the OS error only in the text: "Error 111 connecting to ...".
        text = str(exc)
        if _REDIS_FULL in text:
            return "no_new_connections"
        if re.search(r"Error -\d+ connecting", text):
            return "dns"
        return classify_text(text) or "refused"
    return None


def classify_redis(exc: BaseException) -> tuple[ErrorKind, str]:
    """Kind and text for a redis-py error."""
    return _classify_with(exc, _redis_kind)


# --------------------------------------------------------------------------- asyncpg


def _asyncpg_kind(exc: BaseException) -> ErrorKind | None:
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints

    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InsufficientPrivilegeError):
        return "auth"
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        return "no_new_connections"  # 53300: "sorry, too many clients already", reserved slots
    if isinstance(exc, asyncpg.CannotConnectNowError):
        # 57P03: "the database system is shutting down" (a smart shutdown waits for the open
        # sessions) refuses only new ones; starting up / in recovery serve nobody yet.
        return "no_new_connections" if "shutting down" in str(exc) else "unhealthy"
    if isinstance(exc, asyncpg.exceptions.AdminShutdownError | asyncpg.exceptions.CrashShutdownError):
        return "unhealthy"
    if isinstance(exc, asyncpg.ConnectionDoesNotExistError):
        return "refused"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return "other"  # the database does not exist: a configuration problem
    if isinstance(exc, asyncpg.exceptions.ProtocolViolationError):
        return "protocol"
    if isinstance(exc, ConnectionError) and not isinstance(exc, ConnectionRefusedError | ConnectionResetError):
        # asyncpg raises a plain ConnectionError for "rejected SSL upgrade"
        kind = classify_text(str(exc))
        if kind is not None:
            return kind
    return None


def classify_asyncpg(exc: BaseException) -> tuple[ErrorKind, str]:
    """Kind and text for an asyncpg error (its connect errors are builtins, not wrapped)."""
    return _classify_with(exc, _asyncpg_kind)


def login_rejected(exc: BaseException) -> bool:
    """Whether ``exc`` (or one behind it) is a server rejecting a new session's login, which
    leaves the sessions it has alone: PostgreSQL 28000/28P01 (pg_hba.conf, password), Redis
    WRONGPASS/NOAUTH. Not a permission a running session lacks (42501, NOPERM): that holds
    for every session."""
    for e in exception_chain(exc):
        module = type(e).__module__
        if module.startswith("asyncpg"):
            import asyncpg

            if isinstance(e, asyncpg.InvalidAuthorizationSpecificationError):
                return True
        elif module.startswith("redis"):
            from redis import exceptions as rx

            if isinstance(e, rx.AuthenticationError) or (
                isinstance(e, rx.ResponseError) and str(e).startswith(("WRONGPASS", "NOAUTH"))
            ):
                return True
    return False


# --------------------------------------------------------------------------- sqlalchemy


def _sqlalchemy_kind(exc: BaseException) -> ErrorKind | None:
    try:
        kind = _asyncpg_kind(exc)
    except ImportError:
        kind = None
    if kind is not None:
        return kind
    from sqlalchemy import exc as sx

    if isinstance(exc, sx.DBAPIError) and exc.connection_invalidated:
        return "refused"
    if isinstance(exc, sx.ArgumentError | sx.NoSuchModuleError):
        return "other"
    cls = type(exc)
    if cls.__module__.startswith("sqlite3") or cls.__name__ == "OperationalError":
        text = str(exc).lower()
        if "locked" in text or "disk i/o" in text or "readonly" in text:
            return "unhealthy"
    return None


# SQLAlchemy wraps the driver's text as "(module.Class) text ... (Background on this error
# at: https://sqlalche.me/...)": the class tag and the link say nothing to an operator and
# use up the 300 characters of `error`.
_SQLALCHEMY_TAG = re.compile(r"\((?:[A-Za-z_][\w]*\.)+[A-Za-z_]\w*\) ")
_SQLALCHEMY_LINK = re.compile(r"\s*\(Background on this error at: [^)]*\)")


def classify_sqlalchemy(exc: BaseException) -> tuple[ErrorKind, str]:
    """Kind and text for an SQLAlchemy error (and the driver error inside it)."""
    kind, text = _classify_with(exc, _sqlalchemy_kind)
    return kind, _SQLALCHEMY_LINK.sub("", _SQLALCHEMY_TAG.sub("", text, count=1))


# --------------------------------------------------------------------------- milvus


def _grpc_kind(exc: BaseException) -> ErrorKind | None:
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if not callable(code):
        return None
    try:
        name = getattr(code(), "name", str(code()))
        text = str(details()) if callable(details) else ""
    except Exception:
        return None
    if name == "DEADLINE_EXCEEDED":
        return "timeout"
    if name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return "auth"
    if name == "UNAVAILABLE":
        return classify_text(text) if classify_text(text) in ("dns", "tls", "timeout") else "refused"
    if name in ("UNIMPLEMENTED", "INTERNAL", "UNKNOWN"):
        return "protocol"
    return None


def _milvus_kind(exc: BaseException) -> ErrorKind | None:
    kind = _grpc_kind(exc)
    if kind is not None:
        return kind
    from pymilvus.exceptions import MilvusException

    if isinstance(exc, MilvusException):
        text = str(exc)
        if exc.__cause__ is not None or exc.__context__ is not None:
            return None  # let the gRPC error behind it decide
        found = classify_text(text)
        if found is not None:
            return found
        if "Fail connecting" in text or "server unavailable" in text:
            return "refused"
    return None


def classify_milvus(exc: BaseException) -> tuple[ErrorKind, str]:
    """Kind and text for a pymilvus error (gRPC status behind it when there is one)."""
    kind, _ = _classify_with(exc, _milvus_kind)
    if kind == "other":
        from pymilvus.exceptions import MilvusException

        if isinstance(exc, MilvusException) and ("Fail connecting" in str(exc) or "unavailable" in str(exc)):
            kind = "refused"
    return kind, describe(kind, exc)


# --------------------------------------------------------------------------- elasticsearch


def _es_kind(exc: BaseException) -> ErrorKind | None:
    import elastic_transport as et
    import elasticsearch as es

    if isinstance(exc, es.AuthenticationException | es.AuthorizationException):
        return "auth"
    if isinstance(exc, es.UnsupportedProductError):
        return "protocol"
    if isinstance(exc, et.TlsError):
        return "tls"
    if isinstance(exc, et.ConnectionTimeout):
        return "timeout"
    if isinstance(exc, es.ApiError):
        status = getattr(exc.meta, "status", 0)
        if status in (401, 403):
            return "auth"
        if status >= 500 or status == 408:
            return "unhealthy"
        return "protocol"
    if isinstance(exc, et.ConnectionError):
        return classify_text(str(exc)) or "refused"
    return None


def classify_elasticsearch(exc: BaseException) -> tuple[ErrorKind, str]:
    """Kind and text for an elasticsearch-py / elastic-transport error."""
    import elastic_transport as et

    if isinstance(exc, et.ConnectionError) and not isinstance(exc, et.TlsError | et.ConnectionTimeout):
        # elastic-transport says only "Connection error"; the reason (DNS, refused, ...)
        # is the aiohttp error it was raised while handling.
        inner = exc.__cause__ or exc.__context__ or next(iter(getattr(exc, "errors", ()) or ()), None)
        if isinstance(inner, BaseException):
            kind, text = classify_aiohttp(inner)
            if kind != "other":
                return kind, text
    return _classify_with(exc, _es_kind)


# --------------------------------------------------------------------------- aiohttp


def _aiohttp_kind(exc: BaseException) -> ErrorKind | None:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "tls"
    dns_error = getattr(aiohttp, "ClientConnectorDNSError", None)
    if dns_error is not None and isinstance(exc, dns_error):
        return "dns"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "refused"
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError | aiohttp.InvalidURL):
        return "protocol"
    return None


def classify_aiohttp(exc: BaseException) -> tuple[ErrorKind, str]:
    """Kind and text for an aiohttp client error."""
    return _classify_with(exc, _aiohttp_kind)
