"""Maintenance windows in the pure core: a forced state with an end time."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from healthbus.coordinator._core import MAINTENANCE_MARK, ControlError, Decider
from healthbus.protocol import format_timestamp

from ._sim import T0, Sim, at, result, target


def healthy_sim() -> Sim:
    sim = Sim()
    sim.feed("pass")
    sim.feed("pass")
    assert sim.states() == ["healthy"]
    return sim


def test_window_is_unavailable_until_its_end_then_a_trial() -> None:
    """maintenance: unavailable/forced_open with retry_at at the end; results decide nothing;
    at the end (a timer, no traffic) the breaker goes half-open, and passes close it."""
    sim = healthy_sim()
    (start,) = sim.control_for("maintenance", 3600.0, reason="db upgrade")
    end = T0 + timedelta(seconds=sim.t + 3600.0)
    assert (start.state, start.breaker, start.retry_at) == ("unavailable", "forced_open", end)
    assert start.reason == f"{MAINTENANCE_MARK}{format_timestamp(end)}: db upgrade"
    for _ in range(5):
        assert sim.feed("fail") == []
    assert sim.advance(3000.0) == []
    (ended,) = sim.advance(600.0)
    assert (ended.state, ended.breaker, ended.attempt, ended.retry_at) == ("recovering", "half_open", 0, None)
    assert ended.reason.startswith("maintenance ended")
    sim.feed("pass")
    sim.feed("pass")
    assert sim.states() == ["healthy", "unavailable", "recovering", "healthy"]


def test_reset_ends_a_window_early() -> None:
    """ctl reset during a window: a trial at once; the window's end then changes nothing."""
    sim = healthy_sim()
    sim.control_for("maintenance", 60.0)
    (reset,) = sim.control("reset", reason="done early")
    assert (reset.state, reset.breaker) == ("recovering", "half_open")
    sim.feed("pass")
    sim.feed("pass")
    for _ in range(70):  # past the window's end: it is over, nothing more happens
        assert sim.feed("pass") == []
    assert sim.states() == ["healthy", "unavailable", "recovering", "healthy"]


def test_a_new_window_replaces_the_running_one_and_force_open_makes_it_open_ended() -> None:
    """Extending announces the new end; force-open keeps it unavailable with no end."""
    sim = healthy_sim()
    (first,) = sim.control_for("maintenance", 60.0)
    (longer,) = sim.control_for("maintenance", 600.0)
    assert first.retry_at is not None
    assert longer.retry_at is not None
    assert longer.retry_at > first.retry_at
    (forced,) = sim.control("force-open", reason="not back yet")
    assert (forced.breaker, forced.retry_at) == ("forced_open", None)
    assert sim.advance(10_000.0) == []
    assert sim.last().breaker == "forced_open"


def test_window_needs_a_positive_duration() -> None:
    """No duration, zero or negative: refused, nothing changed."""
    sim = healthy_sim()
    for duration in (None, 0.0, -5.0):
        with pytest.raises(ControlError, match="duration"):
            sim.decider.control("maintenance", "db", "x", at(sim.t), duration=duration)
    assert sim.states() == ["healthy"]


def test_restored_window_ends_when_it_was_announced_to() -> None:
    """A coordinator restarted during a window keeps it, and ends it on time (or at once if past)."""
    sim = healthy_sim()
    (start,) = sim.control_for("maintenance", 100.0)
    d = Decider([target()], rng=random.Random(0), now=at(sim.t + 30.0))
    assert d.restore(start, at(sim.t + 30.0))
    assert d.on_result(result(sim.t + 31.0), at(sim.t + 31.0)) == []
    assert d.tick(at(sim.t + 99.0)) == []
    (ended,) = d.tick(at(sim.t + 100.5))
    assert (ended.seq, ended.state, ended.breaker) == (start.seq + 1, "recovering", "half_open")
    late = Decider([target()], rng=random.Random(0), now=at(sim.t + 500.0))
    late.restore(start, at(sim.t + 500.0))
    (ended_late,) = late.tick(at(sim.t + 500.0))
    assert ended_late.breaker == "half_open"


def test_refresh_of_a_window_repeats_its_end() -> None:
    """A refresh during a long window keeps retry_at (probe workers keep holding off)."""
    sim = Sim(refresh_after=50.0)
    sim.feed("pass")
    sim.feed("pass")
    (start,) = sim.control_for("maintenance", 3600.0)
    (refresh,) = sim.advance(50.0)
    assert (refresh.state, refresh.breaker, refresh.retry_at) == ("unavailable", "forced_open", start.retry_at)
