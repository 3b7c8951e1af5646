"""Rendezvous hashing of targets over live workers, and membership from heartbeats."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from healthbus.probes import Membership, assigned, owners
from healthbus.probes._sharding import score

TARGETS = [f"target-{i}" for i in range(400)]
WORKERS = ["w1", "w2", "w3", "w4", "w5"]


def _table(members: list[str], replicas: int) -> dict[str, set[str]]:
    return {t: set(owners(t, members, replicas)) for t in TARGETS}


def test_scores_are_stable() -> None:
    """Scores do not depend on the process (no per-process hash seed)."""
    assert score("redis-main", "w1") == score("redis-main", "w1")
    assert score("redis-main", "w1") == 0xD6D96327634D6AF7  # pinned: the same in every process and release
    assert score("redis-main", "w1") != score("redis-main", "w2")


def test_every_target_gets_replicas_owners() -> None:
    """Each target is checked by exactly `replicas` workers (all of them when fewer are live)."""
    for t, ws in _table(WORKERS, 2).items():
        assert len(ws) == 2, t
    assert all(len(ws) == 1 for ws in _table(["w1"], 3).values())


def test_load_is_spread() -> None:
    """No worker gets far more than its share."""
    counts = dict.fromkeys(WORKERS, 0)
    for ws in _table(WORKERS, 2).values():
        for w in ws:
            counts[w] += 1
    share = len(TARGETS) * 2 / len(WORKERS)
    assert all(0.7 * share < c < 1.3 * share for c in counts.values()), counts


def test_a_dead_worker_moves_only_its_targets() -> None:
    """When a worker dies, targets it did not check keep their owners."""
    before = _table(WORKERS, 2)
    after = _table([w for w in WORKERS if w != "w3"], 2)
    for t in TARGETS:
        if "w3" not in before[t]:
            assert before[t] == after[t]
        else:
            assert before[t] - {"w3"} <= after[t]  # the surviving owner keeps it


def test_a_joining_worker_takes_only_what_it_wins() -> None:
    """When a worker joins, a target changes hands only if the new worker now owns it."""
    before = _table(WORKERS, 2)
    after = _table([*WORKERS, "w6"], 2)
    moved = [t for t in TARGETS if before[t] != after[t]]
    assert moved
    assert all("w6" in after[t] for t in moved)
    assert len(moved) < len(TARGETS) * 0.6


@given(st.sets(st.text(min_size=1, max_size=8), min_size=1, max_size=8), st.integers(1, 4))
def test_assigned_matches_owners(members: set[str], replicas: int) -> None:
    """Every worker's own view of its share agrees with the global table."""
    me = sorted(members)[0]
    mine = assigned(TARGETS[:50], members, replicas, me)
    assert mine == {t for t in TARGETS[:50] if me in owners(t, members, replicas)}


def test_membership_from_heartbeats() -> None:
    """A member is live while heard within 3 heartbeats; stopping drops it at once; self is always live."""
    m = Membership("me", heartbeat=2.0)
    assert m.live() == ["me"]
    assert m.heard("w2", 0.0) is True
    assert m.heard("w2", 1.0) is False
    assert m.heard("me", 1.0) is False
    assert m.live() == ["me", "w2"]
    assert m.expire(7.0) is False
    assert m.expire(7.1) is True
    assert m.live() == ["me"]
    m.heard("w3", 10.0)
    assert m.heard("w3", 10.5, stopping=True) is True
    assert m.live() == ["me"]
    m.heard("slow", 20.0, heartbeat=10.0)  # a member with a slower heartbeat lives 3 of its own periods
    assert m.expire(49.0) is False
    assert m.expire(50.5) is True
