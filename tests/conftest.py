"""Registers the real-server harness fixtures (tests/harness) for every test."""

from tests.harness.fixtures import (
    nats_server,
    postgres_server,
    postgres_server_factory,
    postgres_template,
    redis_server,
    redis_server_factory,
)

__all__ = [
    "nats_server",
    "postgres_server",
    "postgres_server_factory",
    "postgres_template",
    "redis_server",
    "redis_server_factory",
]
