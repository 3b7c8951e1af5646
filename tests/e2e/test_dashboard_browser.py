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
from healthbus.protocol import (
    Evidence,
    GroupChanged,
    GroupMember,
    Ramp,
    State,
    StateChanged,
    Subjects,
    encode,
    utcnow,
)
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

        # Re-admitted with a (long) ramp in progress: the row and the panel say how far along.
        started = utcnow()
        back = msgspec.structs.replace(
            event("cache", 6, "healthy", started, previous="unavailable", features=["cache"]),
            ramp=Ramp(started_at=started, duration_s=6000.0, from_share=0.25, readmission=2),
        )
        await publish_states(nc.jetstream(), PREFIX, [back])
        await browser.wait_for(row("cache", ".dataset.state") + " === 'healthy'", 15, "the re-admission")
        breaker = await browser.evaluate(row("cache", ".querySelector('.breaker').textContent"))
        assert breaker.startswith("closed · ramp 25% admitted, re-admission 2"), breaker
        assert "ramp 25% admitted" in await browser.evaluate(detail(".querySelector('.breaker').textContent"))

        # A target removed from the configuration (retired) leaves the page.
        gone = msgspec.structs.replace(event("db", 2, "unknown", utcnow(), previous="healthy"), retired=True)
        await publish_states(nc.jetstream(), PREFIX, [gone])
        await browser.wait_for(row("db", ".dataset.state") + " === undefined", 15, "db to leave the page")
        assert await browser.evaluate("document.querySelector('.count.healthy').dataset.count") == "1"  # cache

        # No polling: one read of every timeline, one of the clicked target's history; every
        # change came over the event stream (an open EventSource is not listed until it ends).
        urls = await browser.evaluate("performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)")
        assert sorted(u for u in urls if u.startswith("/api/")) == ["/api/history", "/api/timelines"]
        assert await dash.signal(signal.SIGINT) == 0
    finally:
        await browser.close()
        await dash.stop()


async def test_groups_panel_shows_members_in_and_out_live(
    nats_server: EmbeddedNats, nc: Client, tmp_path: Path
) -> None:
    """A group shows its state, who is in and out with latencies; a change arrives live (a ``group`` event)."""
    find_chromium()
    await publish_states(nc.jetstream(), PREFIX, story())

    def group(seq: int, available: bool) -> GroupChanged:
        return GroupChanged(
            group="pg",
            seq=seq,
            at=utcnow(),
            previous="unknown",
            state="healthy" if available else "degraded",
            policy="round-robin",
            members=[
                GroupMember(target="cache", state="healthy", available=True, latency_ms=1.25),
                GroupMember(target="db", state="healthy" if available else "unavailable", available=available),
            ],
            available=2 if available else 1,
            min_healthy=2,
            primary="cache",
        )

    js = nc.jetstream()
    first = group(1, True)
    await js.publish(Subjects(PREFIX).group("pg"), encode(first), headers={"Nats-Msg-Id": first.msg_id})
    dash, browser = await open_dashboard(nats_server.url, tmp_path)
    try:
        panel = "document.querySelector('#groups .group')"
        await browser.wait_for(f"{panel}?.dataset.state === 'healthy'", 20, "the group, healthy")
        assert await browser.evaluate(f"{panel}.querySelector('.group-head').textContent") == (
            "pg · healthy · 2/2 in · round-robin"
        )
        members = f"[...{panel}.querySelectorAll('.member')].map(m => m.textContent)"
        assert await browser.evaluate(members) == ["+cache 1.3 ms (primary)", "+db"]
        second = group(2, False)
        await js.publish(Subjects(PREFIX).group("pg"), encode(second), headers={"Nats-Msg-Id": second.msg_id})
        await browser.wait_for(f"{panel}.dataset.state === 'degraded'", 15, "the group, degraded")
        assert await browser.evaluate(f"{panel}.querySelector('.member[data-in=\"no\"]').textContent") == "−db"
    finally:
        await browser.close()
        await dash.stop()


#: Injected before the page's own script: /api/timelines waits until the test calls
#: window.releaseTimelines(), so the test sees the page before the timelines arrive.
HOLD_TIMELINES = """(() => {
  const real = window.fetch.bind(window);
  let release;
  const released = new Promise((r) => { release = r; });
  window.releaseTimelines = () => { release(); return true; };
  window.fetch = async (url, ...rest) => {
    if (String(url).startsWith('/api/timelines')) await released;
    return real(url, ...rest);
  };
})();"""


