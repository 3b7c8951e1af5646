"""The lifecycle every child-process server of the harness shares (redis, milvus-lite).

A server owns a directory for its data and log. ``start()`` returns once the server
accepts TCP connections on its port (else raises with the log tail and leaves no process);
``restart()`` keeps the port and the data; ``kill()`` is SIGKILL, as in a crash.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

from healthbus.cli._embedded import ServerStartError, free_port, kill, spawn, terminate, wait_for_tcp

__all__ = ["ChildServer"]

# A port picked by free_port() can be taken by someone else before the server binds it;
# on the first start we then pick another one (later starts must keep the port).
_PORT_ATTEMPTS = 3


class ChildServer:
    """Base class: subclasses provide ``name`` and ``argv()``, and may extend ``wait_ready()``."""

    name = "server"
    ready_timeout = 15.0
    stop_signal: int = signal.SIGTERM

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self._auto_port = port is None
        self.port = port if port is not None else free_port(host)
        self.log_path = self.data_dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
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

    @property
    def is_running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._proc.pid if self._proc is not None and self.is_running else None

    def start(self) -> Self:
        """Start and wait until ready (no-op while running)."""
        if self.is_running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        attempts = _PORT_ATTEMPTS if self._auto_port and not self._started_once else 1
        for attempt in range(attempts):
            proc = spawn(self.argv(), self.log_path)
            self._proc = proc
            try:
                self.wait_ready(proc)
            except ServerStartError:
                kill(proc)
                self._proc = None
                if attempt + 1 == attempts:
                    raise
                self.port = free_port(self.host)
                continue
            except BaseException:
                kill(proc)
                self._proc = None
                raise
            self._started_once = True
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL (no-op when stopped)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, timeout, self.stop_signal)

    def kill(self) -> None:
        """SIGKILL, as in a crash."""
        proc, self._proc = self._proc, None
        if proc is not None:
            kill(proc)

    def restart(self) -> Self:
        """Stop and start again on the same port with the same data."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running pid={self.pid}" if self.is_running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"
