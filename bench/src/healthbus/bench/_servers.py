"""Servers the benchmarks start for themselves: nats-server and redis-server.

Both listen on loopback only, on ports chosen at start, with their data and logs in the
benchmark's temporary directory; the machine's shared servers are never touched.
nats-server comes from :class:`healthbus.bus.embedded.EmbeddedNats` (no second
launcher); redis-server reuses the same process helpers.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from healthbus.bus.embedded import (
    EmbeddedNats,
    ServerStartError,
    find_binary,
    free_port,
    kill,
    spawn,
    terminate,
    wait_for_tcp,
)

__all__ = ["BenchRedis", "ServerStartError", "embedded_nats"]

# A benchmark subscriber may fall seconds behind a publisher that runs flat out; the
# server must buffer for it rather than cut it off as a "slow consumer" (defaults: 64 MB
# pending, 10 s write deadline), or the benchmark would measure lost messages.
_NATS_CONF = """\
max_pending: 1073741824
write_deadline: "120s"
max_payload: 1048576
"""


@contextlib.asynccontextmanager
async def embedded_nats(workdir: Path, *, sync_always: bool = False) -> AsyncIterator[EmbeddedNats]:
    """A JetStream nats-server on a free loopback port for the duration of the block.

    ``sync_always``: JetStream fsyncs every write (``sync_interval: always``, as deploy/
    configures it) instead of the default lazy sync."""
    data_dir = workdir / "nats"
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "bench.conf"
    conf.write_text(_NATS_CONF + ("jetstream { sync_interval: always }\n" if sync_always else ""))
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