async def test_since_is_the_availability_change_not_the_last_trial(
    nats_server: EmbeddedNats, nc: Client, tmp_path: Path
) -> None:
    """A target down for ten minutes with a failed half-open trial 12 s ago shows "since 10m" and the
    trial apart; bars are drawn before /api/timelines answers; the cards view has no header card;
    editing only the URL's # applies the filter and the view."""
    find_chromium()
    now = utcnow()
    web: list[StateChanged] = [
        event("web", 1, "healthy", now - timedelta(hours=2), features=["homepage"]),
        event("web", 2, "unavailable", now - timedelta(minutes=10), previous="healthy", breaker="open"),
        msgspec.structs.replace(
            event("web", 3, "recovering", now - timedelta(seconds=40), previous="unavailable", breaker="half_open"),
            attempt=1,
        ),
        msgspec.structs.replace(
            event(
                "web",
                4,
                "unavailable",
                now - timedelta(seconds=12),
                previous="recovering",
                breaker="open",
                retry_at=now + timedelta(minutes=2),
            ),
            attempt=1,
        ),
        event("db", 1, "healthy", now - timedelta(hours=1)),
    ]
    await publish_states(nc.jetstream(), PREFIX, web)
    dash, browser = await open_dashboard(nats_server.url, tmp_path)
    try:
        await browser.call("Page.enable")
        await browser.call("Page.addScriptToEvaluateOnNewDocument", {"source": HOLD_TIMELINES})
        await browser.call("Page.reload")
        await browser.wait_for("window.releaseTimelines && document.body?.dataset.ready === 'true'", 20, "the page")
        await browser.wait_for(row("web", ".dataset.state") + " === 'unavailable'", 20, "web, unavailable")
        # Before the timelines: the bars show what the first read said, not grey placeholders.
        assert await browser.evaluate("document.getElementById('targets').dataset.timelines") is None
        for bar in ("tl-hour", "tl-day"):
            assert await browser.evaluate(row("web", f".querySelector('.{bar} .seg.unavailable') !== null")), bar
            assert await browser.evaluate(row("db", f".querySelector('.{bar} .seg.healthy') !== null")), bar
        assert await browser.evaluate("window.releaseTimelines()")
        await browser.wait_for("document.getElementById('targets').dataset.timelines === 'loaded'", 20, "the timelines")

        since = await browser.wait_for(row("web", ".querySelector('.since').textContent"), 10, "web's since")
        assert since.startswith("10m"), since  # not "12s": the trial did not change the availability
        breaker = await browser.evaluate(row("web", ".querySelector('.breaker').textContent"))
        assert breaker.startswith("open #1 · tried "), breaker
        assert " ago · retry in " in breaker, breaker
        assert (await browser.evaluate(row("db", ".querySelector('.since').textContent"))).startswith("1h")
        await browser.evaluate(row("web", ".click()"))
        await browser.wait_for(detail(".dataset.transitions === 'loaded'"), 10, "web's transitions")
        assert "(10m" in await browser.evaluate(detail(".querySelector('.since').textContent"))
        changed = await browser.evaluate(detail(".querySelector('.changed').textContent"))
        assert changed.endswith("s ago)"), changed
        assert "(10m" not in changed, changed

        # Two targets: cards, and the table's header row is not drawn as a card.
        assert await browser.evaluate("document.getElementById('targets').dataset.view") == "cards"
        assert await browser.evaluate("getComputedStyle(document.querySelector('#targets .target.head')).display") == (
            "none"
        )
        await screenshot(browser, "dashboard-cards.png")

        # Only the URL's # changes on the open page: the filter and the view follow.
        listed = "document.querySelectorAll('#rows .target').length"
        await browser.evaluate("location.hash = 'state=unavailable&view=table'")
        await browser.wait_for(f"{listed} === 1", 10, "only web listed after the hash changed")
        assert await browser.evaluate("document.getElementById('targets').dataset.view") == "table"
        assert await browser.evaluate("document.getElementById('f-state').value") == "unavailable"
        await browser.evaluate("location.hash = 'view=cards'")
        await browser.wait_for(f"{listed} === 2", 10, "both targets listed again")
        assert await browser.evaluate("document.getElementById('targets').dataset.view") == "cards"
    finally:
        await browser.close()
        await dash.stop()


