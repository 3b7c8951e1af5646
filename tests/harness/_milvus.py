"""``milvus-lite server``: Milvus Lite behind a real gRPC port, like a remote Milvus."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from healthbus.bus.embedded import find_binary

from ._process import ChildServer

__all__ = ["MilvusServer"]


class MilvusServer(ChildServer):
    """A milvus-lite gRPC server with its data in ``data_dir/data``; ``.uri`` is ``http://HOST:PORT``.

    It takes about half a second to listen; ``start()`` waits for its port to accept.
    """

    name = "milvus-lite"
    ready_timeout = 30.0
    # SIGINT lets the Python server shut down through KeyboardInterrupt (it dies on SIGTERM).
    stop_signal: int = signal.SIGINT

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        super().__init__(data_dir, host=host, port=port)
        self.store_dir = self.data_dir / "data"

    @property
    def uri(self) -> str:
        """``http://HOST:PORT`` for ``MilvusClient(uri=...)``."""
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        """The milvus-lite command line (the console script, else ``python -m milvus_lite``)."""
        binary = find_binary("milvus-lite")
        head = [binary] if binary else [sys.executable, "-m", "milvus_lite"]
        return [*head, "server", "--data-dir", str(self.store_dir), "--host", self.host, "--port", str(self.port)]
