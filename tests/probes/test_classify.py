"""Classification of driver exceptions into the contract's error_kind values, and redaction."""

from __future__ import annotations

import asyncio
import socket
import ssl

import asyncpg  # type: ignore[import-untyped]
import elastic_transport
import elasticsearch
import pytest
import redis.exceptions as rx
from sqlalchemy import exc as sx

from healthbus.probes._base import CheckResult, short, target_secrets
from healthbus.probes._classify import (
    admission_kind,
    classify_asyncpg,
    classify_elasticsearch,
    classify_generic,
    classify_redis,
    classify_sqlalchemy,
    classify_text,
    exception_chain,
    login_rejected,
)
from healthbus.protocol import ErrorKind, TargetConfig
from tests.harness._util import free_port

PASSWORD = "Zq-p4ss-w0rd-xyz"


def _target(url: str, **options: str) -> TargetConfig:
    return TargetConfig(name="t", kind="redis", url=url, options=dict(options))


def test_builtin_errors_map_to_kinds() -> None:
    """The OS-level errors every driver ends in get their obvious kinds."""
    assert classify_generic(ConnectionRefusedError(111, "Connect call failed"))[0] == "refused"
    assert classify_generic(socket.gaierror(-2, "Name or service not known"))[0] == "dns"
    assert classify_generic(TimeoutError())[0] == "timeout"
    assert classify_generic(ssl.SSLCertVerificationError("certificate verify failed"))[0] == "tls"
    assert classify_generic(ConnectionResetError(104, "reset"))[0] == "refused"
    assert classify_generic(ValueError("something odd"))[0] == "other"


def test_kind_found_behind_wrappers() -> None:
    """A wrapper's cause (``raise ... from``) decides when the wrapper itself says nothing."""
    outer = RuntimeError("wrapped")
    outer.__cause__ = ConnectionRefusedError(111, "refused")
    kinds = [type(e).__name__ for e in exception_chain(outer)]
    assert kinds == ["RuntimeError", "ConnectionRefusedError"]
    assert classify_generic(outer)[0] == "refused"


async def test_real_refused_and_dns_errors() -> None:
    """A real connect to a closed port is refused; a .invalid host is a dns error."""
    port = free_port()
    with pytest.raises(ConnectionRefusedError) as refused:
        await asyncio.open_connection("127.0.0.1", port)
    assert classify_generic(refused.value)[0] == "refused"
    with pytest.raises(socket.gaierror) as dns:
        await asyncio.open_connection("no-such-host.invalid", 80)
    assert classify_generic(dns.value)[0] == "dns"


async def test_redis_real_connect_errors() -> None:
    """redis-py's own connect errors (text only, no cause) classify as refused and dns."""
    from redis.asyncio import Redis

    for url, kind in ((f"redis://127.0.0.1:{free_port()}/0", "refused"), ("redis://no-such-host.invalid/0", "dns")):
        client = Redis.from_url(url, socket_connect_timeout=2, retry=None)
        with pytest.raises(rx.ConnectionError) as err:
            await client.ping()
        await client.aclose()
        assert classify_redis(err.value)[0] == kind


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (rx.AuthenticationError("invalid username-password pair or user is disabled."), "auth"),
        (rx.ResponseError("NOAUTH Authentication required."), "auth"),
        (rx.ResponseError("WRONGPASS invalid username-password pair"), "auth"),
        (rx.NoPermissionError("this user has no permissions to run the 'info' command"), "auth"),
        (rx.BusyLoadingError("Redis is loading the dataset in memory"), "unhealthy"),
        (rx.TimeoutError("Timeout reading from socket"), "timeout"),
        (rx.ResponseError("ERR unknown command"), "protocol"),
        (rx.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connect call failed."), "refused"),
        (rx.ConnectionError("Error -2 connecting to nohost:6379. Name or service not known."), "dns"),
        (rx.ConnectionError("Connection closed by server."), "refused"),
        (rx.ResponseError("max number of clients reached"), "no_new_connections"),
        (rx.ConnectionError("max number of clients reached"), "no_new_connections"),
    ],
)
def test_redis_kinds(exc: BaseException, kind: str) -> None:
    """redis-py exception classes and messages map to the right kinds."""
    assert classify_redis(exc)[0] == kind


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (asyncpg.InvalidPasswordError('password authentication failed for user "postgres"'), "auth"),
        (asyncpg.CannotConnectNowError("the database system is starting up"), "unhealthy"),
        (asyncpg.TooManyConnectionsError("sorry, too many clients already"), "no_new_connections"),
        (
            asyncpg.TooManyConnectionsError(
                "remaining connection slots are reserved for roles with the SUPERUSER attribute"
            ),
            "no_new_connections",
        ),
        (asyncpg.CannotConnectNowError("the database system is shutting down"), "no_new_connections"),
        (asyncpg.CannotConnectNowError("the database system is in recovery mode"), "unhealthy"),
        (asyncpg.InvalidAuthorizationSpecificationError('no pg_hba.conf entry for host "127.0.0.1"'), "auth"),
        (asyncpg.InvalidCatalogNameError('database "nodb" does not exist'), "other"),
        (ConnectionError('PostgreSQL server at "127.0.0.1:5432" rejected SSL upgrade'), "tls"),
        (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), "refused"),
        (ConnectionRefusedError(111, "Connect call failed"), "refused"),
    ],
)
def test_asyncpg_kinds(exc: BaseException, kind: str) -> None:
    """asyncpg errors (its own and the unwrapped builtins) map to the right kinds."""
    assert classify_asyncpg(exc)[0] == kind


