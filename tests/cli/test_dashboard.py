"""The dashboard's HTTP side against a real nats-server: page, API, live SSE and ops endpoints."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import msgspec
import pytest
from nats.aio.client import Client

from healthbus.bus import connect
from healthbus.bus.embedded import EmbeddedNats
from healthbus.cli._dashboard import RunningDashboard, build_timelines, start_dashboard
from healthbus.protocol import (
    GroupChanged,
    GroupMember,
    GroupState,
    StateChanged,
    Subjects,
    decode_group_changed,
    decode_state_changed,
    encode,
    load_config_text,
    utcnow,
)
from tests.cli._support import event, story
from tests.helpers import publish_states, wait_event, wait_until

pytestmark = pytest.mark.nats

PREFIX = "dash"
CONFIG = """
[[targets]]
name = "cache"
kind = "redis"
url = "redis://:hunter2-secret@127.0.0.1:6379/0"
features = ["cache"]

[[targets]]
name = "search"
kind = "http"
url = "http://127.0.0.1:9200/"
"""


@pytest.fixture
async def dash(nc: Client) -> AsyncIterator[RunningDashboard]:
    """A dashboard on a free port following prefix `dash`, with two configured targets."""
    running = await start_dashboard(nc, PREFIX, "127.0.0.1:0", load_config_text(CONFIG))
    yield running
    await running.close()


async def _read_sse(resp: aiohttp.ClientResponse) -> tuple[str, bytes]:
    event, data = "", b""
    while True:
        line = (await resp.content.readline()).rstrip(b"\n")
        if line.startswith(b"event: "):
            event = line[7:].decode()
        elif line.startswith(b"data: "):
            data = line[6:]
        elif line == b"" and event:
            return event, data


async def test_page_and_assets_are_self_contained(dash: RunningDashboard) -> None:
    """The page and its assets come from this server: no CDN URL anywhere, a strict CSP."""
    async with aiohttp.ClientSession() as http:
        async with http.get(dash.url) as resp:
            assert resp.status == 200
            html = await resp.text()
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        assert 'src="/static/app.js"' in html
        for name in ("app.js", "style.css"):
            async with http.get(f"{dash.server.url}/static/{name}") as resp:
                assert resp.status == 200
                body = await resp.text()
            assert not re.search(r"https?://", body), name
            assert "EventSource" in body or name == "style.css"
        assert not re.search(r"https?://", html)
        async with http.get(f"{dash.server.url}/static/../_dashboard.py") as resp:
            assert resp.status == 404


async def test_states_history_and_live_events(dash: RunningDashboard, nc: Client) -> None:
    """/api/states and /api/history read the stream; /api/events sends a snapshot then each change live."""
    events = story()
    await publish_states(nc.jetstream(), PREFIX, events)
    await wait_until(  # no event for one state (pages get them over HTTP): polled, in process
        lambda: dash.dashboard.states.get("cache") == events[-1],
        10,
        "the dashboard to catch up",
        seen=lambda: dash.dashboard.states.get("cache"),
    )
    await wait_event(dash.dashboard.caught_up, 10, "readiness (caught up with the stream)")
    assert dash.dashboard.ready()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{dash.server.url}/api/states") as resp:
            states = [decode_state_changed(json.dumps(e).encode()) for e in await resp.json()]
        assert {e.target: e.seq for e in states} == {"cache": 4, "db": 1}
        async with http.get(f"{dash.server.url}/api/history", params={"target": "cache", "since": "-1h"}) as resp:
            assert [e["seq"] for e in await resp.json()] == [1, 2, 3, 4]
        async with http.get(f"{dash.server.url}/api/history", params={"target": "Not.Valid"}) as resp:
            assert resp.status == 400
        async with http.get(f"{dash.server.url}/api/history", params={"target": "cache", "since": "x"}) as resp:
            assert resp.status == 400
        async with http.get(f"{dash.server.url}/api/events") as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            kind, data = await _read_sse(resp)
            assert kind == "snapshot"
            snap = json.loads(data)
            assert [t["seq"] for t in snap["targets"]] == [4, 1]
            assert snap["configured"] == [
                {"name": "cache", "kind": "redis", "features": ["cache"]},
                {"name": "search", "kind": "http", "features": []},
            ]
            assert "hunter2" not in data.decode()
            new = event("cache", 5, "unavailable", events[-1].at + timedelta(seconds=1), previous="healthy")
            await publish_states(nc.jetstream(), PREFIX, [new])
            kind, data = await asyncio.wait_for(_read_sse(resp), 10)
            assert kind == "state"
            assert decode_state_changed(data) == new


def _group(seq: int, state: GroupState, available: int) -> GroupChanged:
    return GroupChanged(
        group="pg",
        seq=seq,
        at=utcnow(),
        previous="unknown",
        state=state,
        policy="round-robin",
        members=[
            GroupMember(target="cache", state="healthy", available=available > 0, latency_ms=1.5),
            GroupMember(target="db", state="unavailable", available=False),
        ],
        available=available,
    )


async def test_groups_in_the_snapshot_the_api_and_live(dash: RunningDashboard, nc: Client) -> None:
    """GroupChanged: loaded from the stream, in /api/groups and the SSE snapshot, then a ``group`` event per change."""
    await publish_states(nc.jetstream(), PREFIX, story())
    first = _group(1, "healthy", 1)
    js = nc.jetstream()
    await js.publish(Subjects(PREFIX).group("pg"), encode(first), headers={"Nats-Msg-Id": first.msg_id})
    await wait_until(
        lambda: dash.dashboard.groups.get("pg") == first,
        10,
        "the dashboard to load the group",
        seen=lambda: dash.dashboard.groups.get("pg"),
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{dash.server.url}/api/groups") as resp:
            assert [decode_group_changed(json.dumps(g).encode()) for g in await resp.json()] == [first]
        async with http.get(f"{dash.server.url}/api/events") as resp:
            kind, data = await _read_sse(resp)
            assert kind == "snapshot"
            assert [g["seq"] for g in json.loads(data)["groups"]] == [1]
            second = _group(2, "unavailable", 0)
            await js.publish(Subjects(PREFIX).group("pg"), encode(second), headers={"Nats-Msg-Id": second.msg_id})
            kind, data = await asyncio.wait_for(_read_sse(resp), 10)
            assert kind == "group"
            assert decode_group_changed(data) == second


async def test_timelines_of_every_target_in_one_read(dash: RunningDashboard, nc: Client) -> None:
    """/api/timelines: each target's changes [seq, at ms, state] and its state before the window."""
    events = story()
    await publish_states(nc.jetstream(), PREFIX, events)
    await wait_until(  # no event for one state (pages get them over HTTP): polled, in process
        lambda: dash.dashboard.states.get("cache") == events[-1],
        10,
        "the dashboard to catch up",
        seen=lambda: dash.dashboard.states.get("cache"),
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{dash.server.url}/api/timelines") as resp:
            assert resp.status == 200
            body = await resp.json()
        assert set(body) == {"since", "server_time", "targets"}
        cache = [e for e in events if e.target == "cache"]
        assert body["targets"]["cache"] == {
            "before": "unknown",
            "changes": [[e.seq, int(e.at.timestamp() * 1000), e.state] for e in cache],
        }
        assert body["targets"]["db"]["changes"][0][2] == "healthy"
        # A window in the future holds nothing.
        async with http.get(f"{dash.server.url}/api/timelines", params={"since": "2100-01-01T00:00:00Z"}) as resp:
            assert (await resp.json())["targets"] == {}
        async with http.get(f"{dash.server.url}/api/timelines", params={"since": "yesterday"}) as resp:
            assert resp.status == 400
            assert (await resp.text()).startswith("since: ")


def test_timeline_keeps_the_latest_changes_and_the_state_before_them() -> None:
    """A long history is cut to its latest changes; ``before`` is the state the first kept one left."""
    t0 = utcnow()
    flaps: list[StateChanged] = [
        event(
            "cache",
            n,
            "healthy" if n % 2 else "unavailable",
            t0 + timedelta(seconds=n),
            previous="unavailable" if n % 2 else "healthy",
        )
        for n in range(1, 11)
    ]
    timeline = build_timelines(list(reversed(flaps)), limit=3)["cache"]
    assert [c.seq for c in timeline.changes] == [8, 9, 10]
    assert timeline.before == "healthy"  # what seq 7 left it in


async def test_retired_target_leaves_the_page(dash: RunningDashboard, nc: Client) -> None:
    """A retired event removes the target from the states (and the next snapshot) and is sent live once."""
    events = story()
    await publish_states(nc.jetstream(), PREFIX, events)
    await wait_until(  # no event for one state (pages get them over HTTP): polled, in process
        lambda: dash.dashboard.states.get("cache") == events[-1],
        10,
        "the dashboard to catch up",
        seen=lambda: dash.dashboard.states.get("cache"),
    )
    async with aiohttp.ClientSession() as http, http.get(f"{dash.server.url}/api/events") as resp:
        kind, _ = await _read_sse(resp)
        assert kind == "snapshot"
        retired = msgspec.structs.replace(
            event("cache", 5, "unknown", events[-1].at + timedelta(seconds=1), previous="healthy"), retired=True
        )
        await publish_states(nc.jetstream(), PREFIX, [retired])
        kind, data = await asyncio.wait_for(_read_sse(resp), 10)
        assert kind == "state"
        assert decode_state_changed(data).retired
    assert "cache" not in dash.dashboard.states
    snapshot = dash.dashboard.snapshot()
    assert [e.target for e in snapshot.targets] == ["db"]
    assert "cache" not in [c.name for c in snapshot.configured]


async def test_ops_endpoints(dash: RunningDashboard, nc: Client) -> None:
    """The dashboard serves /healthz, /readyz (ready once caught up) and Prometheus /metrics."""
    await publish_states(nc.jetstream(), PREFIX, story()[:1])
    await wait_event(dash.dashboard.caught_up, 10, "readiness (caught up with the stream)")
    assert dash.dashboard.ready()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{dash.server.url}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"{dash.server.url}/readyz") as resp:
            assert resp.status == 200
        async with http.get(f"{dash.server.url}/metrics") as resp:
            text = await resp.text()
    assert "healthbus_dashboard_events_total 1.0" in text
    assert "healthbus_dashboard_pages 0.0" in text