#: The fleet of the scale test: (state, how many), problems first as the page lists them.
FLEET_PROBLEMS: list[tuple[State, int]] = [("unavailable", 5), ("recovering", 3), ("degraded", 10), ("unknown", 2)]
FLEET_SIZE = 1000


def fleet_groups() -> list[GroupChanged]:
    """Two groups over fleet targets: a PostgreSQL primary with two replicas, one of them down
    (t0007 is unavailable in the fleet), and three Redis servers by latency."""
    now = utcnow()

    def member(target: str, state: State, latency_ms: float | None) -> GroupMember:
        return GroupMember(target=target, state=state, available=state == "healthy", latency_ms=latency_ms)

    return [
        GroupChanged(
            group="orders-db",
            seq=1,
            at=now,
            previous="unknown",
            state="degraded",
            policy="primary-first",
            members=[
                member("t0001", "healthy", 2.4),
                member("t0007", "unavailable", None),
                member("t0002", "healthy", 3.1),
            ],
            available=2,
            min_healthy=3,
            primary="t0001",
            reason="2/3 members in (min_healthy 3); out: t0007",
        ),
        GroupChanged(
            group="sessions",
            seq=1,
            at=now,
            previous="unknown",
            state="healthy",
            policy="least-latency",
            members=[
                member("t0003", "healthy", 0.8),
                member("t0004", "healthy", 0.9),
                member("t0005", "healthy", 1.7),
            ],
            available=3,
            min_healthy=2,
            reason="3/3 members in (min_healthy 2)",
        ),
    ]


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
    js = nc.jetstream()
    for grouped in fleet_groups():
        await js.publish(
            Subjects(PREFIX).group(grouped.group), encode(grouped), headers={"Nats-Msg-Id": grouped.msg_id}
        )
    dash, browser = await open_dashboard(nats_server.url, tmp_path)
    try:
        await browser.wait_for(
            "document.body?.dataset.ready === 'true' && document.querySelectorAll('#rows .target').length === 1000",
            60,
            "1,000 targets listed",
        )
        # The groups above the targets (and in the screenshot): state, who is in and out.
        await browser.wait_for("document.querySelectorAll('#groups .group').length === 2", 20, "both groups shown")
        heads = await browser.evaluate("[...document.querySelectorAll('#groups .group-head')].map(h => h.textContent)")
        assert sorted(heads) == [
            "orders-db · degraded · 2/3 in · primary-first",
            "sessions · healthy · 3/3 in · least-latency",
        ]
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


async def test_header_shows_who_leads_each_partition(nats_server: EmbeddedNats, nc: Client, tmp_path: Path) -> None:
    """The header names each partition's leader (the lease bucket, as `healthbus status`
    reads it) and follows a takeover without a reload."""
    find_chromium()
    from healthbus.bus import connect
    from healthbus.coordinator import PartitionedCoordinator
    from healthbus.protocol import load_config_text
    from tests.chaos._support import config_text

    text = config_text([f"t{i}" for i in range(6)], prefix=PREFIX, lease="1s")
    config = load_config_text(text.replace("[coordinator]\n", "[coordinator]\npartitions = 3\n"))
    other = await connect(url=nats_server.url)
    a = PartitionedCoordinator(config, nc, holder="coord-a", only=[0, 2])
    b = PartitionedCoordinator(config, other, holder="coord-b")
    await a.start()
    await b.start()
    dash, browser = await open_dashboard(nats_server.url, tmp_path)
    leaders = "[...document.querySelectorAll('#leaders .leader')].map(l => l.textContent).join(', ')"
    try:
        await browser.wait_for(f"{leaders} === 'p0 coord-a, p1 coord-b, p2 coord-a'", 20, "the leaders in the header")
        assert await browser.evaluate("document.getElementById('leaders').hidden") is False
        await a.stop()  # releases partitions 0 and 2: b takes them over
        await browser.wait_for(f"{leaders} === 'p0 coord-b, p1 coord-b, p2 coord-b'", 30, "the takeover in the header")
        await screenshot(browser, "dashboard-leaders.png")
    finally:
        await browser.close()
        await dash.stop()
        await a.stop()
        await b.stop()
        await other.close()
