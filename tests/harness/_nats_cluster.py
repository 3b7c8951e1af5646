"""A 3-node (by default) JetStream cluster of real nats-servers on free ports.

Each node is an :class:`EmbeddedNats` with a monitoring port; ``start()`` returns once
every node's ``/healthz`` says ok, which for a JetStream cluster means a meta leader was
elected and the node is current. Nodes can be stopped, killed and restarted one by one
(``cluster.servers[i]``); call ``wait_healthy()`` after bringing one back.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from healthbus.bus.embedded import EmbeddedNats, Restartable, ServerStartError, free_port, log_tail

__all__ = ["NatsCluster"]


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
                port=free_port(),
                monitor_port=free_port(),
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
