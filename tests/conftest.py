"""Registers the real-server harness fixtures (tests/harness) for every test."""

from tests.harness.fixtures import (
    es_server,
    milvus_server,
    nats_cluster,
    nats_server,
    nc,
    postgres_server,
    postgres_server_factory,
    postgres_template,
    redis_server,
    redis_server_factory,
)

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
