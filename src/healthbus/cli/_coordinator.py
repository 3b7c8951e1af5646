"""``healthbus coordinator --config F``: run the coordinator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

import nats.errors
import nats.js.errors
from nats.aio.client import Client

from healthbus.bus import connect, resolve_url
from healthbus.cli._http import check_bind
from healthbus.cli._main import EXIT_FAILURE, EXIT_OK, UsageError, bus_settings, load_args_config, stop_on_signals
from healthbus.cli._reload import Reloader
from healthbus.coordinator import CoordinatorService
from healthbus.protocol import Config, redact_url

log = logging.getLogger("healthbus.coordinator")


def _reloader(path: str, service: CoordinatorService, nc: Client, prefix: str) -> Reloader:
    """SIGHUP and ``ctl reload`` re-read ``path``: new targets decided from now on, removed ones retired."""

    async def apply(config: Config) -> str:
        if not config.targets:
            raise ValueError("no [[targets]]: the coordinator would have nothing to decide")
        before = set(service.decider.names)
        retired = service.reconfigure(config)
        after = set(service.decider.names)
        return (
            f"{len(after)} targets ({len(after - before)} added, {len(before - after)} removed,"
            f" {len(retired)} announced retired)"
        )

    reloader = Reloader(path, apply, sender=service.holder)

    async def on_ctl_reload() -> str | None:
        error = await reloader.reload("ctl reload")
        if error is None:
            await reloader.broadcast(nc, prefix)  # standbys and probe workers re-read theirs
        return error

    service.reload_hook = on_ctl_reload
    return reloader


async def cmd_coordinator(args: argparse.Namespace) -> int:
    """Load the config (required), connect, restore, decide until a signal; exit 0."""
    config = load_args_config(args, required=True)
    if not config.targets:
        raise UsageError(f"{config.source}: no [[targets]]: the coordinator has nothing to decide")
    settings = bus_settings(args, config)
    bind = check_bind(getattr(args, "http", None) or config.coordinator.http)
    holder: list[CoordinatorService] = []
    secrets = [s for s in (settings.password, settings.token) if s]

    async def error_cb(exc: Exception) -> None:
        if holder:
            await holder[0].error_cb(exc)
        else:
            log.warning("NATS: %s", type(exc).__name__)

    nc = await connect(settings, name="healthbus-coordinator", error_cb=error_cb)
    ops = None
    try:
        with stop_on_signals() as stop:
            service = CoordinatorService(config, nc, prefix=settings.prefix, secrets=secrets)
            holder.append(service)
            reloader = _reloader(config.source, service, nc, settings.prefix)
            # The service keeps only the compact per-target settings it decides with; drop
            # our reference so the parsed [[targets]] do not stay alive for the whole run.
            del config
            if bind:
                from healthbus.cli._http import serve_ops

                # Up before the restore, so /readyz can say "not yet" while it runs.
                try:
                    ops = await serve_ops(bind, service.registry, lambda: service.ready)
                except OSError as exc:
                    print(f"healthbus coordinator: cannot serve on {bind}: {exc}", file=sys.stderr)
                    return EXIT_FAILURE
                log.info("serving /metrics, /healthz, /readyz on %s", ops.url)
            try:
                await service.start()
            except (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError):
                with contextlib.suppress(Exception):
                    await service.stop()
                server = redact_url(resolve_url(settings))
                print(
                    f"healthbus coordinator: JetStream is not available on NATS at {server} "
                    "(start nats-server with -js)",
                    file=sys.stderr,
                )
                return EXIT_FAILURE
            try:
                async with reloader.installed(nc, settings.prefix):
                    await stop.wait()
                log.info("stopping")
            finally:
                await service.stop()
    finally:
        if ops is not None:
            await ops.close()
        with contextlib.suppress(Exception):
            await nc.drain()
    return EXIT_OK
