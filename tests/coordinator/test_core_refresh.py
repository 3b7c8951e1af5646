"""The refresh of an unchanged state (so the state stream's retention never drops it), with explicit times."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from healthbus.coordinator._core import Decider
from healthbus.protocol import BackoffSettings, Duration, Evidence, StateChanged, is_refresh
from tests.helpers import state_changed

from ._sim import T0, Sim, at, target


def healthy_sim(refresh_after: float = 100.0) -> Sim:
    """A target announced healthy at t=2 (seq 1), fed a passing result every 5 s up to t=97."""
    sim = Sim(refresh_after=refresh_after)
    sim.feed("pass")
    (first,) = sim.feed("pass")
    assert (first.seq, first.state, first.at) == (1, "healthy", T0 + timedelta(seconds=2))
    for _ in range(19):
        assert sim.feed("pass", dt=5.0) == []
    assert sim.t == 97.0
    return sim


def test_unchanged_state_is_refreshed_at_refresh_after() -> None:
    """refresh_after after the last event, the same state is re-announced: next seq, previous == state."""
    sim = healthy_sim()
    first = sim.last()
    (refresh,) = sim.feed("pass", dt=5.0)  # the tick at t=102 runs before the result
    assert refresh.at == T0 + timedelta(seconds=102)
    assert (refresh.seq, refresh.previous, refresh.state, refresh.breaker) == (2, "healthy", "healthy", "closed")
    assert (refresh.attempt, refresh.retry_at, refresh.flapping, refresh.failures) == (0, None, False, 0)
    assert refresh.features == first.features
    assert refresh.evidence["p1"].at == T0 + timedelta(seconds=97)  # current evidence, not the first event's
    assert (refresh.unchanged_since, refresh.reason) == (first.at, first.reason)
    assert first.unchanged_since is None
    assert is_refresh(refresh)
    assert not is_refresh(first)
    assert sim.decider.current("db") == refresh


def test_second_refresh_keeps_the_original_since() -> None:
    """A refresh of a refresh still names the time and reason of the real change (no nesting)."""
    sim = healthy_sim()
    first = sim.last()
    sim.feed("pass", dt=5.0)
    for _ in range(19):
        assert sim.feed("pass", dt=5.0) == []
    (again,) = sim.feed("pass", dt=5.0)
    assert (again.seq, again.at) == (3, T0 + timedelta(seconds=202))
    assert (again.unchanged_since, again.reason) == (first.at, first.reason)


def test_real_transition_resets_the_refresh_clock() -> None:
    """After a real change the next refresh is refresh_after later; a forced-open target refreshes without traffic."""
    sim = Sim(refresh_after=100.0)
    sim.feed("pass")
    sim.feed("pass")  # healthy at t=2
    assert sim.advance(10.0) == []  # t=12, still live
    (forced,) = sim.control("force-open", reason="maintenance")
    assert (forced.seq, forced.at) == (2, T0 + timedelta(seconds=12))
    assert sim.advance(99.0) == []  # t=111: the clock restarted at 12, not 2
    (refresh,) = sim.advance(1.0)  # t=112
    assert (refresh.seq, refresh.previous, refresh.state, refresh.breaker) == (
        3,
        "unavailable",
        "unavailable",
        "forced_open",
    )
    assert refresh.reason == "forced open by operator: maintenance"
    assert refresh.unchanged_since == T0 + timedelta(seconds=12)
    assert [e.seq for e in sim.advance(100.0)] == [4]  # t=212, no traffic at all


def test_open_breaker_refresh_keeps_retry_at_and_attempt() -> None:
    """An open breaker refreshed before retry_at keeps attempt, retry_at and failures; the trials come from retry_at."""
    sim = Sim(target(trial_interval=Duration(500.0)), refresh_after=100.0)
    for outcome in ("pass", "pass", "fail", "fail"):
        sim.feed(outcome)
    (opened,) = sim.feed("fail")  # t=5
    assert (opened.breaker, opened.attempt, opened.retry_at) == ("open", 1, T0 + timedelta(seconds=505))
    (refresh,) = sim.advance(100.0)  # t=105
    assert (refresh.seq, refresh.previous, refresh.state, refresh.breaker) == (3, "unavailable", "unavailable", "open")
    assert (refresh.attempt, refresh.retry_at, refresh.failures) == (1, opened.retry_at, opened.failures)
    assert sim.advance(100.0)[0].seq == 4  # t=205: refreshed again
    sim.advance(100.0)  # t=305
    sim.advance(100.0)  # t=405
    assert sim.feed("pass", dt=99.0) == []  # t=504: before retry_at, evidence only
    refresh, back = sim.feed("pass", dt=1.5)  # t=505.5: refreshed at 505, and this result is a passing trial
    assert refresh.seq == 7
    assert (back.state, back.breaker, back.previous) == ("healthy", "closed", "unavailable")
    assert back.seq == 8


def test_restored_old_event_is_refreshed_at_the_first_tick() -> None:
    """A restored event older than refresh_after: restore emits nothing, the first tick re-announces it."""
    ev = StateChanged(target="db", seq=2, at=T0, previous="unknown", state="healthy", breaker="closed", reason="x")
    d = Decider([target()], rng=random.Random(0), now=at(1000.0), refresh_after=600.0)
    assert d.restore(ev, at(1000.0)) is True
    next_deadline = d.next_deadline()
    assert next_deadline is not None
    assert next_deadline <= 1000.0
    (refresh,) = d.tick(at(1000.0))
    assert (refresh.seq, refresh.previous, refresh.state, refresh.breaker) == (3, "healthy", "healthy", "closed")
    assert (refresh.unchanged_since, refresh.reason) == (T0, "x")
    assert d.tick(at(1001.0)) == []


def test_restored_recent_event_counts_its_age() -> None:
    """A restored event refresh_after old by its ``at`` (not by the restore) is refreshed then, reason kept."""
    ev = StateChanged(
        target="db",
        seq=4,
        at=T0 + timedelta(seconds=900),
        previous="healthy",
        state="unavailable",
        breaker="forced_open",
        reason="forced open by operator: upgrade",
    )
    d = Decider([target()], rng=random.Random(0), now=at(1000.0), refresh_after=600.0)
    d.restore(ev, at(1000.0))
    assert d.tick(at(1000.0)) == []
    assert d.tick(at(1499.0)) == []
    (refresh,) = d.tick(at(1500.0))
    assert (refresh.seq, refresh.breaker) == (5, "forced_open")
    assert (refresh.unchanged_since, refresh.reason) == (ev.at, "forced open by operator: upgrade")
    # restoring that refresh later keeps the original time and reason, and the operator's reason
    d2 = Decider([target()], rng=random.Random(0), now=at(3000.0), refresh_after=600.0)
    d2.restore(refresh, at(3000.0))
    (again,) = d2.tick(at(3000.0))
    assert (again.seq, again.unchanged_since, again.reason) == (6, ev.at, refresh.reason)
    (trial,) = d2.control("reset", "db", "done", at(3001.0))
    assert trial.breaker == "half_open"


def test_restored_event_from_a_clock_ahead_counts_as_new() -> None:
    """An event stamped in the future (clock skew) is refreshed refresh_after from the restore, not never."""
    ev = StateChanged(
        target="db",
        seq=1,
        at=T0 + timedelta(seconds=5000),
        previous="unknown",
        state="unavailable",
        breaker="forced_open",
        reason="forced open by operator: x",
    )
    d = Decider([target()], rng=random.Random(0), now=at(1000.0), refresh_after=600.0)
    d.restore(ev, at(1000.0))
    assert d.next_deadline() == pytest.approx(1600.0)
    assert [e.seq for e in d.tick(at(1600.0))] == [2]


def test_no_refresh_without_refresh_after_or_before_any_event() -> None:
    """refresh_after None never refreshes; a target never announced has nothing to refresh."""
    sim = Sim()
    sim.feed("pass")
    sim.feed("pass")
    sim.control("force-open")
    assert sim.advance(1e7) == []
    never = Sim(refresh_after=10.0)
    assert never.advance(5.0) == []
    assert never.advance(1e6) == []
    assert never.decider.state("db") == ("unknown", "closed", 0)


def test_refresh_after_must_be_positive() -> None:
    """A refresh period of 0 or less is refused."""
    with pytest.raises(ValueError, match="refresh_after"):
        Decider([target()], rng=random.Random(0), now=at(0.0), refresh_after=0.0)


@pytest.mark.parametrize("seed", range(40))
def test_open_breaker_refresh_repeats_retry_at_exactly(seed: int) -> None:
    """With awkward (non-round) times and a random delay, a refresh repeats retry_at to the microsecond."""
    backoff = BackoffSettings(base=Duration(50.0), multiplier=2.0, max=Duration(60.0), jitter="decorrelated")
    sim = Sim(target(backoff=backoff), seed=seed, start=0.1 * seed + 0.0123, refresh_after=7.0)
    for outcome in ("pass", "pass", "fail", "fail"):
        sim.feed(outcome, dt=0.37 + seed / 1000)
    opened = next(e for e in sim.feed("fail", dt=2.880859375) if e.breaker == "open")
    refreshes = [e for e in sim.advance(7.0 + seed / 997) if is_refresh(e)]
    assert refreshes, "a refresh was due"
    assert refreshes[0].retry_at == opened.retry_at


@pytest.mark.parametrize("refresh_after", [None, 60.0])
def test_a_later_refresh_does_not_delay_the_rules_timers(refresh_after: float | None) -> None:
    """With a refresh due later than a rule's deadline, the rule's timer still runs at its
    own deadline: a target restored healthy and then silent turns unknown stale_after (15 s)
    after the restore, not at the refresh 60 s on."""
    decider = Decider(
        [target(stale_after=Duration(15.0))], rng=random.Random(0), now=at(0.0), refresh_after=refresh_after
    )
    restored = StateChanged(
        target="db", seq=3, at=T0, previous="unknown", state="healthy", breaker="closed", reason="r"
    )
    assert decider.restore(restored, at(0.0))
    assert decider.next_deadline() == 15.0
    assert decider.tick(at(14.9)) == []
    assert [(e.seq, e.state) for e in decider.tick(at(15.0))] == [(4, "unknown")]


def test_a_refresh_interval_under_a_second_is_accepted() -> None:
    """Any refresh_after above 0 is valid (the core has no minimum of its own)."""
    sim = Sim(refresh_after=0.5)
    sim.feed("pass", dt=1.0)
    sim.feed("pass", dt=1.0)  # healthy at 2
    (refresh,) = sim.advance(0.5)
    assert is_refresh(refresh)


def test_a_restored_target_refreshes_the_evidence_it_restored_up_to_the_forget_horizon() -> None:
    """A target that remembers no vantage point (restored, none heard since) repeats the
    restored event's evidence in a refresh, but for the points older than 10 x stale_after
    (forgotten): one exactly at that horizon is still remembered, as a point heard exactly
    that long ago is not forgotten yet."""
    event = state_changed(
        "db",
        4,
        "healthy",
        at=T0 + timedelta(seconds=999),
        evidence={
            "p1": Evidence(outcome="pass", error_kind=None, at=T0 + timedelta(seconds=850)),  # at the horizon
            "p2": Evidence(outcome="pass", error_kind=None, at=T0 + timedelta(seconds=849)),  # beyond it
            "p3": Evidence(outcome="pass", error_kind=None, at=T0 + timedelta(seconds=990)),
        },
    )
    d = Decider([target(stale_after=Duration(15.0))], rng=random.Random(0), now=at(1000.0), refresh_after=1.0)
    assert d.restore(event, at(1000.0))
    (refresh,) = d.tick(at(1000.0))  # the restored event is older than refresh_after: refreshed at once
    assert refresh.unchanged_since is not None
    assert sorted(refresh.evidence) == ["p1", "p3"]
