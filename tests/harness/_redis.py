"""A throwaway ``redis-server`` on a free port, persistence off."""

from __future__ import annotations

from pathlib import Path

from healthbus.bus.embedded import find_binary

from ._process import ChildServer

__all__ = ["RedisServer"]


class RedisServer(ChildServer):
    """``redis-server`` with its log in ``data_dir``; ``password`` turns on ``requirepass``."""

    name = "redis-server"

    def __init__(
        self, data_dir: Path, *, host: str = "127.0.0.1", port: int | None = None, password: str | None = None
    ) -> None:
        super().__init__(data_dir, host=host, port=port)
        self.password = password
        self.extra_args: list[str] = []
        """More ``--option value`` arguments for the next start."""

    @property
    def url(self) -> str:
        """``redis://[:password@]HOST:PORT/0``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def argv(self) -> list[str]:
        """The redis-server command line (no config file: everything on the command line)."""
        binary = find_binary("redis-server") or "redis-server"
        argv = [
            binary, "--port", str(self.port), "--bind", self.host, "--dir", str(self.data_dir),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "",
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        return argv + self.extra_args
