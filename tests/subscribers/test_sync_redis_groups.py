"""SyncHealthyRedisGroup (redis-py's synchronous client) on three real redis-servers: the
rules of HealthyRedisGroup — reads spread by pick(), fail-over on a connection error, a
member stopped and restarted, the whole group down — and the same commands as its async face."""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from healthbus.subscribers import DependencyUnavailable
from healthbus.subscribers.redis import HealthyRedisGroup, SyncHealthyRedisGroup
from healthbus.subscribers.testing import FakeHealthClient
from tests.harness import RedisServer

pytestmark = pytest.mark.redis

MEMBERS = ("r-a", "r-b", "r-c")


Setup = tuple[dict[str, RedisServer], dict[str, Redis], FakeHealthClient]


@pytest.fixture
def setup(redis_server_factory: Callable[..., RedisServer]) -> Iterator[Setup]:
    """Three servers, each holding ``whoami`` = its member name; every member healthy."""
    servers = {m: redis_server_factory() for m in MEMBERS}
    clients = {
        m: Redis.from_url(s.url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
        for m, s in servers.items()
    }
    for member, client in clients.items():
        client.set("whoami", member)
    health = FakeHealthClient(dict.fromkeys(MEMBERS, "healthy"))
    try:
        yield servers, clients, health
    finally:
        for client in clients.values():
            client.close()


def reads(routed: SyncHealthyRedisGroup, n: int = 20) -> Counter[str]:
    return Counter([routed.get("whoami").decode() for _ in range(n)])


def test_reads_spread_and_writes_go_to_the_primary(setup: Setup) -> None:
    """Reads by pick(read_only=True), never on the primary unless the group allows it; writes on the primary."""
    _servers, clients, health = setup
    health.set_group("rg", MEMBERS, primary="r-a")
    routed = SyncHealthyRedisGroup(clients, health, "rg", primary="r-a", local_cooldown=60)
    assert reads(routed) == {"r-b": 10, "r-c": 10}
    assert routed.set("k", "v")
    assert routed.members["r-a"].redis.get("k") == b"v"
    assert routed.members["r-b"].redis.get("k") is None
    assert routed.delete("k") == 1
    health.set_group("rg", MEMBERS, primary="r-a", reads_on_primary=True, policy="weighted", weights={"r-a": 2})
    assert reads(routed, 40) == {"r-a": 20, "r-b": 10, "r-c": 10}
    assert {m: c["reads"] for m, c in routed.metrics().items()} == {"r-a": 20, "r-b": 20, "r-c": 20}


def test_a_member_stopped_fails_over_and_comes_back_when_restarted(setup: Setup) -> None:
    """A dead replica: one read fails over before any verdict; after the verdict none go there; restarted and
    healthy again, it takes its share."""
    servers, clients, health = setup
    health.set_group("rg", MEMBERS, primary="r-a")
    routed = SyncHealthyRedisGroup(clients, health, "rg", primary="r-a", local_cooldown=60)
    servers["r-b"].stop()
    assert reads(routed) == {"r-c": 20}  # the read that met the dead r-b was answered by r-c
    assert routed.failovers == 1
    assert routed.metrics()["r-b"]["local_trips"] == 1
    assert routed.metrics()["r-b"]["fallback_calls"] == 1
    health.set_state("r-b", "unavailable")
    assert reads(routed) == {"r-c": 20}
    assert routed.failovers == 1
    servers["r-b"].start()  # an empty server again (no persistence): seed it as before
    clients["r-b"].set("whoami", "r-b")
    health.set_state("r-b", "healthy")  # a newer verdict: the local trip ends at once
    assert reads(routed) == {"r-b": 10, "r-c": 10}
    assert routed.metrics()["r-a"]["redis_calls"] == 0  # never a read on the primary


def test_the_whole_group_down_reads_locally_and_a_write_raises(setup: Setup) -> None:
    """No member usable: a read is answered from the shared local cache (what this process last read), a
    write on a group without a primary raises DependencyUnavailable naming the group; restarted, all return."""
    servers, clients, health = setup
    health.set_group("rg", MEMBERS)  # no primary: round-robin over all three
    routed = SyncHealthyRedisGroup(clients, health, "rg", local_cooldown=5)
    assert reads(routed, 3) == {"r-a": 1, "r-b": 1, "r-c": 1}
    for server in servers.values():
        server.stop()
    # Before any verdict: the read fails on every member in turn, then the cache answers.
    assert routed.get("whoami") == b"r-c"
    assert routed.failovers == 3
    assert [routed.metrics()[m]["local_trips"] for m in MEMBERS] == [1, 1, 1]
    with pytest.raises(DependencyUnavailable) as raised:
        routed.set("k", "v")
    assert raised.value.target == "rg"
    for member in MEMBERS:
        health.set_state(member, "unavailable")
    assert routed.get("whoami") == b"r-c"
    assert routed.failovers == 3  # with the verdict, nothing is tried
    with pytest.raises(DependencyUnavailable):
        routed.delete("k")
    for member, server in servers.items():
        server.start()
        clients[member].set("whoami", member)
        health.set_state(member, "healthy")
    assert reads(routed, 3) == {"r-a": 1, "r-b": 1, "r-c": 1}
    assert routed.set("k", "v")


def test_both_faces_expose_the_same_commands() -> None:
    """SyncHealthyRedisGroup has exactly HealthyRedisGroup's public names, with the same signatures."""
    public = {n for n in dir(HealthyRedisGroup) if not n.startswith("_")}
    assert public == {n for n in dir(SyncHealthyRedisGroup) if not n.startswith("_")}
    for name in ("get", "hget", "exists", "set", "delete"):
        assert inspect.iscoroutinefunction(getattr(HealthyRedisGroup, name))
        assert not inspect.iscoroutinefunction(getattr(SyncHealthyRedisGroup, name))
        assert inspect.signature(getattr(HealthyRedisGroup, name)) == inspect.signature(
            getattr(SyncHealthyRedisGroup, name)
        )
    init: Any = inspect.signature(SyncHealthyRedisGroup.__init__).parameters
    assert list(init) == list(inspect.signature(HealthyRedisGroup.__init__).parameters)
