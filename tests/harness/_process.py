"""The lifecycle every child-process server of the harness shares (redis, milvus-lite).

A server owns a directory for its data and log. ``start()`` returns once the server
accepts TCP connections on its port (else raises with the log tail and leaves no process);
``restart()`` keeps the port and the data; ``kill()`` is SIGKILL, as in a crash. The
process handling itself is :class:`healthbus.bus.embedded.ChildProcess`, the one that
runs nats-server too.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Self

from healthbus.bench.support import wait_for_tcp
from healthbus.bus.embedded import ChildProcess, ServerStartError, free_port

__all__ = ["ChildServer", "start_with_port_retry"]

# A port picked by free_port() can be taken by someone else before the server binds it;
# on the first start we then pick another one (later starts must keep the port).
_PORT_ATTEMPTS = 3


def start_with_port_retry(start_once: Callable[[], None], pick_port: Callable[[], None], *, retry: bool) -> None:
    """``start_once()``; with ``retry`` and a :class:`ServerStartError` (the port may have been
    taken meanwhile), ``pick_port()`` and try again, up to ``_PORT_ATTEMPTS`` times in all."""
    attempts = _PORT_ATTEMPTS if retry else 1
    for attempt in range(attempts):
        try:
            start_once()
        except ServerStartError:
            if attempt + 1 == attempts:
                raise
            pick_port()
            continue
        return


class ChildServer(ChildProcess):
    """Base class: subclasses provide ``name`` and ``argv()``, and may extend ``wait_ready()``."""

    name = "server"
    ready_timeout = 15.0
    stop_timeout = 10.0

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.host = host
        self._auto_port = port is None
        self.port = port if port is not None else free_port(host)
        self.log_path = self.data_dir / f"{self.name}.log"
        self._started_once = False

    def argv(self) -> list[str]:
        """The command line that runs the server on ``self.port``."""
        raise NotImplementedError

    def wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        """Return once the server answers; the default waits for a TCP accept."""
        wait_for_tcp(
            proc,
            self.host,
            self.port,
            timeout=self.ready_timeout,
            what=f"{self.name} (pid {proc.pid})",
            log_path=self.log_path,
        )

    def start(self) -> Self:
        """Start and wait until ready (no-op while running)."""
        with self._lock:
            if self.is_running:
                return self
            self.data_dir.mkdir(parents=True, exist_ok=True)

            def pick_port() -> None:
                self.port = free_port(self.host)

            start_with_port_retry(
                lambda: self._launch(self.argv(), self.wait_ready),
                pick_port,
                retry=self._auto_port and not self._started_once,
            )
            self._started_once = True
            return self

    def __repr__(self) -> str:
        state = f"running pid={self.pid}" if self.is_running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"
