"""Servers the benchmarks start for themselves: nats-server, redis-server, PostgreSQL.

All listen on loopback only, on ports chosen at start, with their data and logs in the
benchmark's temporary directory; the machine's shared servers are never touched.
nats-server comes from :class:`healthbus.bus.embedded.EmbeddedNats` (no second
launcher); redis-server reuses the same process helpers; PostgreSQL is a cluster of its
own (``initdb``, ``pg_ctl``; run as the ``postgres`` user when we are root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from healthbus.bench.support import wait_for_tcp
from healthbus.bus.embedded import (
    EmbeddedNats,
    ServerStartError,
    find_binary,
    free_port,
    kill,
    spawn,
    terminate,
)

__all__ = ["BenchPostgres", "BenchRedis", "ServerStartError", "embedded_nats", "restart_stamped"]

# A benchmark subscriber may fall seconds behind a publisher that runs flat out; the
# server must buffer for it rather than cut it off as a "slow consumer" (defaults: 64 MB
# pending, 10 s write deadline), or the benchmark would measure lost messages.
_NATS_CONF = """\
max_pending: 1073741824
write_deadline: "120s"
max_payload: 1048576
"""


@contextlib.asynccontextmanager
async def embedded_nats(workdir: Path, *, sync_always: bool = False, extra: str = "") -> AsyncIterator[EmbeddedNats]:
    """A JetStream nats-server on a free loopback port for the duration of the block.

    ``sync_always``: JetStream fsyncs every write (``sync_interval: always``, as deploy/
    configures it) instead of the default lazy sync. ``extra``: more configuration (e.g. subject mappings)."""
    data_dir = workdir / "nats"
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "bench.conf"
    conf.write_text(_NATS_CONF + ("jetstream { sync_interval: always }\n" if sync_always else "") + extra)
    server = EmbeddedNats(data_dir, host="127.0.0.1", config_file=conf)
    await server.astart()
    try:
        yield server
    finally:
        await server.astop()


class BenchRedis:
    """A throwaway ``redis-server`` (no persistence) on a free loopback port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.log_path = data_dir / "redis-server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> BenchRedis:
        """Start and wait until it accepts connections; raises ServerStartError otherwise."""
        binary = find_binary("redis-server")
        if binary is None:
            raise ServerStartError("redis-server not found on PATH (install the redis-server package)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            binary, "--port", str(self.port), "--bind", self.host, "--dir", str(self.data_dir),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "",
            "--maxclients", "10000",
        ]  # fmt: skip
        proc = spawn(argv, self.log_path)
        self._proc = proc
        try:
            wait_for_tcp(proc, self.host, self.port, timeout=10.0, what="redis-server", log_path=self.log_path)
        except BaseException:
            kill(proc)
            self._proc = None
            raise
        return self

    def stop(self) -> None:
        """SIGTERM (Redis closes every client connection), wait, SIGKILL if needed."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, 5.0)

    @property
    def is_running(self) -> bool:
        """True while the process lives."""
        return self._proc is not None and self._proc.poll() is None


def _pg_binary(name: str) -> str:
    found = find_binary(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise ServerStartError(f"{name} not found (install the postgresql package)")
    return found


class BenchPostgres:
    """A throwaway PostgreSQL cluster on a free loopback port (trust auth, fsync off).

    ``settings`` are passed as ``-c name=value`` at every start. Connections are logged
    (``log_connections``) with millisecond timestamps, so a suite can count the new
    connections the server saw per second (:meth:`connections_between`).
    """

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.settings = {"log_connections": "on", "log_line_prefix": "'%m '", **(settings or {})}
        self.base = Path(tempfile.mkdtemp(prefix="healthbus-bench-pg-"))
        self.base.chmod(0o755)
        self.data_dir = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run every tool as postgres
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerStartError("running as root and there is no postgres user to run initdb as") from None
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
            self._as = [shutil.which("runuser") or "runuser", "-u", "postgres", "--"]
        self._initialized = False

    @property
    def dsn(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/postgres``."""
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        proc = subprocess.run([*self._as, _pg_binary(args[0]), *args[1:]], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ServerStartError(f"{args[0]} failed: {(proc.stdout + proc.stderr)[-800:]}")

    def start(self) -> BenchPostgres:
        """Start (initdb on first use) and return once it accepts connections (``pg_ctl -w``)."""
        if not self._initialized:
            self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
            self._initialized = True
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses={self.host} -c fsync=off"
        for name, value in self.settings.items():
            options += f" -c {name}={value}"
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options, "-w", "-t", "60", "start"
        )
        return self

    def stop(self) -> None:
        """Fast shutdown (every client disconnected); keeps the data."""
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(ServerStartError):
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")

    def remove(self) -> None:
        """Stop and delete the cluster."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def log_size(self) -> int:
        """The server log's length now (a mark for :meth:`connections_between`)."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def connection_times(self, since: int = 0) -> list[float]:
        """Wall-clock times (epoch seconds) of the connections logged after byte ``since``."""
        from datetime import datetime

        times: list[float] = []
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            log.seek(since)
            for line in log:
                if "connection received:" not in line:
                    continue
                stamp = " ".join(line.split(" ", 3)[:3])  # "2026-12-06 02:00:00.123 UTC"
                with contextlib.suppress(ValueError):
                    times.append(
                        datetime.strptime(stamp.replace(" UTC", " +0000"), "%Y-%m-%d %H:%M:%S.%f %z").timestamp()
                    )
        return times


async def restart_stamped(start: Callable[[], object], host: str, port: int) -> int:
    """Run ``start`` (which returns once the server is up) in a thread while another thread
    tries a TCP connection to ``host:port`` every 2 ms: the :func:`now_ns` of the first one
    accepted, i.e. when the server began to accept connections.

    A server's own readiness wait (``wait_for_tcp``, ``pg_ctl -w``) polls less often and,
    on a loaded machine, returns long after the clients it serves are already back.
    """
    import asyncio
    import socket
    import threading
    import time

    from healthbus.bench._measure import now_ns

    done = threading.Event()
    accepted: list[int] = []

    def poll() -> None:
        while not done.is_set():
            try:
                with socket.create_connection((host, port), timeout=0.05):
                    accepted.append(now_ns())
                    return
            except OSError:
                time.sleep(0.002)

    poller = threading.Thread(target=poll, name="bench-accept-poller", daemon=True)
    poller.start()
    try:
        await asyncio.to_thread(start)
        returned = now_ns()
    finally:
        done.set()
        await asyncio.to_thread(poller.join)
    return min([returned, *accepted])
