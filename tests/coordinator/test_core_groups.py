"""Group state from member states (``coordinator/_core/_groups.py``), each rule of
docs/coordinator.md ("Groups") pinned on the pure functions: no server, times passed in.

The service around them is tested in test_groups.py; this file is in the mutation-testing
selection (``[tool.mutmut]`` in pyproject.toml), which runs only pure tests.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from healthbus.coordinator._core import group_event, supersede
from healthbus.coordinator._core._groups import (
    LATENCY_ALPHA,
    LATENCY_EVERY_S,
    LATENCY_MIN_MS,
    LATENCY_SHIFT,
    Latencies,
)
from healthbus.protocol import GroupChanged, GroupConfig, State
from tests.helpers import probe_result

T0 = datetime(2026, 12, 1, tzinfo=UTC)
PG = GroupConfig(name="pg", members=["a", "b", "c"], min_healthy=2)
UP: dict[str, State] = {"a": "healthy", "b": "healthy", "c": "healthy"}


def first(group: GroupConfig = PG, states: dict[str, State] | None = None, **latency: float) -> GroupChanged:
    event = group_event(group, UP if states is None else states, latency, None, T0, mono=0.0, last_mono=None)
    assert event is not None
    return event


@pytest.mark.parametrize(
    ("state", "available"),
    [("healthy", True), ("degraded", True), ("recovering", False), ("unavailable", False), ("unknown", False)],
)
def test_a_member_is_in_while_healthy_or_degraded(state: State, available: bool) -> None:
    """A member is in while its own state is healthy or degraded, out otherwise."""
    event = first(states={**UP, "b": state})
    assert [m.available for m in event.members] == [True, available, True]
    assert event.available == (3 if available else 2)


def test_the_group_is_healthy_from_min_healthy_members_in_degraded_below_unavailable_at_none() -> None:
    """healthy with at least min_healthy in, degraded with fewer, unavailable with none;
    the reason counts them and names the members out, in order."""
    two = first(states={"a": "healthy", "b": "unknown", "c": "degraded"})
    assert (two.state, two.available, two.reason) == ("healthy", 2, "2/3 members in (min_healthy 2); out: b")
    one = first(states={"a": "unavailable", "b": "healthy", "c": "unknown"})
    assert (one.state, one.reason) == ("degraded", "1/3 members in (min_healthy 2); out: a, c")
    none = first(states={})  # a member with no state yet is unknown: out
    assert (none.state, none.available) == ("unavailable", 0)
    assert [m.state for m in none.members] == ["unknown"] * 3
    assert first().reason == "3/3 members in (min_healthy 2)"  # nobody out: no list


def test_the_first_event_carries_the_whole_group() -> None:
    """seq 1, previous unknown, the group's settings, every member with its weight (1 by
    default) and its latency (rounded to the microsecond)."""
    group = GroupConfig(
        name="pg",
        members=["a", "b", "c"],
        policy="weighted",
        weights={"b": 3},
        min_healthy=2,
        panic_threshold=0.5,
        primary="a",
        reads_on_primary=True,
    )
    event = first(group, a=1.23456789)
    assert (event.group, event.seq, event.previous, event.at) == ("pg", 1, "unknown", T0)
    assert (event.policy, event.min_healthy, event.panic_threshold) == ("weighted", 2, 0.5)
    assert (event.primary, event.reads_on_primary) == ("a", True)
    members = [(m.target, m.weight, m.latency_ms) for m in event.members]
    assert members == [("a", 1, 1.235), ("b", 3, None), ("c", 1, None)]


def test_an_event_is_due_when_the_group_or_a_member_changes_state() -> None:
    """The next event follows the last one (seq + 1, previous = its state)."""
    last = first()
    assert group_event(PG, UP, {}, last, T0, mono=1.0, last_mono=0.0) is None  # nothing changed
    member = group_event(PG, {**UP, "c": "degraded"}, {}, last, T0, mono=1.0, last_mono=0.0)
    assert member is not None  # the member's state changed, not the group's
    assert (member.seq, member.previous, member.state) == (2, "healthy", "healthy")
    down = group_event(PG, {"a": "healthy"}, {}, member, T0, mono=2.0, last_mono=1.0)
    assert down is not None
    assert (down.seq, down.previous, down.state) == (3, "healthy", "degraded")


@pytest.mark.parametrize(
    "change",
    [
        {"policy": "primary-first"},
        {"min_healthy": 1},
        {"panic_threshold": 0.3},
        {"primary": "b"},
        {"reads_on_primary": True},
        {"members": ["a", "c", "b"]},
        {"weights": {"c": 2}},
    ],
)
def test_an_event_is_due_when_the_groups_settings_change(change: dict[str, Any]) -> None:
    """A reload that changes the group (policy, min_healthy, panic threshold, primary,
    reads on primary, the members or their order, a weight) is news, with no wait."""
    last = first()
    settings: dict[str, Any] = {"name": "pg", "members": ["a", "b", "c"], "min_healthy": 2, **change}
    event = group_event(GroupConfig(**settings), UP, {}, last, T0, mono=0.1, last_mono=0.0)
    assert event is not None
    assert event.seq == 2


def test_a_member_added_to_the_group_is_news() -> None:
    last = first()
    bigger = GroupConfig(name="pg", members=["a", "b", "c", "d"], min_healthy=2)
    event = group_event(bigger, {**UP, "d": "healthy"}, {}, last, T0, mono=0.1, last_mono=0.0)
    assert event is not None
    assert [m.target for m in event.members] == ["a", "b", "c", "d"]


def test_latency_is_news_when_it_moved_by_more_than_the_shift_and_the_minimum() -> None:
    """Moved: by more than LATENCY_SHIFT of what was published and more than
    LATENCY_MIN_MS; exactly at the bound is not news."""
    assert (LATENCY_SHIFT, LATENCY_MIN_MS) == (0.25, 1.0)
    later = {"mono": 100.0, "last_mono": 0.0}
    big = first(a=100.0)
    assert group_event(PG, UP, {"a": 125.0}, big, T0, **later) is None  # 25 %: at the bound
    assert group_event(PG, UP, {"a": 75.0}, big, T0, **later) is None  # down by 25 % too
    assert group_event(PG, UP, {"a": 125.5}, big, T0, **later) is not None
    assert group_event(PG, UP, {"a": 74.5}, big, T0, **later) is not None  # down counts as well
    small = first(a=2.0)  # 25 % of 2 ms is below the 1 ms minimum
    assert group_event(PG, UP, {"a": 3.0}, small, T0, **later) is None
    assert group_event(PG, UP, {"a": 1.0}, small, T0, **later) is None
    assert group_event(PG, UP, {"a": 3.25}, small, T0, **later) is not None


def test_a_latency_lost_or_a_first_latency() -> None:
    """A member that got its first latency is news; one whose latency is gone is not."""
    later = {"mono": 100.0, "last_mono": 0.0}
    none = first()
    assert group_event(PG, UP, {"b": 0.5}, none, T0, **later) is not None
    some = first(a=10.0)
    assert group_event(PG, UP, {}, some, T0, **later) is None


def test_latency_alone_re_announces_a_group_at_most_once_per_latency_every() -> None:
    """Latency alone: at most once per LATENCY_EVERY_S since the last event this
    coordinator made (one it did not make, last_mono None, does not hold it back)."""
    last = first(a=10.0)
    moved = {"a": 20.0}
    assert group_event(PG, UP, moved, last, T0, mono=LATENCY_EVERY_S - 0.001, last_mono=0.0) is None
    assert group_event(PG, UP, moved, last, T0, mono=LATENCY_EVERY_S, last_mono=0.0) is not None
    assert group_event(PG, UP, moved, last, T0, mono=0.1, last_mono=None) is not None
    assert group_event(PG, UP, moved, last, T0, mono=104.0, last_mono=100.0) is None  # 4 s since the last
    # A state change is not held back by the latency limit.
    assert group_event(PG, {**UP, "a": "degraded"}, moved, last, T0, mono=0.1, last_mono=0.0) is not None


def test_recent_latency_is_a_moving_average_of_passing_and_warn_results() -> None:
    """new = old + LATENCY_ALPHA × (latest − old), from the first such result on; failures
    and targets in no group are not taken in."""
    assert LATENCY_ALPHA == 0.3
    latencies = Latencies(["a", "b"])
    assert latencies.ms == {}
    assert latencies.observe(probe_result("a", "pass", latency_ms=10.0))
    assert latencies.ms == {"a": 10.0}
    assert latencies.observe(probe_result("a", "warn", latency_ms=20.0))
    assert latencies.observe(probe_result("a", "pass", latency_ms=3.0))
    assert latencies.ms["a"] == pytest.approx(13.0 + 0.3 * (3.0 - 13.0))
    assert not latencies.observe(probe_result("b", "fail", latency_ms=0.1))
    assert "b" not in latencies.ms
    assert not latencies.observe(probe_result("x", "pass", latency_ms=5.0))
    assert Latencies().watched == frozenset()


def test_event_times_are_the_ones_passed_in() -> None:
    at = T0 + timedelta(seconds=42)
    event = group_event(PG, UP, {}, None, at, mono=0.0, last_mono=None)
    assert event is not None
    assert event.at == at


def test_a_picture_replacing_one_never_sent_keeps_its_seq_and_previous() -> None:
    """supersede(): the wire counts one per message even when a picture is replaced before it was sent."""
    states: dict[str, State] = {"a": "healthy", "b": "healthy", "c": "unavailable"}
    sent = group_event(PG, states, {}, None, T0, mono=0.0, last_mono=None)
    assert sent is not None
    unsent = group_event(PG, {**states, "b": "unavailable"}, {}, sent, T0, mono=1.0, last_mono=0.0)
    assert unsent is not None
    newer = group_event(PG, {**states, "b": "unavailable", "a": "unavailable"}, {}, unsent, T0, mono=1.0, last_mono=1.0)
    assert newer is not None
    assert (newer.seq, newer.previous, newer.state) == (3, "degraded", "unavailable")
    merged = supersede(newer, unsent)
    assert (merged.seq, merged.previous, merged.state, merged.available) == (2, "healthy", "unavailable", 0)
    assert supersede(newer, None) is newer
