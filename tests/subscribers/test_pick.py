"""``pick(group)``: every policy, the panic threshold, reads away from the primary, members
going out and coming back, a whole group down, bus loss and re-admission ramps (FakeHealthClient:
the same table and plans as HealthClient; the real bus is in test_pick_bus.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from healthbus.protocol import Ramp, ramp_place
from healthbus.subscribers import DependencyUnavailable
from healthbus.subscribers.testing import FakeHealthClient

ABC = ("a", "b", "c")


def fleet(**states: str) -> FakeHealthClient:
    return FakeHealthClient({m: states.get(m, "healthy") for m in ABC})  # type: ignore[misc]


def spread(health: FakeHealthClient, n: int = 60, *, read_only: bool = False) -> Counter[str]:
    return Counter(health.pick("pg", read_only=read_only) for _ in range(n))


def test_round_robin_takes_each_usable_member_in_turn() -> None:
    health = fleet()
    health.set_group("pg", ABC)
    assert [health.pick("pg") for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    health.set_state("b", "unavailable")
    assert spread(health) == {"a": 30, "c": 30}
    health.set_state("b", "degraded")  # degraded is available: back in the rotation
    assert spread(health) == {"a": 20, "b": 20, "c": 20}


def test_primary_first_fails_over_in_member_order_and_back() -> None:
    health = fleet()
    health.set_group("pg", ABC, policy="primary-first")
    assert spread(health) == {"a": 60}
    health.set_state("a", "unavailable")
    assert spread(health) == {"b": 60}
    health.set_state("b", "recovering")
    assert spread(health) == {"c": 60}
    health.set_state("a", "healthy")
    assert spread(health) == {"a": 60}


def test_weighted_gives_each_its_share_interleaved() -> None:
    health = fleet()
    health.set_group("pg", ABC, policy="weighted", weights={"a": 3, "b": 2})
    assert spread(health, 60) == {"a": 30, "b": 20, "c": 10}
    first_six = [health.pick("pg") for _ in range(6)]
    assert first_six.count("a") == 3
    assert "aaa" not in "".join(first_six)  # smooth: never three of one in a row
    health.set_state("a", "unavailable")
    assert spread(health, 60) == {"b": 40, "c": 20}


def test_least_latency_shares_among_the_fastest() -> None:
    health = fleet()
    health.set_group("pg", ABC, policy="least-latency", latency_ms={"a": 9.0, "b": 2.0, "c": 2.4})
    assert spread(health) == {"b": 30, "c": 30}  # c is within 25 % of b; a is not
    health.set_state("b", "unavailable")
    assert spread(health) == {"c": 60}
    health.set_group("pg", ABC, policy="least-latency")  # no latency known yet: all usable ones
    assert spread(health) == {"a": 30, "c": 30}


def test_panic_threshold_spreads_over_every_member() -> None:
    health = fleet(b="unavailable", c="unavailable")
    health.set_group("pg", ABC, panic_threshold=0.5)
    # 1 of 3 usable < 50 %: panic, the load goes over all three rather than crushing a
    assert spread(health) == {"a": 20, "b": 20, "c": 20}
    health.set_state("b", "healthy")  # 2 of 3 >= 50 %: back to the usable ones
    assert spread(health) == {"a": 30, "b": 30}
    health.set_group("pg", ABC, panic_threshold=0.0)  # off: the one left takes all
    health.set_state("b", "unavailable")
    assert spread(health) == {"a": 60}


def test_panic_keeps_weights() -> None:
    health = fleet(b="unavailable", c="unavailable")
    health.set_group("pg", ABC, policy="weighted", weights={"a": 1, "b": 1, "c": 2}, panic_threshold=0.9)
    assert spread(health, 40) == {"a": 10, "b": 10, "c": 20}


def test_reads_never_land_on_the_primary_unless_allowed() -> None:
    health = fleet()
    health.set_group("pg", ABC, policy="primary-first", primary="a")
    assert spread(health) == {"a": 60}  # writes: the primary
    assert spread(health, read_only=True) == {"b": 60}  # reads: the first replica
    health.set_state("b", "unavailable")
    health.set_state("c", "unavailable")
    with pytest.raises(DependencyUnavailable) as err:
        health.pick("pg", read_only=True)
    assert err.value.target == "pg"
    assert "no replica" in err.value.reason
    assert health.pick("pg") == "a"  # writes still go
    health.set_group("pg", ABC, policy="primary-first", primary="a", reads_on_primary=True)
    assert spread(health, read_only=True) == {"a": 60}


def test_a_whole_group_down_and_an_unknown_group_raise() -> None:
    health = fleet(a="unavailable", b="unknown", c="unavailable")
    health.set_group("pg", ABC, panic_threshold=1.0)  # panic needs at least one usable member
    with pytest.raises(DependencyUnavailable, match=r"pg is unavailable: no member of group 'pg' is usable"):
        health.pick("pg")
    with pytest.raises(DependencyUnavailable, match="no group 'nope' is known"):
        health.pick("nope")
    health.set_state("c", "healthy")
    assert health.pick("pg") in ABC  # panic: 1 of 3 < 100 %
    assert health.group("pg") is not None
    assert set(health.groups()) == {"pg"}


def test_bus_loss_policy_applies_to_members() -> None:
    health = FakeHealthClient(dict.fromkeys(ABC, "healthy"), on_bus_loss="assume_unavailable")
    health.set_group("pg", ABC)
    assert health.pick("pg") == "a"
    health.set_bus_lost()
    with pytest.raises(DependencyUnavailable):
        health.pick("pg")
    health.set_bus_lost(False)
    assert spread(health) == {"a": 20, "b": 20, "c": 20}


def test_a_member_in_a_ramp_counts_from_this_instances_moment() -> None:
    name = next(f"svc-{i}" for i in range(10_000) if 0.5 <= ramp_place(f"svc-{i}", "b") < 0.51)
    health = FakeHealthClient({"a": "healthy", "b": "unavailable", "c": "healthy"}, instance=name)
    health.set_group("pg", ABC)
    assert spread(health) == {"a": 30, "c": 30}
    health.set_state("b", "healthy", ramp=Ramp(started_at=health.clock.now(), duration_s=2.0, from_share=0.0))
    assert spread(health) == {"a": 30, "c": 30}  # not yet this instance's moment
    health.clock.skip(1.1)
    assert spread(health) == {"a": 20, "b": 20, "c": 20}
    assert health.is_available("b")


def test_a_stale_group_message_is_ignored() -> None:
    health = fleet()
    first = health.set_group("pg", ABC, policy="primary-first")
    health.set_group("pg", ABC, policy="round-robin")
    assert health.deliver_group(first) is False
    assert health.group("pg").policy == "round-robin"  # type: ignore[union-attr]
