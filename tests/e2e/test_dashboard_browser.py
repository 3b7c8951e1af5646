"""The dashboard in a real headless Chromium: `healthbus dashboard` shows state changes live."""

from __future__ import annotations

import base64
import os
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client

from healthbus.bus.embedded import EmbeddedNats, free_port
from healthbus.protocol import Evidence, State, StateChanged, utcnow
from tests.cli._support import event, story
from tests.e2e._browser import Chromium, find_chromium
from tests.e2e._procs import Command
from tests.e2e._stack import Stack, fast_config
from tests.harness._redis import RedisServer
from tests.helpers import publish_states, state_changed

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.nats]

PREFIX = "browser"
#: Set HEALTHBUS_SCREENSHOT_DIR to keep a PNG of the page (for looking at it, not for asserting).
SCREENSHOT_DIR = os.environ.get("HEALTHBUS_SCREENSHOT_DIR")


def row(target: str, what: str) -> str:
    """JS: a property of the target's element (null while the page does not list it)."""
    return f"document.querySelector('#rows [data-target=\"{target}\"]')?{what}"


def detail(what: str) -> str:
    """JS: a property of the detail panel (the clicked target's transitions)."""
    return f"document.getElementById('detail'){what}"


async def open_dashboard(nats_url: str, tmp_path: Path) -> tuple[Command, Chromium]:
    """``healthbus dashboard`` on a free port, and a Chromium that has it open."""
    port = free_port()
    dash = await Command(
        ["dashboard", "--nats", nats_url, "--prefix", PREFIX, "--http", f"127.0.0.1:{port}"],
        tmp_path / "dashboard.log",
    ).start()
    browser = Chromium(tmp_path / "profile")
    try:
        await dash.wait_http_ready(f"http://127.0.0.1:{port}")
        await browser.open(f"http://127.0.0.1:{port}/")
    except BaseException:
        await browser.close()
        await dash.stop()
        raise
    return dash, browser


async def screenshot(browser: Chromium, name: str) -> None:
    """Keep a PNG of the page in HEALTHBUS_SCREENSHOT_DIR, when set."""
    if SCREENSHOT_DIR:
        shot = await browser.call("Page.captureScreenshot", {"format": "png"})
        (Path(SCREENSHOT_DIR) / name).write_bytes(base64.b64decode(shot["data"]))


async def test_page_follows_the_stream_live(nats_server: EmbeddedNats, nc: Client, tmp_path: Path) -> None:
    """Targets show state, breaker, countdown, features and timelines; a click shows the
    transitions with reasons and evidence from the audit stream; changes arrive live over SSE."""
    find_chromium()
    events = story()
    await publish_states(nc.jetstream(), PREFIX, events)
    dash, browser = await open_dashboard(nats_server.url, tmp_path)
    try:
        await browser.wait_for(row("cache", ".dataset.state") + " === 'healthy'", 20, "the cache target, healthy")
        assert await browser.evaluate(row("db", ".dataset.state")) == "healthy"
        assert await browser.evaluate("document.getElementById('conn').dataset.conn") == "live"
        # Two targets: the card view; the counts at the top.
        assert await browser.evaluate("document.getElementById('targets').dataset.view") == "cards"
        assert await browser.evaluate("document.querySelector('.count.healthy').dataset.count") == "2"
        assert await browser.evaluate(row("cache", ".querySelector('.features').textContent")) == "cache"
        # The timelines come from the audit stream: cache's outage ten minutes ago is on both bars.
        await browser.wait_for("document.getElementById('targets').dataset.timelines === 'loaded'", 10, "the timelines")
        for bar in ("tl-hour", "tl-day"):
            for state in ("healthy", "unavailable", "recovering"):
                assert await browser.evaluate(row("cache", f".querySelector('.{bar} .seg.{state}') !== null")), (
                    bar,
                    state,
                )
        assert await browser.evaluate(row("db", ".querySelector('.tl-day .seg.unavailable')")) is None

        # A click opens the target's transitions, newest first, with reasons and evidence.
        await browser.evaluate(row("cache", ".click()"))
        await browser.wait_for(detail(".dataset.transitions === 'loaded'"), 10, "cache's transitions")
        assert await browser.evaluate(detail(".dataset.target")) == "cache"
        seqs = await browser.evaluate(detail(".querySelectorAll('.transitions > li')") + ".length")
        assert seqs == 4
        outage_li = detail(".querySelector('.transitions > li[data-seq=\"2\"]')")
        assert await browser.evaluate(outage_li + ".dataset.state") == "unavailable"
        assert await browser.evaluate(outage_li + ".querySelector('.why').textContent") == "2/2 probes failed: refused"
        assert await browser.evaluate(outage_li + ".querySelector('.ev .outcome-fail').textContent") == (
            f"w1: fail (refused) at {events[2].at.strftime('%H:%M:%S')}Z"
        )

        # A change published now reaches the open page without a reload, in the row and the panel.
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
        await browser.wait_for(row("cache", ".dataset.state") + " === 'unavailable'", 15, "the flip to unavailable")
        breaker = await browser.evaluate(row("cache", ".querySelector('.breaker').textContent"))
        assert breaker.startswith("open · retry in 4m") or breaker.startswith("open · retry in 5m"), breaker
        assert await browser.evaluate(row("cache", ".querySelector('.reason').textContent")) == outage.reason
        assert await browser.evaluate("document.querySelector('.count.unavailable').dataset.count") == "1"
        assert await browser.evaluate(detail(".querySelector('.transitions > li').dataset.seq")) == "5"
        assert await browser.evaluate(detail(".querySelector('.evidence td.outcome-fail') !== null"))
        assert await browser.evaluate(detail(".querySelector('.breaker').textContent")) == "open"

        # A target removed from the configuration (retired) leaves the page.
        gone = msgspec.structs.replace(event("db", 2, "unknown", utcnow(), previous="healthy"), retired=True)
        await publish_states(nc.jetstream(), PREFIX, [gone])
        await browser.wait_for(row("db", ".dataset.state") + " === undefined", 15, "db to leave the page")
        assert await browser.evaluate("document.querySelector('.count.healthy').dataset.count") == "0"

        # No polling: one read of every timeline, one of the clicked target's history; every
        # change came over the event stream (an open EventSource is not listed until it ends).
        urls = await browser.evaluate("performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)")
        assert sorted(u for u in urls if u.startswith("/api/")) == ["/api/history", "/api/timelines"]
        assert await dash.signal(signal.SIGINT) == 0
    finally:
        await browser.close()
        await dash.stop()


