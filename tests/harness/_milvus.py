"""``milvus-lite server``: Milvus Lite behind a real gRPC port, like a remote Milvus."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from ._process import ChildServer

__all__ = ["MilvusServer"]

# The server is a Python program that shuts down gracefully only through KeyboardInterrupt,
# and Python raises that on SIGINT only when SIGINT was not ignored at its start. A suite
# started as a background job of a non-interactive shell (`bash -c 'pytest ... &'`, as CI
# runners and nohup-style scripts do) runs with SIGINT ignored, every child inherits that,
# and the server then ignored our stop signal until stop_timeout's SIGKILL (10 s a stop).
# So the server starts with Python's own SIGINT handler, whatever we inherited.
_SERVE = (
    "import signal, sys\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "from milvus_lite.cmdline import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


class MilvusServer(ChildServer):
    """A milvus-lite gRPC server with its data in ``data_dir/data``; ``.uri`` is ``http://HOST:PORT``.

    It takes about half a second to listen; ``start()`` waits for its port to accept.
    """

    name = "milvus-lite"
    ready_timeout = 30.0
    # SIGINT lets the Python server shut down through KeyboardInterrupt (it dies on SIGTERM);
    # argv() makes sure the server handles it even when this process ignores SIGINT.
    stop_signal: int = signal.SIGINT

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        super().__init__(data_dir, host=host, port=port)
        self.store_dir = self.data_dir / "data"

    @property
    def uri(self) -> str:
        """``http://HOST:PORT`` for ``MilvusClient(uri=...)``."""
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        """The ``milvus-lite server`` command line, run by this interpreter with SIGINT handled."""
        args = ["server", "--data-dir", str(self.store_dir), "--host", self.host, "--port", str(self.port)]
        return [sys.executable, "-c", _SERVE, *args]