@pytest.mark.parametrize(
    ("kind", "admitted", "expected"),
    [
        ("auth", True, "no_new_connections"),
        ("auth", False, "auth"),
        ("refused", True, "refused"),
        ("unhealthy", True, "unhealthy"),
    ],
)
def test_admission_kind(kind: ErrorKind, admitted: bool, expected: str) -> None:
    """Only an auth failure after earlier admission means "new sessions refused"."""
    new_kind, text = admission_kind(kind, "authentication failed: no pg_hba.conf entry", admitted=admitted)
    assert new_kind == expected
    assert "no pg_hba.conf entry" in text


@pytest.mark.parametrize(
    ("exc", "rejected"),
    [
        (asyncpg.InvalidPasswordError('password authentication failed for user "app"'), True),
        (asyncpg.InvalidAuthorizationSpecificationError('no pg_hba.conf entry for host "127.0.0.1"'), True),
        (sx.DBAPIError("SELECT 1", None, asyncpg.InvalidPasswordError("password authentication failed")), True),
        (asyncpg.InsufficientPrivilegeError("permission denied for table t"), False),
        (rx.AuthenticationError("invalid username-password pair"), True),
        (rx.ResponseError("WRONGPASS invalid username-password pair"), True),
        (rx.NoPermissionError("this user has no permissions to run the 'ping' command"), False),
        (ConnectionRefusedError(111, "Connect call failed"), False),
    ],
)
def test_login_rejected(exc: BaseException, rejected: bool) -> None:
    """Only a rejected login (which spares the open sessions) counts, not a missing permission."""
    assert login_rejected(exc) is rejected


def test_sqlalchemy_wrappers() -> None:
    """SQLAlchemy's DBAPIError is classified by the driver error inside it."""
    inner = asyncpg.InvalidPasswordError("password authentication failed")
    wrapped = sx.DBAPIError("SELECT 1", None, inner)
    assert classify_sqlalchemy(wrapped)[0] == "auth"
    invalidated = sx.DBAPIError("SELECT 1", None, Exception("server closed"), connection_invalidated=True)
    assert classify_sqlalchemy(invalidated)[0] == "refused"
    assert classify_sqlalchemy(ConnectionRefusedError(111, "x"))[0] == "refused"


def test_sqlalchemy_text_drops_the_class_tag_and_the_link() -> None:
    """An SQLAlchemy error reads as the driver's words, without "(sqlite3.OperationalError)" or the sqlalche.me link."""
    import sqlite3

    wrapped = sx.OperationalError(None, None, sqlite3.OperationalError("unable to open database file"))
    assert "sqlalche.me" in str(wrapped)
    assert classify_sqlalchemy(wrapped) == ("other", "error: unable to open database file")


def test_elasticsearch_kinds() -> None:
    """elasticsearch-py / elastic-transport errors map to the right kinds."""
    node = elastic_transport.NodeConfig("http", "127.0.0.1", 9200)
    meta = elastic_transport.ApiResponseMeta(
        status=503, http_version="1.1", headers=elastic_transport.HttpHeaders(), duration=0.0, node=node
    )
    assert classify_elasticsearch(elasticsearch.ApiError("unavailable", meta, {}))[0] == "unhealthy"
    meta401 = elastic_transport.ApiResponseMeta(
        status=401, http_version="1.1", headers=elastic_transport.HttpHeaders(), duration=0.0, node=node
    )
    assert classify_elasticsearch(elasticsearch.AuthenticationException("no", meta401, {}))[0] == "auth"
    assert classify_elasticsearch(elastic_transport.ConnectionTimeout("timed out"))[0] == "timeout"
    assert classify_elasticsearch(elastic_transport.TlsError("bad cert"))[0] == "tls"
    assert classify_elasticsearch(elastic_transport.ConnectionError("Connection refused"))[0] == "refused"


def test_text_rules() -> None:
    """Messages are recognised when a driver only says it in words."""
    assert classify_text("Temporary failure in name resolution") == "dns"
    assert classify_text("SSL: WRONG_VERSION_NUMBER") == "tls"
    assert classify_text("deadline exceeded") == "timeout"
    assert classify_text("all fine") is None


def test_secrets_of_a_target() -> None:
    """URL passwords (raw and percent-decoded) and secret options are the target's secrets."""
    target = _target("redis://:p%40ss@h:6379/0", token="tok-123", **{"header:Authorization": "Bearer abc"})
    secrets = target_secrets(target)
    assert {"p%40ss", "p@ss", "tok-123", "Bearer abc"} <= set(secrets)


def test_short_redacts_and_cuts() -> None:
    """Error text is redacted, put on one line, and bounded."""
    text = f"failed for redis://user:{PASSWORD}@h:1/0\nwith password={PASSWORD} " + "x" * 1000
    out = short(text, [PASSWORD])
    assert PASSWORD not in out
    assert "\n" not in out
    assert len(out) <= 300


def test_check_result_defaults() -> None:
    """A CheckResult carries no error unless given one."""
    result = CheckResult(outcome="pass")
    assert result.error_kind is None
    assert result.error is None
    assert result.details == {}
