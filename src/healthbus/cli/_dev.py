"""``healthbus dev``: everything on one laptop, in one command.

Starts, in this order: an embedded ``nats-server`` with JetStream (unless ``--nats``
names an existing server; its data lives in ``--data-dir`` and survives restarts, so
history is kept), the coordinator and one probe worker as child processes (the very
commands a deployment runs, each with its own /metrics), and the dashboard in this
process. Prints where each one is, then runs until Ctrl-C or SIGTERM. With ``--demo N``
the built-in demo gets N synthetic targets, answered by a small HTTP server in this
process (``healthbus.cli._demo.DemoFleet``), some failing on purpose.

Shutdown invariants: on SIGINT/SIGTERM every child is stopped in reverse order (probe
worker, coordinator: SIGTERM, then SIGKILL after a grace period), then the dashboard,
then nats-server, and the command exits 0. Children run in their own sessions, so a
Ctrl-C in the terminal reaches only this process and the order above holds; they are
also killed if this process dies (``PR_SET_PDEATHSIG``), so nothing is left orphaned.
If a child exits by itself, everything is stopped and the command exits 1 with the tail
of that child's log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from healthbus.bus import connect
from healthbus.bus.embedded import (
    EmbeddedNats,
    ServerStartError,
    free_port,
    log_tail,
    spawn,
    tcp_accepts,
    terminate,
)
from healthbus.cli._common import EXIT_FAILURE, EXIT_OK, UsageError, bus_settings, load_args_config
from healthbus.cli._dashboard import DEFAULT_BIND, RunningDashboard, configured_targets, start_dashboard
from healthbus.cli._demo import DemoFleet, demo_config_text, demo_fleet_config_text, milvus_available
from healthbus.cli._http import parse_bind
from healthbus.protocol import BusSettings, Config, load_config, redact_url

__all__ = ["cmd_dev"]

#: How long a child gets to stop after SIGTERM before it is killed.
STOP_GRACE_S = 10.0
#: How long to wait for a child's /readyz before saying it is not ready (it keeps running).
READY_WAIT_S = 20.0
DEFAULT_NATS_PORT = 4222


@dataclass
class _Child:
    name: str
    argv: list[str]
    log_path: Path
    http: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    exited: asyncio.Task[int] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.proc = spawn(self.argv, self.log_path, env=self.env)
        self.exited = asyncio.ensure_future(asyncio.to_thread(self.proc.wait))

    async def stop(self) -> None:
        if self.proc is not None:
            await asyncio.to_thread(terminate, self.proc, STOP_GRACE_S)
        if self.exited is not None:
            with contextlib.suppress(Exception):
                await self.exited


def _forwarded_options(args: argparse.Namespace, nats_url: str) -> tuple[list[str], dict[str, str]]:
    """Bus options for the children; secrets go through the environment, not the command line."""
    argv = ["--nats", nats_url]
    env = dict(os.environ)
    for option, attr in (
        ("--prefix", "prefix"),
        ("--user", "user"),
        ("--creds", "creds"),
        ("--tls-ca", "tls_ca"),
        ("--tls-cert", "tls_cert"),
        ("--tls-key", "tls_key"),
        ("--inbox-prefix", "inbox_prefix"),
    ):
        value = getattr(args, attr, None)
        if value:
            argv += [option, value]
    if getattr(args, "password", None):
        env["HEALTHBUS_NATS_PASSWORD"] = args.password
    if getattr(args, "token", None):
        env["HEALTHBUS_NATS_TOKEN"] = args.token
    return argv, env


def _healthbus_argv(*args: str) -> list[str]:
    # The same interpreter and code as this process, whatever the PATH says.
    return [sys.executable, "-c", "import sys; from healthbus.cli import main; sys.exit(main())", *args]


async def _wait_ready(child: _Child) -> bool:
    """True once the child's /readyz answers 200; False on timeout or if it exits."""
    url = f"http://{child.http}/readyz"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_WAIT_S
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
        while loop.time() < deadline:
            if child.exited is not None and child.exited.done():
                return False
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return True
            await asyncio.sleep(0.1)  # a child process offers no readiness event to await
    return False


