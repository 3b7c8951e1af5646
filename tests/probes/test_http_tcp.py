"""The http and tcp checkers against real local servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from healthbus.probes import CheckResult, build_checker
from healthbus.probes._checkers._http import parse_expect_status
from healthbus.protocol import Duration, TargetConfig
from tests.harness._util import free_port

TOKEN = "Bearer tok-Jm27-never-shown"


def _target(kind: str, url: str, **options: str | int | bool) -> TargetConfig:
    return TargetConfig(
        name="api",
        kind=kind,  # type: ignore[arg-type]
        url=url,
        timeout=Duration(1.0),
        interval=Duration(5.0),
        options=dict(options),
    )


@pytest.fixture
async def http_base() -> AsyncIterator[str]:
    """A small HTTP server: /ok 200, /down 503, /secret needs the token, /body says 'all good', /slow sleeps."""

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="fine")

    async def down(_: web.Request) -> web.Response:
        return web.Response(status=503, text="maintenance")

    async def secret(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != TOKEN:
            return web.Response(status=401, text=f"you sent {request.headers.get('Authorization')}")
        return web.Response(status=204)

    async def body(_: web.Request) -> web.Response:
        return web.Response(text="status: all good")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    app = web.Application()
    for path, handler in (("/ok", ok), ("/down", down), ("/secret", secret), ("/body", body), ("/slow", slow)):
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _check(target: TargetConfig) -> CheckResult:
    checker = build_checker(target)
    try:
        return await checker.check()
    finally:
        await checker.close()


async def test_http_status_rules(http_base: str) -> None:
    """2xx passes; 503 fails as unhealthy with the status in details; expect_status changes the rule."""
    ok = await _check(_target("http", f"{http_base}/ok"))
    assert ok.outcome == "pass"
    assert ok.details["status"] == 200
    down = await _check(_target("http", f"{http_base}/down"))
    assert down.outcome == "fail"
    assert down.error_kind == "unhealthy"
    assert down.details["status"] == 503
    expected = await _check(_target("http", f"{http_base}/down", expect_status=503))
    assert expected.outcome == "pass"


async def test_http_headers_are_secret(http_base: str) -> None:
    """A header option is sent; a 401 is auth; the header value never shows in the result."""
    good = await _check(_target("http", f"{http_base}/secret", **{"header:Authorization": TOKEN}))
    assert good.outcome == "pass"
    wrong = await _check(_target("http", f"{http_base}/secret", **{"header:Authorization": TOKEN + "x"}))
    assert wrong.error_kind == "auth"
    assert "tok-Jm27" not in repr(wrong)


async def test_http_contains_and_timeout(http_base: str) -> None:
    """contains checks the body; a slow server is a timeout; a closed port is refused."""
    assert (await _check(_target("http", f"{http_base}/body", contains="all good"))).outcome == "pass"
    missing = await _check(_target("http", f"{http_base}/body", contains="database ok"))
    assert missing.error_kind == "unhealthy"
    slow = await _check(_target("http", f"{http_base}/slow"))
    assert slow.error_kind == "timeout"
    refused = await _check(_target("http", f"http://127.0.0.1:{free_port()}/"))
    assert refused.error_kind == "refused"


def test_expect_status_forms() -> None:
    """expect_status accepts a code, a class and a list, and rejects anything else with the accepted forms."""
    assert parse_expect_status(204) == [(204, 204)]
    assert parse_expect_status("2xx,304") == [(200, 299), (304, 304)]
    with pytest.raises(ValueError, match="2xx"):
        parse_expect_status("abc")


async def test_tcp(http_base: str) -> None:
    """tcp passes on an accepted connection, fails as refused on a closed port and dns on a bad name."""
    port = int(http_base.rsplit(":", 1)[1])
    ok = await _check(_target("tcp", f"tcp://127.0.0.1:{port}"))
    assert ok.outcome == "pass"
    assert ok.details["peer"] == f"127.0.0.1:{port}"
    assert (await _check(_target("tcp", f"tcp://127.0.0.1:{free_port()}"))).error_kind == "refused"
    assert (await _check(_target("tcp", "tcp://no-such-host.invalid:80"))).error_kind == "dns"


def test_tcp_url_needs_a_port() -> None:
    """A tcp URL without a port is rejected when the checker is built, naming the target."""
    with pytest.raises(ValueError, match="api"):
        build_checker(_target("tcp", "tcp://db.internal"))
