"""healthbus.example.toml at the repository root is a valid configuration covering every kind."""

from __future__ import annotations

from pathlib import Path

from healthbus.protocol import KINDS, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "healthbus.example.toml"


def test_example_config_loads_and_covers_every_kind() -> None:
    """The sample loads with an empty environment (fallbacks) and has one target of each kind."""
    config = load_config(EXAMPLE, env={})
    assert sorted({t.kind for t in config.targets}) == sorted(KINDS)
    orders = config.target("orders-db")
    assert orders.failure_threshold == 2
    assert config.target("redis-main").failure_threshold == 3
    group = config.group("orders")
    assert (group.members, group.primary, group.policy) == (
        ["orders-db", "orders-db-replica"],
        "orders-db",
        "least-latency",
    )
    search = config.target("search")
    assert (search.backoff.base, search.backoff.max, search.backoff.multiplier) == (2.0, 120.0, 2.0)


def test_example_config_takes_secrets_from_the_environment() -> None:
    """${REDIS_PASSWORD} is interpolated, and the target's repr never shows it."""
    config = load_config(EXAMPLE, env={"REDIS_PASSWORD": "pa55-word"})
    redis = config.target("redis-main")
    assert "pa55-word" in redis.url
    assert "pa55-word" not in repr(redis)


def test_example_config_is_accepted_by_a_probe_worker() -> None:
    """Every kind-specific option in the sample is one the probe checkers accept."""
    from healthbus.probes import ProbeWorker

    worker = ProbeWorker(load_config(EXAMPLE, env={}), worker_id="example")
    assert worker.worker_id == "example"