def _check_targets(config: Config) -> None:
    """What the coordinator and probe children would refuse (exit 2) is refused here, before
    anything starts: no targets, a kind whose driver is missing, a bad kind option."""
    from healthbus.probes import DriverMissing, build_checker

    if not config.targets:
        raise UsageError(f"{config.source}: no [[targets]]: nothing to watch")
    for target in config.targets:
        try:
            build_checker(target)  # no I/O: a checker connects at its first check
        except DriverMissing as exc:
            raise UsageError(str(exc)) from None
        except ValueError as exc:
            raise UsageError(f"config error: {config.source}: {exc}") from None


async def cmd_dev(args: argparse.Namespace) -> int:
    """Run embedded NATS, coordinator, one probe worker and the dashboard until Ctrl-C."""
    data_dir = Path(args.data_dir)
    given_config = getattr(args, "config", None) or os.environ.get("HEALTHBUS_CONFIG")
    config = load_args_config(args)  # validates --config before anything starts
    if given_config:
        _check_targets(config)
        if getattr(args, "demo", 0):
            raise UsageError("--demo adds to the built-in demo: leave out --config (and HEALTHBUS_CONFIG)")
    settings = bus_settings(args, config)
    try:
        host, port = parse_bind(args.http) if args.http else parse_bind(DEFAULT_BIND)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not args.http and not _port_free(host, port):
        port = 0  # the default port is taken: any free one will do for a laptop
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - start-up, nothing runs yet
    lock = _lock_data_dir(data_dir)
    if lock is None:
        print(
            f"healthbus dev: {data_dir} is in use by another healthbus dev; stop it first, "
            "or give this one its own --data-dir",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    try:
        return await _run_dev(args, data_dir, given_config, config, settings, host, port)
    finally:
        lock.close()


def _lock_data_dir(data_dir: Path) -> IO[bytes] | None:
    """An exclusive lock on ``data_dir`` for this process's life (None if another dev holds it).

    Two embedded NATS servers on one JetStream store would corrupt it, and two coordinators
    would write one log. The kernel drops the lock when this process ends, even by SIGKILL.
    """
    handle = (data_dir / "dev.lock").open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


async def _run_dev(
    args: argparse.Namespace,
    data_dir: Path,
    given_config: str | None,
    config: Config,
    settings: BusSettings,
    host: str,
    port: int,
) -> int:

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)

    nats: EmbeddedNats | None = None
    dashboard: RunningDashboard | None = None
    fleet: DemoFleet | None = None
    children: list[_Child] = []
    nc = None
    code = EXIT_OK
    try:
        if getattr(args, "nats", None):
            nats_url = args.nats
        else:
            nats_port = DEFAULT_NATS_PORT if _port_free("127.0.0.1", DEFAULT_NATS_PORT) else None
            nats = EmbeddedNats(data_dir / "nats", port=nats_port)
            try:
                # Started from the main thread on purpose: only then is the child armed to die
                # with us (PR_SET_PDEATHSIG), even if this process is killed with SIGKILL.
                nats.start()
            except (ServerStartError, FileNotFoundError) as exc:
                print(f"healthbus dev: cannot start the embedded NATS server: {exc}", file=sys.stderr)
                return EXIT_FAILURE
            nats_url = nats.url
            settings = msgspec.structs.replace(settings, url=nats_url)
        nc = await connect(settings, url=nats_url, name="healthbus-dev")
        try:
            dashboard = await start_dashboard(nc, settings.prefix, f"{host}:{port}", config)
        except OSError as exc:
            print(f"healthbus dev: cannot serve the dashboard on {host}:{port}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        if given_config:
            config_path = Path(given_config)
        else:
            config_path = data_dir / "demo.toml"
            where = urlsplit(nats_url)
            text = demo_config_text(
                data_dir,
                nats_host=where.hostname or "127.0.0.1",
                nats_port=where.port or DEFAULT_NATS_PORT,
                dashboard_url=dashboard.url,
                milvus=milvus_available(),
            )
            if getattr(args, "demo", 0):
                fleet = DemoFleet(args.demo)
                text += "\n" + demo_fleet_config_text(args.demo, await fleet.start())
            config_path.write_text(text, encoding="utf-8")
            config = load_config(config_path)
            dashboard.dashboard.configured = configured_targets(config)
        bus_argv, env = _forwarded_options(args, nats_url)
        verbose = ["-v"]
        for name, extra in (("coordinator", []), ("probe", ["--id", "dev-probe"])):
            http = f"127.0.0.1:{free_port()}"
            child = _Child(
                name,
                _healthbus_argv(name, "--config", str(config_path), *bus_argv, "--http", http, *verbose, *extra),
                data_dir / f"{name}.log",
                http,
                env,
            )
            child.start()
            children.append(child)
        readiness: asyncio.Future[list[bool]] = asyncio.gather(*(_wait_ready(c) for c in children))
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        waiters: list[asyncio.Future[Any]] = [readiness, stopping]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():  # Ctrl-C while starting up: stop what started, cleanly
            readiness.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await readiness
            return EXIT_OK
        stopping.cancel()
        ready = readiness.result()
        _print_banner(nats_url, nats, dashboard, children, ready, config_path, given_config is None, fleet)
        code = await _run_until_stopped(stop, children)
    finally:
        for child in reversed(children):
            await child.stop()
        if dashboard is not None:
            await dashboard.close()
        if fleet is not None:
            await fleet.close()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        if nats is not None:
            await nats.astop()
        for sig in signals:
            loop.remove_signal_handler(sig)
    if code == EXIT_OK:
        print("healthbus dev: stopped", file=sys.stderr, flush=True)
    return code


def _port_free(host: str, port: int) -> bool:
    return not tcp_accepts(host or "127.0.0.1", port)


async def _run_until_stopped(stop: asyncio.Event, children: list[_Child]) -> int:
    stopping = asyncio.ensure_future(stop.wait())
    exits = {c.exited: c for c in children if c.exited is not None}
    try:
        done, _ = await asyncio.wait({stopping, *exits}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if stopping in done:
        return EXIT_OK
    for task in done:
        child = exits[task]
        print(
            f"healthbus dev: the {child.name} exited with code {task.result()}; stopping everything. "
            f"Last lines of {child.log_path}:\n{log_tail(child.log_path, 20)}",
            file=sys.stderr,
            flush=True,
        )
    return EXIT_FAILURE


def _print_banner(
    nats_url: str,
    nats: EmbeddedNats | None,
    dashboard: RunningDashboard,
    children: list[_Child],
    ready: list[bool],
    config_path: Path,
    demo: bool,
    fleet: DemoFleet | None = None,
) -> None:
    where = f"embedded, data in {nats.data_dir}" if nats is not None else "existing server"
    lines = [
        "healthbus dev is running:",
        f"  NATS         {redact_url(nats_url)}  ({where})",
        f"  dashboard    {dashboard.url}",
    ]
    for child, ok in zip(children, ready, strict=True):
        state = "" if ok else "  (not ready yet: see its log)"
        lines.append(f"  {child.name:<12} http://{child.http}/metrics  log {child.log_path}{state}")
    lines.append(f"  config       {config_path}{'  (built-in demo)' if demo else ''}")
    if fleet is not None:
        lines.append(f"  demo fleet   {fleet.count} synthetic targets at {fleet.url}/t/<n> (some fail on purpose)")
    # Every healthbus command and HealthClient.connect() read NATS_URL: one line to paste.
    lines.append(f"Try: export NATS_URL={redact_url(nats_url)}")
    lines.append("     healthbus status")
    lines.append("Ctrl-C stops everything.")
    print("\n".join(lines), flush=True)
