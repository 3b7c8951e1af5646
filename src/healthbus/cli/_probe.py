"""``healthbus probe --config F [--id ID] [--http HOST:PORT]``: run one probe worker.

Runs until SIGINT or SIGTERM, then stops scheduling, cancels in-flight checks, closes
every client, drains NATS and exits 0. A kind whose driver is missing, or a bad
kind-specific option, is a configuration error (exit 2) reported before connecting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

import msgspec

from healthbus.bus import connect
from healthbus.cli._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, bus_settings, load_args_config
from healthbus.cli._http import check_bind
from healthbus.cli._reload import Reloader
from healthbus.probes import DriverMissing, ProbeWorker
from healthbus.protocol import Config

log = logging.getLogger("healthbus.probes")


async def _reload(worker: ProbeWorker, config: Config, prefix: str) -> str:
    """SIGHUP or ``healthbus reload``: check the re-read file's targets from now on."""
    if config.bus.prefix != prefix:
        config = msgspec.structs.replace(config, bus=msgspec.structs.replace(config.bus, prefix=prefix))
    try:
        return await worker.reload(config)
    except DriverMissing as exc:
        raise ValueError(str(exc)) from None


async def cmd_probe(args: argparse.Namespace) -> int:
    """Run one probe worker until SIGINT/SIGTERM."""
    config = load_args_config(args, required=True)
    settings = bus_settings(args, config)
    bind = check_bind(getattr(args, "http", None) or config.probes.http)
    if settings.prefix != config.bus.prefix:
        config = msgspec.structs.replace(config, bus=settings)
    try:
        worker = ProbeWorker(config, worker_id=getattr(args, "worker_id", None))
    except DriverMissing as exc:
        print(f"healthbus probe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"healthbus probe: config error: {config.source}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not config.targets:
        print(f"healthbus probe: {config.source} has no [[targets]]; nothing to check", file=sys.stderr)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    nc = await connect(settings, name=f"healthbus-probe {worker.worker_id}")
    ops = None
    try:
        await worker.start(nc)
        if bind:
            from healthbus.cli._http import serve_ops

            try:
                ops = await serve_ops(bind, worker.metrics.registry, lambda: worker.ready)
            except OSError as exc:
                print(f"healthbus probe: cannot serve on {bind}: {exc}", file=sys.stderr)
                return EXIT_FAILURE
            log.info("serving /metrics, /healthz, /readyz on %s", ops.url)
        log.info("probe worker %s started with %d targets", worker.worker_id, len(config.targets))
        reloader = Reloader(config.source, lambda new: _reload(worker, new, settings.prefix), sender=worker.worker_id)
        async with reloader.installed(nc, settings.prefix):
            await stop.wait()
        log.info("probe worker %s stopping", worker.worker_id)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await worker.stop()
        if ops is not None:
            await ops.close()
        with contextlib.suppress(Exception):
            await nc.drain()
    return EXIT_OK
