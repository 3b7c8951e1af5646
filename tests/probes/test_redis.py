"""The redis checker against a real redis-server: up, stopped, restarted, wrong password."""

from __future__ import annotations

import logging

import pytest

from healthbus.probes import build_checker
from healthbus.protocol import Duration, TargetConfig
from tests.harness._redis import RedisServer

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
        redis_server.stop()
        down = await checker.check()
        assert down.outcome == "fail"
        assert down.error_kind == "refused", down
        redis_server.start()
        again = await checker.check()
        assert again.outcome == "pass", again
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
