"""``healthbus dashboard``: the web dashboard, live from the state stream.

One :class:`Dashboard` per process follows the stream once (current state of every
target, then every change) and fans each change out to every open page over
Server-Sent Events, so the browser never polls and NATS sees one consumer however many
pages are open. The page itself (``dashboard/``: HTML, JS, CSS, no build step, no CDN)
is served from the package, next to ``/metrics``, ``/healthz`` and ``/readyz``.

Routes: ``/`` the page; ``/static/<file>`` its assets; ``/api/groups`` every group's last
GroupChanged (JSON list; also in the SSE snapshot, and a ``group`` event per change);
``/api/leaders`` which coordinator leads which partition now (JSON list of
``{partition, leader, revision}``, read from the lease bucket as ``healthbus status``
does; also in the SSE snapshot, and a ``leaders`` event, the whole list, when it changes:
the dashboard re-reads it every few seconds while a page is open);
``/api/states`` every target's
current StateChanged (JSON list); ``/api/history?target=X[&since=T][&limit=N]`` the
target's audit log from the stream, oldest first; ``/api/timelines[?since=T]`` every
target's state changes since T (default the last day) in one compact read of the stream,
for the per-target timelines; ``/api/events`` the SSE stream: one
``snapshot`` event (``{"targets": [StateChanged...], "configured": [...], "server_time"}``)
then one ``state`` event (a StateChanged) per change.

Invariants: a page's snapshot and its live events come from the same in-memory map
under the event loop with no await in between, so a page never misses or repeats a
change; a page that cannot keep up is disconnected (its EventSource reconnects and gets
a fresh snapshot) instead of buffering without bound. Configured targets are shown by
name, kind and features only: URLs (which may carry credentials) never reach the page.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, Final

import msgspec
import nats.errors
import nats.js.errors
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry, Counter, Gauge

from healthbus.bus import DirectGetError, Follower, StateStream, connect
from healthbus.cli._common import EXIT_OK, bus_settings, load_args_config, stop_on_signals
from healthbus.cli._format import parse_when
from healthbus.cli._http import OpsServer, Route, check_bind, serve_ops
from healthbus.cli._query import PartitionLeader, read_leaders
from healthbus.protocol import Config, GroupChanged, StateChanged, TargetConfig, encode, is_valid_target, utcnow

__all__ = [
    "DEFAULT_BIND",
    "ConfiguredTarget",
    "Dashboard",
    "RunningDashboard",
    "Timeline",
    "Timelines",
    "build_timelines",
    "cmd_dashboard",
    "configured_targets",
    "start_dashboard",
]

log = logging.getLogger("healthbus.dashboard")

DEFAULT_BIND: Final = "127.0.0.1:8470"
_ASSETS: Final = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "index.html": "text/html",
}
#: Events buffered per page before it is disconnected as too slow.
_CLIENT_QUEUE: Final = 1000
_KEEPALIVE_S: Final = 15.0
_HISTORY_LIMIT: Final = 2000
#: Timelines cover the last day by default, and at most this many changes per target.
_TIMELINE_SINCE: Final = "-24h"
_TIMELINE_LIMIT: Final = 500
#: How often the leaders (the lease bucket) are re-read while a page is open.
_LEADERS_EVERY_S: Final = 5.0
_SECURITY_HEADERS: Final = {
    # Everything the page needs comes from this server: no CDN, no inline script.
    "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class ConfiguredTarget(msgspec.Struct, frozen=True):
    """What the page may know about a configured target (never its URL)."""

    name: str
    kind: str
    features: list[str]


def configured_targets(source: Config | Sequence[TargetConfig]) -> list[ConfiguredTarget]:
    """What the page may show of configured targets: name, kind, features (no URL)."""
    targets = source.targets if isinstance(source, Config) else source
    return [ConfiguredTarget(t.name, t.kind, list(t.features)) for t in targets]


class Snapshot(msgspec.Struct, frozen=True):
    """The first SSE event of a page: every current state and the configured targets."""

    targets: list[StateChanged]
    configured: list[ConfiguredTarget]
    server_time: str
    groups: list[GroupChanged] = []
    """Every group's last GroupChanged (``[[groups]]``; extension)."""
    leaders: list[PartitionLeader] = []
    """Who leads each partition (``"all"`` without partitions); empty without election (extension)."""


class TimelineChange(msgspec.Struct, frozen=True, array_like=True):
    """One state change on a timeline: ``[seq, at (ms since the epoch), state]``."""

    seq: int
    at_ms: int
    state: str


