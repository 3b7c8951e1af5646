"""The built-in demo configuration of ``healthbus dev`` (used when no ``--config`` is given).

It must work on any machine, so it watches things that exist everywhere (an SQLite file
through SQLAlchemy, the embedded NATS server itself, the dashboard's own /healthz), a
milvus-lite file when that optional extra is installed, and the conventional local
Redis and PostgreSQL on their default ports. When those two are not running they are
shown ``unavailable``: a demonstration of degraded mode, not an error.

Short intervals so that a flip is visible within seconds of stopping a server.

``healthbus dev --demo N`` adds N synthetic targets (:func:`demo_fleet_config_text`): HTTP
checks of a small server in the ``dev`` process (:class:`DemoFleet`) whose answer for each
target follows a fixed schedule (:func:`demo_fleet_answer`, pure): most are always up, some
always down, some down a few minutes in every ten, some flapping, some slow (degraded) —
a fleet to try the dashboard, its filters and alerts on.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Final, Literal

from aiohttp import web

from healthbus.protocol.clock import Clock, SystemClock

__all__ = [
    "DemoFleet",
    "demo_config_text",
    "demo_fleet_answer",
    "demo_fleet_config_text",
    "demo_fleet_name",
    "milvus_available",
]

DemoAnswer = Literal["up", "down", "slow"]

#: Features the synthetic targets provide (by index), for the dashboard's feature filter.
_FLEET_FEATURES: Final = ("orders", "search", "cache", "payments", "reports")
#: A slow synthetic target answers after this long; its warn_latency is lower.
DEMO_SLOW_S: Final = 0.3


def milvus_available() -> bool:
    """True when pymilvus and milvus-lite (the ``milvus`` extra) are installed."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("pymilvus", "milvus_lite"))
    except (ImportError, ValueError):
        return False


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def demo_config_text(data_dir: Path, *, nats_host: str, nats_port: int, dashboard_url: str, milvus: bool) -> str:
    """The demo configuration as TOML, with its files under ``data_dir``."""
    data = data_dir.absolute()
    sqlite_url = f"sqlite+aiosqlite:///{data / 'demo.sqlite3'}"
    parts = [
        "# The built-in demo configuration of `healthbus dev` (rewritten on every start).",
        "# Copy it, edit it, and run `healthbus dev --config yours.toml`.",
        "",
        "[defaults]",
        'interval = "2s"',
        'timeout = "1s"',
        "failure_threshold = 2",
        "success_threshold = 2",
        'backoff = { base = "1s", multiplier = 2.0, max = "30s", jitter = "full" }',
        "",
        "# Always there: an SQLite database through SQLAlchemy.",
        "[[targets]]",
        'name = "sqlite"',
        'kind = "sqlalchemy"',
        f"url = {_toml_str(sqlite_url)}",
        'features = ["reports"]',
        "",
        "# The embedded NATS server, checked like any TCP service.",
        "[[targets]]",
        'name = "nats"',
        'kind = "tcp"',
        f"url = {_toml_str(f'tcp://{nats_host}:{nats_port}')}",
        'features = ["bus"]',
        "",
        "# The dashboard's own health endpoint, checked over HTTP.",
        "[[targets]]",
        'name = "dashboard"',
        'kind = "http"',
        f"url = {_toml_str(dashboard_url.rstrip('/') + '/healthz')}",
        'features = ["ui"]',
        "",
        "# The local Redis on its default port: unavailable (degraded mode) if it is not running.",
        "[[targets]]",
        'name = "redis"',
        'kind = "redis"',
        'url = "redis://127.0.0.1:6379/0"',
        'features = ["cache", "rate-limit"]',
        "",
        "# The local PostgreSQL on its default port: unavailable if it is not running.",
        "[[targets]]",
        'name = "postgres"',
        'kind = "postgres"',
        'url = "postgresql://postgres@127.0.0.1:5432/postgres"',
        'features = ["orders"]',
    ]
    if milvus:
        parts += [
            "",
            "# A milvus-lite file (the `milvus` extra is installed).",
            "[[targets]]",
            'name = "milvus"',
            'kind = "milvus"',
            f"url = {_toml_str(str(data / 'milvus-demo.db'))}",
            'features = ["vector-search"]',
            'timeout = "2s"',
            'interval = "5s"',
        ]
    return "\n".join(parts) + "\n"


def demo_fleet_name(index: int) -> str:
    """The name of synthetic target ``index`` (0-based): ``demo-0001`` ..."""
    return f"demo-{index + 1:04d}"


def demo_fleet_answer(index: int, now_s: float) -> DemoAnswer:
    """How synthetic target ``index`` answers at ``now_s`` (seconds since the epoch).

    Of every 20 targets: one is always down, one is down for 3 minutes in every 10 (each
    at its own phase), one is slow (shown degraded through its warn_latency); of every
    50, one flaps (down for 20 s in every 40 s, so the coordinator marks it flapping). The
    rest are up.
    """
    slot = index % 20
    if slot == 7:
        return "down"
    if slot == 13:
        return "down" if (now_s + index * 37) % 600 < 180 else "up"
    if slot == 3:
        return "slow"
    if index % 50 == 21:
        return "down" if (now_s + index) % 40 < 20 else "up"
    return "up"


def demo_fleet_config_text(count: int, base_url: str) -> str:
    """``count`` synthetic HTTP targets checking ``base_url``/t/<index>, as TOML ``[[targets]]``.

    The interval grows with the fleet (2 s up to 200 targets, then N/100 s) so that one
    probe worker on a laptop keeps up.
    """
    interval = max(2, -(-count // 100))
    base = base_url.rstrip("/")
    parts = [
        f"# --demo {count}: synthetic targets answered by `healthbus dev` itself (some fail on purpose).",
    ]
    for index in range(count):
        feature = _FLEET_FEATURES[index % len(_FLEET_FEATURES)]
        parts += [
            "",
            "[[targets]]",
            f"name = {_toml_str(demo_fleet_name(index))}",
            'kind = "http"',
            f"url = {_toml_str(f'{base}/t/{index}')}",
            f"features = [{_toml_str(feature)}]",
            f'interval = "{interval}s"',
        ]
        if demo_fleet_answer(index, 0.0) == "slow":
            parts.append(f'warn_latency = "{int(DEMO_SLOW_S * 1000) // 3}ms"')
    return "\n".join(parts) + "\n"


class DemoFleet:
    """The HTTP server behind ``--demo N``: ``GET /t/<index>`` answers per :func:`demo_fleet_answer`."""

    def __init__(self, count: int, *, clock: Clock | None = None) -> None:
        self.count = count
        self._clock = clock or SystemClock()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _answer(self, request: web.Request) -> web.Response:
        try:
            index = int(request.match_info["index"])
        except ValueError:
            raise web.HTTPNotFound() from None
        if not 0 <= index < self.count:
            raise web.HTTPNotFound()
        answer = demo_fleet_answer(index, self._clock.now().timestamp())
        if answer == "down":
            return web.Response(status=503, text="down (synthetic)\n")
        if answer == "slow":
            await asyncio.sleep(DEMO_SLOW_S)  # real time: the probe measures this latency
        return web.Response(text=f"{answer} (synthetic)\n")

    async def start(self, host: str = "127.0.0.1") -> str:
        """Serve on a free port of ``host``; returns the base URL."""
        app = web.Application()
        app.router.add_get("/t/{index}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{port}"
        return self.url

    async def close(self) -> None:
        """Stop serving (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
