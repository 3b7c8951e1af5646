"""The pure state table: seq ordering, availability answers, features, bus-loss policy."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthbus.protocol import STATES
from healthbus.subscribers._state import StateTable
from tests.helpers import state_changed


def test_newer_seq_applies_older_and_duplicate_are_ignored() -> None:
    """An event with seq <= the known seq for its target changes nothing."""
    table = StateTable()
    assert table.apply(state_changed("redis-main", 2, "unavailable")) is not None
    assert table.apply(state_changed("redis-main", 2, "healthy")) is None
    assert table.apply(state_changed("redis-main", 1, "healthy")) is None
    assert table.states["redis-main"].state == "unavailable"
    assert table.available["redis-main"] is False
    assert table.apply(state_changed("redis-main", 3, "healthy")) is not None
    assert table.available["redis-main"] is True


@pytest.mark.parametrize(
    ("state", "expected"),
    [("healthy", True), ("degraded", True), ("unknown", False), ("unavailable", False), ("recovering", False)],
)
def test_availability_per_state(state: str, expected: bool) -> None:
    """Only healthy and degraded are available."""
    table = StateTable()
    table.apply(state_changed("pg", 1, state))  # type: ignore[arg-type]
    assert table.available["pg"] is expected
    assert table.states["pg"].available is expected


def test_unknown_target_is_not_available() -> None:
    """A target never heard of defaults to not available."""
    table = StateTable()
    assert table.available.get("nope", table.default_available) is False


def test_feature_follows_every_provider() -> None:
    """A feature is available only while every target providing it is."""
    table = StateTable()
    table.apply(state_changed("redis-a", 1, "healthy", features=["cache"]))
    table.apply(state_changed("redis-b", 1, "degraded", features=["cache", "rate-limit"]))
    assert table.features_ok == {"cache": True, "rate-limit": True}
    table.apply(state_changed("redis-b", 2, "recovering", features=["cache", "rate-limit"]))
    assert table.features_ok == {"cache": False, "rate-limit": False}
    # redis-b stops providing cache: only redis-a counts for it now.
    table.apply(state_changed("redis-b", 3, "unavailable", features=["rate-limit"]))
    assert table.features_ok == {"cache": True, "rate-limit": False}
    table.apply(state_changed("redis-b", 4, "unavailable", features=[]))
    assert "rate-limit" not in table.features_ok


def test_stale_after_time_with_keep_policy_keeps_answers() -> None:
    """keep: states go stale after stale_after but answers stay the last known ones."""
    table = StateTable(stale_after=10, policy="keep")
    table.apply(state_changed("a", 1, "healthy"))
    table.apply(state_changed("b", 1, "unavailable"))
    assert table.mark_lost(100.0) is True  # connected -> lost is a change (not yet stale)
    assert table.mark_lost(101.0) is False  # still lost: no change
    assert table.tick(109.9) is False
    assert table.states["a"].stale is False
    assert table.tick(110.0) is True
    assert table.states["a"].stale
    assert table.states["b"].stale
    assert table.available == {"a": True, "b": False}
    assert table.default_available is False
    assert table.mark_restored() is True
    assert not table.states["a"].stale


@pytest.mark.parametrize(("policy", "answer"), [("assume_available", True), ("assume_unavailable", False)])
def test_stale_policies_override_every_answer(policy: str, answer: bool) -> None:
    """assume_* policies answer the same for every target and feature once stale, and undo on restore."""
    table = StateTable(stale_after=5, policy=policy)  # type: ignore[arg-type]
    table.apply(state_changed("a", 1, "healthy", features=["f"]))
    table.apply(state_changed("b", 1, "unavailable", features=["g"]))
    table.mark_lost(0.0)
    table.tick(5.0)
    assert table.available == {"a": answer, "b": answer}
    assert table.features_ok == {"f": answer, "g": answer}
    assert table.default_available is answer
    assert table.default_feature is answer
    # An event arriving while stale (e.g. while catching up) is still answered by the policy.
    table.apply(state_changed("c", 1, "healthy"))
    assert table.available["c"] is answer
    table.mark_restored()
    assert table.available == {"a": True, "b": False, "c": True}
    assert table.features_ok == {"f": True, "g": False}
    assert table.default_available is False
    assert table.default_feature is True


def test_every_status_change_is_reported_including_recovery_before_stale() -> None:
    """Lost, a new reason, and back (before stale_after) each count as a change; nothing else does."""
    table = StateTable(stale_after=30)
    assert table.mark_restored() is False  # already connected
    assert table.mark_lost(0.0, reason="disconnected") is True
    assert table.status(1.0).reason == "disconnected"
    assert table.mark_lost(1.0, reason="disconnected") is False
    assert table.mark_lost(2.0, reason="stream missing") is True
    assert table.mark_restored() is True
    status = table.status(3.0)
    assert (status.connected, status.stale, status.reason) == (True, False, None)


def test_mark_lost_immediately_is_stale_at_once() -> None:
    """With nothing loaded, the policy applies at once."""
    table = StateTable(stale_after=30, policy="assume_available")
    assert table.mark_lost(0.0, immediately=True) is True
    assert table.default_available is True
    assert table.status(3.0).lost_for == 3.0
    assert table.status(3.0).connected is False


def test_invalid_settings_are_refused() -> None:
    """A bad policy or negative stale_after raises with the choices named."""
    with pytest.raises(ValueError, match="assume_available"):
        StateTable(policy="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stale_after"):
        StateTable(stale_after=-1)


@given(st.lists(st.tuples(st.integers(1, 20), st.sampled_from(STATES)), max_size=60))
def test_state_is_always_the_highest_seq_seen(events: list[tuple[int, str]]) -> None:
    """Whatever the order or duplication, the table holds the highest seq seen and answers from it."""
    table = StateTable()
    best: tuple[int, str] | None = None
    for seq, state in events:
        table.apply(state_changed("t", seq, state))  # type: ignore[arg-type]
        if best is None or seq > best[0]:
            best = (seq, state)
    if best is None:
        assert "t" not in table.states
    else:
        assert table.states["t"].seq == best[0]
        assert table.states["t"].state == best[1]
        assert table.available["t"] is (best[1] in ("healthy", "degraded"))


def test_retired_target_is_forgotten_with_its_features() -> None:
    """A retired event removes the target (and it stops counting for its features); once."""
    table = StateTable()
    table.apply(state_changed("redis-a", 1, "healthy", features=["cache"]))
    table.apply(state_changed("redis-b", 1, "unavailable", features=["cache"]))
    assert table.features_ok == {"cache": False}
    retired = msgspec.structs.replace(state_changed("redis-b", 2, "unknown", features=["cache"]), retired=True)
    gone = table.apply(retired)
    assert gone is not None
    assert gone.state == "unknown"
    assert "redis-b" not in table.states
    assert "redis-b" not in table.available
    assert table.features_ok == {"cache": True}
    assert table.apply(retired) is None  # delivered once
    # Configured again later: its next seq is a new target.
    assert table.apply(state_changed("redis-b", 3, "healthy", features=["cache"])) is not None
