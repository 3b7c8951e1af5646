"""The redis checker against a real redis-server: up, stopped, restarted, wrong password."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from healthbus.probes import build_checker
from healthbus.protocol import Duration, TargetConfig
from tests.harness._redis import RedisServer
from tests.harness._tls import make_ca
from tests.harness._util import require
from tests.probes._support import assert_refused_while_stopped

pytestmark = pytest.mark.redis

PASSWORD = "pw-Kx81-never-shown"
WRONG = "wr0ng-Qa77-never-shown"


def _target(url: str, **options: str | int | bool) -> TargetConfig:
    return TargetConfig(name="redis-main", kind="redis", url=url, timeout=Duration(2.0), options=dict(options))


async def test_pass_fail_pass(redis_server: RedisServer) -> None:
    """PING passes while up, fails as refused once stopped, and passes again after a restart."""
    checker = build_checker(_target(redis_server.url))
    try:
        up = await checker.check()
        assert up.outcome == "pass", up
        assert up.details["role"] == "master"
        assert str(up.details["redis_version"]).count(".") >= 1
        await assert_refused_while_stopped(checker, redis_server)
    finally:
        await checker.close()


async def test_wrong_password_is_auth_and_never_shown(
    redis_server_factory: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong password gives auth; neither password appears in the result or the logs."""
    caplog.set_level(logging.DEBUG)
    server: RedisServer = redis_server_factory(password=PASSWORD)  # type: ignore[operator]
    good = build_checker(_target(server.url))
    bad = build_checker(_target(f"redis://:{WRONG}@{server.host}:{server.port}/0"))
    none = build_checker(_target(f"redis://{server.host}:{server.port}/0"))
    try:
        assert (await good.check()).outcome == "pass"
        wrong = await bad.check()
        assert wrong.outcome == "fail"
        assert wrong.error_kind == "auth", wrong
        missing = await none.check()
        assert missing.error_kind == "auth", missing
        for secret in (PASSWORD, WRONG):
            assert secret not in repr(wrong)
            assert secret not in repr(missing)
            assert secret not in caplog.text
    finally:
        for c in (good, bad, none):
            await c.close()


async def test_hanging_server_does_not_hang_the_check(tmp_path: object) -> None:
    """A server that accepts but never answers fails as timeout within the target's timeout."""
    import asyncio

    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # keep the connection open and never answer

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    target = TargetConfig(name="slow", kind="redis", url=url, timeout=Duration(0.3), interval=Duration(1.0))
    checker = build_checker(target)
    try:
        async with asyncio.timeout(5):
            result = await checker.check()
        assert result.outcome == "fail"
        assert result.error_kind == "timeout", result
    finally:
        await checker.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


class TlsRedisServer(RedisServer):
    """redis-server serving TLS only on ``port``, with a certificate signed by a test CA."""

    def __init__(self, data_dir: Path, certs: Path) -> None:
        super().__init__(data_dir)
        self.certs = certs

    def argv(self) -> list[str]:
        """The plain port is off; the TLS port is ``self.port``."""
        plain = super().argv()
        i = plain.index("--port")
        plain[i + 1] = "0"
        c = self.certs
        return [
            *plain, "--tls-port", str(self.port), "--tls-cert-file", str(c / "server.crt"),
            "--tls-key-file", str(c / "server.key"), "--tls-ca-cert-file", str(c / "ca.crt"),
            "--tls-auth-clients", "no",
        ]  # fmt: skip


async def test_rediss_tls(tmp_path: Path) -> None:
    """rediss:// passes with the CA given, fails as tls without it, passes with tls_verify = false."""
    require("redis-server", "install redis-server (apt-get install redis-server)")
    certs = make_ca(tmp_path / "certs").where
    server = TlsRedisServer(tmp_path / "tls-redis", certs)
    server.start()
    url = f"rediss://127.0.0.1:{server.port}/0"
    checkers = [
        build_checker(_target(url, tls_ca=str(certs / "ca.crt"))),
        build_checker(_target(url)),
        build_checker(_target(url, tls_verify=False)),
    ]
    try:
        with_ca, without_ca, unverified = [await c.check() for c in checkers]
        assert with_ca.outcome == "pass", with_ca
        assert without_ca.error_kind == "tls", without_ca
        assert unverified.outcome == "pass", unverified
    finally:
        for c in checkers:
            await c.close()
        server.stop()


async def test_acl_user(redis_server: RedisServer) -> None:
    """An ACL user and password in the URL authenticate; a wrong one is auth; a user without INFO still passes."""
    from redis.asyncio import Redis

    admin = Redis.from_url(redis_server.url)
    await admin.acl_setuser(
        "probe", enabled=True, passwords=["+acl-Pw-55x"], commands=["+ping", "+client|setname", "+hello"]
    )
    await admin.aclose()
    base = f"{redis_server.host}:{redis_server.port}/0"
    good = build_checker(_target(f"redis://probe:acl-Pw-55x@{base}"))
    bad = build_checker(_target(f"redis://probe:nope-Pw-66y@{base}"))
    try:
        ok = await good.check()
        assert ok.outcome == "pass", ok
        assert "redis_version" not in ok.details  # INFO is not allowed for this user
        wrong = await bad.check()
        assert wrong.error_kind == "auth"
        assert "nope-Pw-66y" not in repr(wrong)
    finally:
        await good.close()
        await bad.close()


def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without its driver, a checker module raises DriverMissing naming the extra to install."""
    import importlib
    import sys

    from healthbus.probes import DriverMissing

    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    monkeypatch.delitem(sys.modules, "healthbus.probes._checkers._redis", raising=False)
    with pytest.raises(DriverMissing, match=r"healthbus-probes\[redis\]"):
        importlib.import_module("healthbus.probes._checkers._redis")


async def test_checks_hold_no_connection(redis_server: RedisServer) -> None:
    """By default each check connects afresh and closes its connection before returning; with
    reuse_connection one connection serves the checks, renewed every fresh_connect_every."""
    from redis.asyncio import Redis

    fresh = build_checker(_target(redis_server.url))
    reused = build_checker(_target(redis_server.url, reuse_connection=True, fresh_connect_every=3))
    admin = Redis.from_url(redis_server.url)
    try:

        async def probe_ids() -> list[str]:
            clients = await admin.client_list()
            return [str(c["id"]) for c in clients if c.get("name") == "healthbus-probe"]

        for _ in range(3):
            assert (await fresh.check()).outcome == "pass"
            assert await probe_ids() == []
        seen: list[list[str]] = []
        for _ in range(6):
            assert (await reused.check()).outcome == "pass"
            seen.append(await probe_ids())
        assert all(len(ids) == 1 for ids in seen), seen
        assert seen[0] == seen[1] == seen[2] != seen[3] == seen[4] == seen[5], seen
    finally:
        await fresh.close()
        await reused.close()
        await admin.aclose()
