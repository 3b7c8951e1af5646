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
from healthbus.cli._common import EXIT_FAILURE, EXIT_OK, UsageError, bus_settings, load_args_config, stop_on_signals
from healthbus.cli._http import check_bind
from healthbus.cli._reload import Reloader
from healthbus.coordinator import CoordinatorService, PartitionedCoordinator
from healthbus.protocol import Config, redact_url

log = logging.getLogger("healthbus.coordinator")


def _only_partitions(text: str | None, partitions: int) -> list[int] | None:
    """``--only-partitions 0,2``: the partitions this process runs (None: all)."""
    if text is None:
        return None
    if partitions < 2:
        raise UsageError("--only-partitions needs [coordinator] partitions > 1 in the configuration")
    try:
        chosen = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"--only-partitions: expected comma-separated whole numbers, got {text!r}") from None
    if not chosen or not all(0 <= p < partitions for p in chosen):
        raise UsageError(f"--only-partitions: expected partitions from 0 to {partitions - 1}, got {text!r}")
    return chosen


def _names(service: CoordinatorService | PartitionedCoordinator) -> set[str]:
    return service.names if isinstance(service, PartitionedCoordinator) else set(service.decider.names)


def _reloader(path: str, service: CoordinatorService | PartitionedCoordinator, nc: Client, prefix: str) -> Reloader:
    """SIGHUP and ``healthbus reload`` re-read ``path``: new targets decided from now on, removed ones retired."""

    first = service.services[0] if isinstance(service, PartitionedCoordinator) else service
    routing = first.config.coordinator.partition_routing

    async def apply(config: Config) -> str:
        if not config.targets:
            raise ValueError("no [[targets]]: the coordinator would have nothing to decide")
        running = service.partitions
        if (config.coordinator.partitions, config.coordinator.partition_routing) != (running, routing):
            raise ValueError(
                f"[coordinator] partitions or partition_routing changed (running: {running}, {routing!r}):"
                " a reload cannot change them; restart every coordinator (docs/operations.md, Partitions)"
            )
        before = _names(service)
        retired = service.reconfigure(config)
        after = _names(service)
        return (
            f"{len(after)} targets ({len(after - before)} added, {len(before - after)} removed,"
            f" {len(retired)} announced retired)"
        )

    reloader = Reloader(path, apply, sender=service.holder)

    async def on_ctl_reload() -> str | None:
        error = await reloader.reload("healthbus reload")
        if error is None:
            await reloader.broadcast(nc, prefix)  # standbys and probe workers re-read theirs
        return error

    for part in service.services if isinstance(service, PartitionedCoordinator) else [service]:
        part.reload_hook = on_ctl_reload
    return reloader


async def cmd_coordinator(args: argparse.Namespace) -> int:
    """Load the config (required), connect, restore, decide until a signal; exit 0."""
    config = load_args_config(args, required=True)
    if not config.targets:
        raise UsageError(f"{config.source}: no [[targets]]: the coordinator has nothing to decide")
    settings = bus_settings(args, config)
    only = _only_partitions(getattr(args, "only_partitions", None), config.coordinator.partitions)
    bind = check_bind(getattr(args, "http", None) or config.coordinator.http)
    holder: list[CoordinatorService | PartitionedCoordinator] = []
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
            service: CoordinatorService | PartitionedCoordinator
            if config.coordinator.partitions > 1:
                service = PartitionedCoordinator(config, nc, prefix=settings.prefix, secrets=secrets, only=only)
            else:
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
