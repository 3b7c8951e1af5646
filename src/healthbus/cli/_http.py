"""The HTTP side of long-running commands (``--http HOST:PORT``).

``/metrics`` (Prometheus text format, from the component's own registry), ``/healthz``
(the process is alive and its event loop answers) and ``/readyz`` (the component says it
is ready: connected to NATS and, for the coordinator, restored). Extra routes (the
dashboard) are added by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from healthbus.cli._common import UsageError

Route = tuple[str, str, Callable[[web.Request], object]]


def parse_bind(bind: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (or ``":PORT"``) → (host, port); ValueError naming the problem."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--http expects HOST:PORT like 127.0.0.1:9100, got {bind!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def check_bind(bind: str | None) -> str | None:
    """``bind`` unchanged if it is a valid ``HOST:PORT`` (or None); else a usage error (exit 2).

    Called before connecting to NATS, so a typo in ``--http`` is reported at once, as a
    usage error, instead of as a traceback after start-up.
    """
    if bind:
        try:
            parse_bind(bind)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return bind


def ops_app(
    registries: Iterable[CollectorRegistry],
    ready: Callable[[], bool],
    extra_routes: Iterable[Route] = (),
) -> web.Application:
    """An aiohttp app with /metrics, /healthz, /readyz and ``extra_routes``."""
    regs = list(registries)

    async def metrics(_: web.Request) -> web.Response:
        body = b"".join(generate_latest(r) for r in regs)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    for method, path, handler in extra_routes:
        app.router.add_route(method, path, handler)  # type: ignore[arg-type]
    return app


class OpsServer:
    """A running ops HTTP server; ``await close()`` stops it. ``port`` is the bound port."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        """Stop serving."""
        await self._runner.cleanup()


async def serve_ops(
    bind: str,
    registry: CollectorRegistry | Iterable[CollectorRegistry],
    ready: Callable[[], bool],
    extra_routes: Iterable[Route] = (),
) -> OpsServer:
    """Serve /metrics, /healthz, /readyz (and ``extra_routes``) on ``bind``; port 0 picks one."""
    host, port = parse_bind(bind)
    regs = [registry] if isinstance(registry, CollectorRegistry) else list(registry)
    runner = web.AppRunner(ops_app(regs, ready, extra_routes), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return OpsServer(runner, host, bound)