class Timeline(msgspec.Struct, frozen=True):
    """A target's changes in the window; ``before`` is its state when the window began."""

    before: str
    changes: list[TimelineChange]


class Timelines(msgspec.Struct, frozen=True):
    """``/api/timelines``: every target's timeline from ``since`` to ``server_time``."""

    since: str
    server_time: str
    targets: dict[str, Timeline]


def build_timelines(events: Sequence[StateChanged], *, limit: int = _TIMELINE_LIMIT) -> dict[str, Timeline]:
    """Per-target timelines from audit-log events (stream order), the latest ``limit`` changes each."""
    changes: dict[str, list[StateChanged]] = {}
    for event in events:
        changes.setdefault(event.target, []).append(event)
    timelines: dict[str, Timeline] = {}
    for name, evs in changes.items():
        evs.sort(key=lambda e: e.seq)
        kept = evs[-limit:]
        timelines[name] = Timeline(
            before=kept[0].previous,
            changes=[TimelineChange(e.seq, int(e.at.timestamp() * 1000), e.state) for e in kept],
        )
    return timelines


class _Page:
    """One connected browser: a bounded queue of SSE frames; None ends the stream."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(_CLIENT_QUEUE + 1)


def _sse(event: str, data: bytes) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


class Dashboard:
    """Current states from the stream, fanned out to every page; see the module docstring."""

    def __init__(self, stream: StateStream, *, targets: Sequence[TargetConfig] = ()) -> None:
        self.stream = stream
        self.states: dict[str, StateChanged] = {}
        self.groups: dict[str, GroupChanged] = {}
        self.leaders: list[PartitionLeader] = []
        self._leaders_task: asyncio.Task[None] | None = None
        self._group_sub: Any = None
        self.configured = configured_targets(targets)
        self.registry = CollectorRegistry()
        self._pages: set[_Page] = set()
        self._follower: Follower | None = None
        self._task: asyncio.Task[None] | None = None
        self.caught_up = asyncio.Event()
        self._events = Counter(
            "healthbus_dashboard_events", "StateChanged events received from the stream", registry=self.registry
        )
        self._pages_gauge = Gauge(
            "healthbus_dashboard_pages", "Pages connected to the live event stream", registry=self.registry
        )
        self._dropped_pages = Counter(
            "healthbus_dashboard_slow_pages_dropped",
            "Pages disconnected because they could not keep up",
            registry=self.registry,
        )

    # ---------------------------------------------------------------- stream side

    async def start(self) -> None:
        """Start following the stream (retrying in the background until it exists)."""
        self._task = asyncio.create_task(self._follow(), name="dashboard-follow")
        self._leaders_task = asyncio.create_task(self._watch_leaders(), name="dashboard-leaders")

    async def refresh_leaders(self) -> list[PartitionLeader]:
        """Re-read who leads each partition; pages get a ``leaders`` event when it changed."""
        leaders = await read_leaders(self.stream.nc, self.stream.stream)
        if leaders != self.leaders:
            self.leaders = leaders
            self._broadcast(_sse("leaders", encode_any(leaders)))
        return leaders

    async def _watch_leaders(self) -> None:
        # The lease bucket offers no cheap change feed to a reader (a watch is a consumer):
        # one read every few seconds per dashboard process, and only while a page is open.
        first = True
        while True:
            if self._pages or first:
                first = False
                try:
                    await self.refresh_leaders()
                except Exception as exc:  # the states are shown without the leaders
                    log.debug("cannot read the leaders of %s: %s", self.stream.stream, exc)
            await asyncio.sleep(_LEADERS_EVERY_S)  # re-read period (see above)

    async def _follow(self) -> None:
        delay = 0.5
        while True:
            try:
                self._follower = await self.stream.follow(self._on_event, start="last_per_subject")
            except Exception as exc:
                if isinstance(exc, DirectGetError) and exc.kind == "no_responders":
                    # No stream answers direct gets: it does not exist yet (or JetStream is off).
                    log.info(
                        "state stream %s does not exist yet; waiting for a coordinator (nats-server needs -js)",
                        self.stream.stream,
                    )
                else:
                    log.warning("cannot follow %s yet: %s", self.stream.stream, exc)
            else:
                await self._follower.caught_up.wait()
                await self._follow_groups()
                self.caught_up.set()
                return
            await asyncio.sleep(delay)  # retry back-off while the stream is missing
            delay = min(delay * 2, 5.0)

    async def _follow_groups(self) -> None:
        """Groups (``GroupChanged``): live over a plain subscription, then each group's last one."""
        stream = self.stream

        async def on_msg(msg: Msg) -> None:
            event = stream.decode_group(msg.subject, msg.data)
            if event is not None:
                self._on_group(event)

        try:
            self._group_sub = await stream.nc.subscribe(stream.subjects.group_all, cb=on_msg)
            for event in await stream.groups():
                self._on_group(event)
        except Exception as exc:  # groups are an extension: the states are shown without them
            log.warning("cannot read the groups of %s: %s", stream.stream, exc)

    def _on_group(self, event: GroupChanged) -> None:
        old = self.groups.get(event.group)
        if old is not None and old.seq >= event.seq:
            return
        self.groups[event.group] = event
        self._broadcast(_sse("group", encode(event)))

    def _on_event(self, event: StateChanged) -> None:
        old = self.states.get(event.target)
        if old is not None and old.seq >= event.seq:
            return  # already shown (e.g. replayed after a reconnect)
        if event.retired:
            # Removed from the configuration: pages drop it (a page that never saw it ignores it).
            self.states.pop(event.target, None)
            self.configured = [c for c in self.configured if c.name != event.target]
            if old is not None:
                self._events.inc()
                self._broadcast(_sse("state", encode(event)))
            return
        self.states[event.target] = event
        self._events.inc()
        self._broadcast(_sse("state", encode(event)))

    def _broadcast(self, frame: bytes | None) -> None:
        for page in list(self._pages):
            try:
                page.queue.put_nowait(frame)
            except asyncio.QueueFull:
                self._disconnect(page)

    def _disconnect(self, page: _Page) -> None:
        self._pages.discard(page)
        self._dropped_pages.inc()
        while not page.queue.empty():
            page.queue.get_nowait()
        page.queue.put_nowait(None)

    def ready(self) -> bool:
        """Ready when connected to NATS and caught up with the stream."""
        return self.caught_up.is_set() and self.stream.nc.is_connected

    async def close(self) -> None:
        """End every page's event stream and stop following."""
        for page in list(self._pages):
            self._pages.discard(page)
            with contextlib.suppress(asyncio.QueueFull):
                page.queue.put_nowait(None)
        for task in (self._task, self._leaders_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._follower is not None:
            await self._follower.stop()
        if self._group_sub is not None:
            with contextlib.suppress(Exception):
                await self._group_sub.unsubscribe()

    # ---------------------------------------------------------------- HTTP side

    def snapshot(self) -> Snapshot:
        """Every current state (by target name) and the configured targets."""
        return Snapshot(
            targets=[self.states[name] for name in sorted(self.states)],
            configured=self.configured,
            server_time=_iso(utcnow()),
            groups=[self.groups[name] for name in sorted(self.groups)],
            leaders=self.leaders,
        )

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return await self._asset_response("index.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        return await self._asset_response(request.match_info["name"])

    async def _asset_response(self, name: str) -> web.StreamResponse:
        content_type = _ASSETS.get(name)
        if content_type is None:
            raise web.HTTPNotFound()
        body = resources.files("healthbus.cli").joinpath("dashboard", name).read_bytes()
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=_SECURITY_HEADERS)

    async def _api_states(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=encode_list(self.snapshot().targets), content_type="application/json")

    async def _api_groups(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=encode_any(self.snapshot().groups), content_type="application/json")

    async def _api_leaders(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=encode_any(await self.refresh_leaders()), content_type="application/json")

    async def _api_history(self, request: web.Request) -> web.StreamResponse:
        target = request.query.get("target", "")
        if not is_valid_target(target):
            raise web.HTTPBadRequest(text=f"target: expected a target name, got {target!r}\n")
        since = _query_time(request, "since", utcnow())
        try:
            limit = max(1, min(int(request.query.get("limit", _HISTORY_LIMIT)), _HISTORY_LIMIT))
        except ValueError:
            raise web.HTTPBadRequest(text="limit: expected a number\n") from None
        events = await self._read_history(target, since)
        return web.Response(body=encode_list(events[-limit:]), content_type="application/json")

    async def _read_history(self, target: str | None, since: datetime | None) -> list[StateChanged]:
        events: list[StateChanged] = []
        try:
            async for event in self.stream.history(target=target, since=since):
                events.append(event)
        except DirectGetError as exc:
            if exc.kind == "no_responders":  # no stream yet: no history
                return []
            raise web.HTTPServiceUnavailable(text=f"cannot read {self.stream.stream}: {exc}\n") from None
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise web.HTTPServiceUnavailable(text=f"cannot read {self.stream.stream}: {exc}\n") from None
        return events

    async def _api_timelines(self, request: web.Request) -> web.StreamResponse:
        now = utcnow()
        since = _query_time(request, "since", now) or parse_when(_TIMELINE_SINCE, now)
        events = await self._read_history(None, since)
        body = Timelines(
            since=_iso(since),
            server_time=_iso(now),
            targets=build_timelines(events),
        )
        return web.Response(body=encode_any(body), content_type="application/json")

    async def _api_events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        page = _Page()
        # Snapshot and registration with no await in between: nothing missed, nothing twice.
        first = b"retry: 1000\n" + _sse("snapshot", encode(self.snapshot()))
        self._pages.add(page)
        self._pages_gauge.inc()
        try:
            await response.write(first)
            while True:
                try:
                    frame = await asyncio.wait_for(page.queue.get(), _KEEPALIVE_S)
                except TimeoutError:
                    frame = b": keep-alive\n\n"  # keeps proxies from closing an idle stream
                if frame is None:
                    break
                await response.write(frame)
        except (ConnectionResetError, ConnectionError):
            pass  # the page went away
        finally:
            self._pages.discard(page)
            self._pages_gauge.dec()
        return response

    def routes(self) -> list[Route]:
        """The dashboard's routes, for :func:`healthbus.cli._http.serve_ops`."""
        return [
            ("GET", "/", self._page),
            ("GET", "/static/{name}", self._static),
            ("GET", "/api/states", self._api_states),
            ("GET", "/api/groups", self._api_groups),
            ("GET", "/api/leaders", self._api_leaders),
            ("GET", "/api/history", self._api_history),
            ("GET", "/api/timelines", self._api_timelines),
            ("GET", "/api/events", self._api_events),
        ]


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _query_time(request: web.Request, name: str, now: datetime) -> datetime | None:
    """A time query parameter (RFC 3339 or relative like ``-1h``); 400 naming it when malformed."""
    if name not in request.query:
        return None
    try:
        return parse_when(request.query[name], now)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{name}: {exc}\n") from None


def encode_list(events: Sequence[StateChanged]) -> bytes:
    """A JSON array of StateChanged, as on the wire."""
    return encode_any(list(events))


_encoder = msgspec.json.Encoder()


def encode_any(value: object) -> bytes:
    """msgspec JSON of any value made of wire structs."""
    return _encoder.encode(value)


@dataclass
class RunningDashboard:
    """A dashboard being served; ``await close()`` stops the page streams, the server and the reader."""

    dashboard: Dashboard
    server: OpsServer

    @property
    def url(self) -> str:
        """The page's address."""
        return self.server.url + "/"

    async def close(self) -> None:
        """Stop serving (pages first, so no handler holds the server open)."""
        await self.dashboard.close()
        await self.server.close()


async def start_dashboard(nc: Client, prefix: str, bind: str, config: Config | None = None) -> RunningDashboard:
    """Follow ``prefix``'s state stream on ``nc`` and serve the dashboard on ``bind``."""
    dashboard = Dashboard(StateStream(nc, prefix), targets=(config.targets if config else ()))
    await dashboard.start()
    try:
        server = await serve_ops(bind, dashboard.registry, dashboard.ready, dashboard.routes())
    except BaseException:
        await dashboard.close()
        raise
    return RunningDashboard(dashboard, server)


async def cmd_dashboard(args: argparse.Namespace) -> int:
    """``healthbus dashboard [--http HOST:PORT]``: serve the dashboard until Ctrl-C."""
    config = load_args_config(args)
    settings = bus_settings(args, config)
    bind = check_bind(args.http) or DEFAULT_BIND
    nc = await connect(settings, name="healthbus-dashboard")
    try:
        try:
            running = await start_dashboard(nc, settings.prefix, bind, config)
        except (OSError, ValueError) as exc:
            print(f"healthbus dashboard: cannot serve on {bind}: {exc}", file=sys.stderr)
            return 1
        print(f"healthbus dashboard: {running.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        try:
            with stop_on_signals() as stop:
                await stop.wait()
        finally:
            await running.close()
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
    return EXIT_OK
