"""Test and benchmark support: what the test suite and ``healthbus bench`` start servers
with, kept out of the runtime wheels (it ships in ``healthbus-bench``, the
``healthbus[bench]`` extra).

- :func:`wait_for_tcp` waits until a child process accepts TCP on its port, and tells it
  apart from another program that took the port meanwhile (:func:`listens_on`, from
  Linux ``/proc``). nats-server does not need it (``healthbus.bus.embedded.EmbeddedNats``
  reads the ports file the server itself writes); redis-server, milvus-lite and the other
  servers of the harness do.
- :class:`NatsCluster`: a 3-node (by default) JetStream cluster of real nats-servers on
  free ports. Each node is an ``EmbeddedNats`` with a monitoring port; ``start()`` returns
  once every node's ``/healthz`` says ok, which for a JetStream cluster means a meta
  leader was elected and the node is current. Nodes can be stopped, killed and restarted
  one by one (``cluster.servers[i]``); call ``wait_healthy()`` after bringing one back.
  The suite's ``nats_cluster`` fixture and ``healthbus bench failover`` use it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from healthbus.bus.embedded import (
    EmbeddedNats,
    Restartable,
    ServerStartError,
    free_port,
    kill,
    log_tail,
    start_error,
    tcp_accepts,
)

__all__ = ["NatsCluster", "listens_on", "wait_for_tcp"]


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on TCP ``port`` (Linux ``/proc/net/tcp*``); None if unknown."""
    inodes: set[str] = set()
    read_any = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        read_any = True
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st ... inode; st 0A is LISTEN
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes if read_any else None


def _with_descendants(pid: int) -> list[int]:
    pids, i = [pid], 0
    while i < len(pids):
        with contextlib.suppress(OSError, ValueError):
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                children = Path(f"/proc/{pids[i]}/task/{task}/children").read_text().split()
                pids.extend(int(child) for child in children)
        i += 1
    return pids


def listens_on(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` (or a descendant) holds the socket listening on TCP ``port``.

    None when this cannot be told (no Linux ``/proc``). A port picked as free can be taken
    by another program between picking and binding, or while a server restarts on it: then
    something accepts on the port, but not the server that was started.
    """
    inodes = _listening_inodes(port)
    if inodes is None:
        return None
    if not inodes:
        return False
    for candidate in _with_descendants(pid):
        try:
            fds = os.listdir(f"/proc/{candidate}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{candidate}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return True
    return False


def wait_for_tcp(
    proc: subprocess.Popen[bytes], host: str, port: int, *, timeout: float, what: str, log_path: Path
) -> None:
    """Wait until ``proc`` accepts TCP on ``host:port``; on exit or timeout kill it and raise.

    Something else accepting on the port (another program took it) is not ``proc`` being
    ready: it keeps waiting, and ``proc`` then fails to bind and exits with its reason.
    """
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        if proc.poll() is not None:
            raise start_error(what, f"exited with code {proc.returncode}", log_path)
        if tcp_accepts(host, port) and listens_on(proc.pid, port) is not False:
            return
        if time.monotonic() > deadline:
            kill(proc)
            raise start_error(what, f"did not accept connections on {host}:{port} within {timeout:g}s", log_path)
        time.sleep(delay)  # polling a child process: there is no event to wait on
        delay = min(delay * 2, 0.05)


def _healthy(monitor_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{monitor_url}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class NatsCluster(Restartable):
    """``size`` JetStream nodes routed to each other; ``.urls`` lists every client URL."""

    def __init__(self, data_dir: Path, *, size: int = 3, name: str = "healthbus-test", binary: str | None = None):
        self.data_dir = Path(data_dir)
        self.name = name
        cluster_ports = [free_port() for _ in range(size)]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
        self.servers = [
            EmbeddedNats(
                self.data_dir / f"n{i}",
                monitor_port=0,  # the client and monitoring ports are the server's own pick: no race to bind them
                server_name=f"n{i}",
                binary=binary,
                extra_args=["--cluster_name", name, "--cluster", f"nats://127.0.0.1:{cport}", "--routes", routes],
            )
            for i, cport in enumerate(cluster_ports)
        ]

    @property
    def urls(self) -> list[str]:
        """Every node's client URL (pass the list to ``nats.connect(servers=...)``)."""
        return [s.url for s in self.servers]

    @property
    def url(self) -> str:
        """All client URLs, comma-separated (what ``--nats`` and ``NATS_URL`` accept)."""
        return ",".join(self.urls)

    def start(self, timeout: float = 30.0) -> Self:
        """Start every node that is not running and wait until all are healthy."""
        try:
            for server in self.servers:
                server.start()
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every running node's /healthz is ok (JetStream meta leader known)."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        pending = [s for s in self.servers if s.is_running]
        while pending:
            pending = [s for s in pending if not (s.monitor_url and _healthy(s.monitor_url))]
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(str(s.server_name) for s in pending)
                tails = "\n".join(f"--- {s.server_name}:\n{log_tail(s.log_path, 10)}" for s in pending)
                raise ServerStartError(f"NATS cluster nodes {names} not healthy within {timeout:g}s\n{tails}")
            time.sleep(delay)  # polling child processes: there is no event to wait on
            delay = min(delay * 2, 0.1)

    def stop(self) -> None:
        """Stop every node."""
        for server in self.servers:
            server.stop()
