"""Real-server test harness: fixtures that start nats-server, redis-server, PostgreSQL,
milvus-lite and an Elasticsearch stand-in on free ports, for one test each.

Fixtures (available to every test under ``tests/`` via ``tests/conftest.py``):
``nats_server``, ``nc`` (a client of it), ``nats_cluster``, ``redis_server``,
``redis_server_factory``, ``postgres_server``, ``postgres_server_factory``, ``milvus_server``,
``es_server``. Helpers: ``free_port()``, ``require(name, reason)``.
"""

from healthbus.bus.embedded import EmbeddedNats, ServerStartError

from ._es import FakeElasticsearch
from ._milvus import MilvusServer
from ._nats_cluster import NatsCluster
from ._postgres import PostgresServer, PostgresTemplate
from ._process import ChildServer
from ._redis import RedisServer
from ._util import free_port, in_ci, require

__all__ = [
    "ChildServer",
    "EmbeddedNats",
    "FakeElasticsearch",
    "MilvusServer",
    "NatsCluster",
    "PostgresServer",
    "PostgresTemplate",
    "RedisServer",
    "ServerStartError",
    "free_port",
    "in_ci",
    "require",
]