#: The fleet of the scale test: (state, how many), problems first as the page lists them.
FLEET_PROBLEMS: list[tuple[State, int]] = [("unavailable", 5), ("recovering", 3), ("degraded", 10), ("unknown", 2)]
FLEET_SIZE = 1000


def fleet_events() -> list[StateChanged]:
    """1,000 targets healthy since yesterday, three probes' evidence each; a few in trouble
    now, every 20th had a four-minute outage half an hour ago."""
    now = utcnow()
    states: list[State] = [s for s, n in FLEET_PROBLEMS for _ in range(n)]
    events: list[StateChanged] = []
    for i in range(FLEET_SIZE):
        name = f"t{i:04d}"
        features = ["search"] if i % 10 == 0 else ["cache"] if i % 3 == 0 else ["db"]
        # The problems are spread over the fleet, so "problems first" has to re-order the list.
        state: State = states[i // 50] if i % 50 == 7 and i // 50 < len(states) else "healthy"
        history: list[tuple[State, datetime, str]] = [("healthy", now - timedelta(hours=30, seconds=i), "3/3 passed")]
        if i % 20 == 0:
            down = now - timedelta(minutes=30)
            history += [
                ("unavailable", down, "3/3 failed: refused"),
                ("healthy", down + timedelta(minutes=4), "3/3 passed"),
            ]
        if state != "healthy":
            history.append((state, now - timedelta(minutes=2 + i % 40), f"3/3 probes: {state}"))
        previous: State = "unknown"
        for seq, (to, at, reason) in enumerate(history, start=1):
            evidence = {
                f"probe-{p}": Evidence(
                    outcome="pass" if to == "healthy" else "fail",
                    error_kind=None if to == "healthy" else "timeout",
                    at=at,
                )
                for p in "abc"
            }
            events.append(
                state_changed(
                    name, seq, to, at=at, previous=previous, features=features, evidence=evidence, reason=reason
                )
            )
            previous = to
    return events


@pytest.mark.slow
async def test_page_scales_to_a_fleet(nats_server: EmbeddedNats, nc: Client, tmp_path: Path) -> None:
    """1,000 targets: problems first, counts, filters, the table view, timelines; a flip shows live.

    The figures (time until the page is usable, until a flip shows) are printed and kept in
    docs/operations.md; they are measured here, not asserted against a tight bound.
    """
    find_chromium()
    await publish_states(nc.jetstream(), PREFIX, fleet_events())
    dash, browser = await open_dashboard(nats_server.url, tmp_path)
    try:
        await browser.wait_for(
            "document.body?.dataset.ready === 'true' && document.querySelectorAll('#rows .target').length === 1000",
            60,
            "1,000 targets listed",
        )
        usable_ms = await browser.evaluate("performance.getEntriesByName('healthbus-ready')[0].startTime")
        await browser.wait_for("document.getElementById('targets').dataset.timelines === 'loaded'", 60, "the timelines")
        timelines_ms = await browser.evaluate("performance.getEntriesByName('healthbus-timelines')[0].startTime")
        assert await browser.evaluate("document.getElementById('targets').dataset.view") == "table"

        # Counts by state, and problems first: unavailable, recovering, degraded, unknown, then healthy.
        counts = await browser.evaluate(
            "Object.fromEntries([...document.querySelectorAll('.count')].map(b => [b.dataset.state, +b.dataset.count]))"
        )
        problems = dict(FLEET_PROBLEMS)
        assert counts == {**problems, "healthy": FLEET_SIZE - sum(problems.values())}
        listed = await browser.evaluate("[...document.querySelectorAll('#rows .target')].map(e => e.dataset.state)")
        expected = [s for s, n in FLEET_PROBLEMS for _ in range(n)]
        assert listed[: len(expected)] == expected
        assert set(listed[len(expected) :]) == {"healthy"}
        # Every 20th target's outage half an hour ago is on its hour and day timelines.
        assert await browser.evaluate("document.querySelectorAll('#rows .tl-hour .seg.unavailable').length") >= 50
        assert await browser.evaluate("document.querySelectorAll('#rows .tl-day .seg.unavailable').length") >= 50

        # Filters: by name, by feature, by state (from the counts), and back.
        async def shown_after(js: str) -> int:
            await browser.evaluate(js)
            await browser.evaluate("new Promise(r => requestAnimationFrame(() => r(true)))")
            return int(await browser.evaluate("document.querySelectorAll('#rows .target').length"))

        set_name = "(v => { const i = $('f-name'); i.value = v; i.dispatchEvent(new Event('input')); })"
        set_feature = "(v => { const s = $('f-feature'); s.value = v; s.dispatchEvent(new Event('change')); })"
        assert await shown_after(f"{set_name}('t099')") == 10
        assert await shown_after(f"{set_name}('')") == FLEET_SIZE
        assert await shown_after(f"{set_feature}('search')") == 100
        assert await shown_after(f"{set_feature}('')") == FLEET_SIZE
        assert await shown_after("document.querySelector('.count.unavailable').click()") == 5
        assert "state=unavailable" in await browser.evaluate("location.hash")  # a link keeps the filter
        assert await shown_after("document.querySelector('.count.unavailable').click()") == FLEET_SIZE

        # A flip of one healthy target among 1,000: when does its row show it?
        await browser.evaluate(
            """(() => {
              const el = document.querySelector('#rows [data-target="t0501"]');
              window.flipShownAt = 0;
              new MutationObserver(() => {
                if (el.dataset.state === 'unavailable' && !window.flipShownAt) window.flipShownAt = Date.now();
              }).observe(el, {attributes: true, attributeFilter: ['data-state']});
              return true;
            })()"""
        )
        flip = state_changed(
            "t0501", 2, "unavailable", features=["cache"], previous="healthy", reason="3/3 failed: refused"
        )
        published_ms = time.time() * 1000
        await publish_states(nc.jetstream(), PREFIX, [flip], ensure=False)
        shown_at = await browser.wait_for("window.flipShownAt", 30, "the flip of t0501 shown")
        flip_ms = shown_at - published_ms
        assert await browser.evaluate("document.querySelector('.count.unavailable').dataset.count") == "6"
        first = await browser.evaluate(
            "[...document.querySelectorAll('#rows .target')].slice(0, 6).map(e => e.dataset.target)"
        )
        assert "t0501" in first

        # The detail of a target that had an outage, for the screenshot in docs/.
        await browser.evaluate(row("t0020", ".click()"))
        await browser.wait_for(detail(".dataset.transitions === 'loaded'"), 10, "t0020's transitions")
        # The stream reads "since" by when a message was stored: all this back-dated history is recent.
        assert await browser.evaluate(detail(".querySelectorAll('.transitions > li').length")) == 3
        await screenshot(browser, "dashboard.png")
        print(
            f"\ndashboard, {FLEET_SIZE} targets: usable {usable_ms:.0f} ms after loading,"
            f" timelines {timelines_ms:.0f} ms; a flip shown {flip_ms:.0f} ms after it was published"
        )
    finally:
        await browser.close()
        await dash.stop()


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
        await browser.wait_for(row("redis", ".dataset.state") + " === 'healthy'", 30, "the redis card, healthy")
        redis_server.stop()
        await browser.wait_for(row("redis", ".dataset.state") + " === 'unavailable'", 30, "redis shown unavailable")
        assert (await browser.evaluate(row("redis", ".querySelector('.breaker').textContent"))).startswith("open")
        await browser.evaluate(row("redis", ".click()"))
        await browser.wait_for(detail(".querySelector('.evidence td.outcome-fail') !== null"), 10, "redis's evidence")
        redis_server.start()
        await browser.wait_for(row("redis", ".dataset.state") + " === 'healthy'", 30, "redis shown healthy again")
    except BaseException:
        print(stack.logs(), dash.log())
        raise
    finally:
        await browser.close()
        await dash.stop()
        await stack.stop()