async def test_waits_for_the_stream_to_appear(nc: Client) -> None:
    """Started before any coordinator, the dashboard is not ready, then catches up once the stream exists."""
    running = await start_dashboard(nc, "later", "127.0.0.1:0")
    try:
        assert not running.dashboard.ready()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{running.server.url}/readyz") as resp:
                assert resp.status == 503
            async with http.get(f"{running.server.url}/api/history", params={"target": "cache"}) as resp:
                assert await resp.json() == []
        first: StateChanged = story()[0]
        await publish_states(nc.jetstream(), "later", [first])
        # Ready once caught up with the states and then the groups (one more round trip after
        # the states arrived): wait for that, not for the state alone.
        await wait_event(running.dashboard.caught_up, 15, "the dashboard to find the stream and catch up")
        assert running.dashboard.states.get("cache") == first
        assert running.dashboard.ready()
    finally:
        await running.close()


async def test_leaders_in_the_snapshot_the_api_and_live(
    nats_server: EmbeddedNats, nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Who leads which partition, read as ``healthbus status`` reads it (the lease bucket):
    in /api/leaders and the SSE snapshot, then a ``leaders`` event when a leader changes."""
    from healthbus.cli import _dashboard
    from healthbus.coordinator import PartitionedCoordinator
    from tests.chaos._support import config_text

    monkeypatch.setattr(_dashboard, "_LEADERS_EVERY_S", 0.1)  # re-read period of the open page
    text = config_text([f"t{i}" for i in range(6)], prefix=PREFIX, lease="1s")
    config = load_config_text(text.replace("[coordinator]\n", "[coordinator]\npartitions = 3\n"))
    other = await connect(url=nats_server.url)
    a = PartitionedCoordinator(config, nc, holder="coord-a", only=[0, 2])
    b = PartitionedCoordinator(config, other, holder="coord-b")
    running: RunningDashboard | None = None
    try:
        await a.start()
        await b.start()
        running = await start_dashboard(nc, PREFIX, "127.0.0.1:0", config)
        terms = {str(s.partition): s.lease.term for s in [*a.services, *b.services] if s.active and s.lease}
        want = [
            {"partition": "0", "leader": "coord-a", "revision": terms["0"]},
            {"partition": "1", "leader": "coord-b", "revision": terms["1"]},
            {"partition": "2", "leader": "coord-a", "revision": terms["2"]},
        ]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{running.server.url}/api/leaders") as resp:
                assert await resp.json() == want
            async with http.get(f"{running.server.url}/api/events") as resp:
                kind, data = await _read_sse(resp)
                assert kind == "snapshot"
                assert json.loads(data)["leaders"] == want
                await a.stop()  # releases partitions 0 and 2: b takes them over
                last: list[dict[str, Any]] = []
                async with asyncio.timeout(20):
                    while [(row["partition"], row["leader"]) for row in last] != [
                        ("0", "coord-b"),
                        ("1", "coord-b"),
                        ("2", "coord-b"),
                    ]:
                        kind, data = await _read_sse(resp)
                        if kind == "leaders":
                            last = json.loads(data)
        # The lease key's revision grows with every renewal and every takeover.
        assert all(row["revision"] > terms[row["partition"]] for row in last)
    finally:
        if running is not None:
            await running.close()
        await a.stop()
        await b.stop()
        await other.close()
