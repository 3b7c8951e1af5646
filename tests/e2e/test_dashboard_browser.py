"""The dashboard in a real headless Chromium: `healthbus dashboard` shows state changes live."""

from __future__ import annotations

import base64
import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from nats.aio.client import Client

from healthbus.bus.embedded import EmbeddedNats, free_port
from healthbus.protocol import utcnow
from tests.cli._support import event, story
from tests.e2e._browser import Chromium, find_chromium
from tests.e2e._procs import Command
from tests.e2e._stack import Stack, fast_config
from tests.harness._redis import RedisServer
from tests.helpers import publish_states

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.nats]

PREFIX = "browser"
#: Set HEALTHBUS_SCREENSHOT_DIR to keep a PNG of the page (for looking at it, not for asserting).
SCREENSHOT_DIR = os.environ.get("HEALTHBUS_SCREENSHOT_DIR")


def card(target: str, what: str) -> str:
    """JS: a property of the target's card (null while there is no card)."""
    return f"document.querySelector('[data-target=\"{target}\"]')?{what}"


async def test_page_follows_the_stream_live(nats_server: EmbeddedNats, nc: Client, tmp_path: Path) -> None:
    """Cards show state, breaker, countdown, features, evidence and timeline, and flip live over SSE."""
    find_chromium()
    events = story()
    await publish_states(nc.jetstream(), PREFIX, events)
    port = free_port()
    dash = await Command(
        ["dashboard", "--nats", nats_server.url, "--prefix", PREFIX, "--http", f"127.0.0.1:{port}"],
        tmp_path / "dashboard.log",
    ).start()
    browser = Chromium(tmp_path / "profile")
    try:
        await dash.wait_http_ready(f"http://127.0.0.1:{port}")
        await browser.open(f"http://127.0.0.1:{port}/")
        await browser.wait_for(card("cache", ".dataset.state") + " === 'healthy'", 20, "the cache card, healthy")
        assert await browser.evaluate(card("db", ".dataset.state")) == "healthy"
        assert await browser.evaluate("document.getElementById('conn').dataset.conn") == "live"
        # The timeline comes from the audit stream: all four changes of `cache`.
        await browser.wait_for(
            card("cache", ".querySelectorAll('.changes li').length") + " === 4", 10, "the cache timeline"
        )
        assert await browser.evaluate(card("cache", ".querySelector('.features').textContent")) == "cache"

        # A change published now reaches the open page without a reload.
        retry_at = utcnow() + timedelta(minutes=5)
        outage = event(
            "cache",
            5,
            "unavailable",
            utcnow(),
            previous="healthy",
            breaker="open",
            reason="2/2 probes failed: refused",
            retry_at=retry_at,
            features=["cache"],
        )
        await publish_states(nc.jetstream(), PREFIX, [outage])
        await browser.wait_for(card("cache", ".dataset.state") + " === 'unavailable'", 15, "the flip to unavailable")
        assert await browser.evaluate(card("cache", ".querySelector('.breaker').textContent")) == "open"
        retry = await browser.evaluate(card("cache", ".querySelector('.retry').textContent"))
        assert retry.startswith("in 4m") or retry.startswith("in 5m")
        assert await browser.evaluate(card("cache", ".querySelector('.reason').textContent")) == outage.reason
        assert await browser.evaluate(card("cache", ".querySelector('.evidence td.outcome-fail') !== null"))
        assert await browser.evaluate(card("cache", ".querySelectorAll('.changes li').length")) == 5
        assert await browser.evaluate(card("cache", ".querySelectorAll('.bar .seg.unavailable').length")) >= 1

        # No polling: the page read each target's history once; every change came over the event stream
        # (an open EventSource is not listed in resource timing until it ends).
        urls = await browser.evaluate("performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)")
        assert sorted(u for u in urls if u.startswith("/api/")) == ["/api/history", "/api/history"]
        if SCREENSHOT_DIR:
            shot = await browser.call("Page.captureScreenshot", {"format": "png"})
            (Path(SCREENSHOT_DIR) / "dashboard.png").write_bytes(base64.b64decode(shot["data"]))
        assert await dash.signal(signal.SIGINT) == 0
    finally:
        await browser.close()
        await dash.stop()
    assert events  # the story was published


@pytest.mark.redis
@pytest.mark.slow
async def test_page_shows_a_real_outage(nats_server: EmbeddedNats, redis_server: RedisServer, tmp_path: Path) -> None:
    """Real redis-server, coordinator, probe worker and dashboard: stopping Redis flips the open page."""
    find_chromium()
    stack = Stack(nats_server.url, fast_config([("redis", "redis", redis_server.url)]), tmp_path / "stack", probes=1)
    port = free_port()
    dash = Command(["dashboard", "--nats", nats_server.url, "--http", f"127.0.0.1:{port}"], tmp_path / "dashboard.log")
    browser = Chromium(tmp_path / "profile")
    try:
        await stack.start()
        await dash.start()
        await dash.wait_http_ready(f"http://127.0.0.1:{port}")
        await browser.open(f"http://127.0.0.1:{port}/")
        await browser.wait_for(card("redis", ".dataset.state") + " === 'healthy'", 30, "the redis card, healthy")
        redis_server.stop()
        await browser.wait_for(card("redis", ".dataset.state") + " === 'unavailable'", 30, "redis shown unavailable")
        assert (await browser.evaluate(card("redis", ".querySelector('.breaker').textContent"))).startswith("open")
        assert await browser.evaluate(card("redis", ".querySelector('.evidence td.outcome-fail') !== null"))
        redis_server.start()
        await browser.wait_for(card("redis", ".dataset.state") + " === 'healthy'", 30, "redis shown healthy again")
    except BaseException:
        print(stack.logs(), dash.log())
        raise
    finally:
        await browser.close()
        await dash.stop()
        await stack.stop()
