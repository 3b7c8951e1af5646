"""Live reload in the pure core: targets added, changed and retired."""

from __future__ import annotations

import random

from healthbus.coordinator._core import RETIRED_REASON, Decider
from healthbus.protocol import FlapSettings

from ._sim import Sim, at, result, target


def healthy(sim: Sim, name: str = "db") -> None:
    sim.feed("pass", name=name)
    sim.feed("pass", name=name)
    assert sim.states(name)[-1] == "healthy"


def test_added_target_starts_unknown_and_is_decided() -> None:
    """A target added by a reload is decided like a new one; nothing is announced for it yet."""
    sim = Sim(target("db"))
    healthy(sim)
    assert sim.decider.reconfigure([target("db"), target("cache")], at(sim.t)) == []
    assert sim.decider.state("cache") == ("unknown", "closed", 0)
    healthy(sim, "cache")
    assert sim.last("cache").seq == 1


def test_removed_target_is_retired_once_and_forgotten() -> None:
    """One retired event (next seq, unknown, closed), then the target is gone: results for it
    are rejected and its timers never fire."""
    sim = Sim(target("db"), target("cache"))
    healthy(sim)
    healthy(sim, "cache")
    (retired,) = sim.decider.reconfigure([target("db")], at(sim.t))
    assert retired.retired
    assert (retired.target, retired.seq, retired.previous, retired.state, retired.breaker) == (
        "cache",
        2,
        "healthy",
        "unknown",
        "closed",
    )
    assert retired.reason == RETIRED_REASON
    assert retired.features == ["cache"]  # the features it served (the instances drop their degraded mode)
    assert (retired.evidence, retired.failures) == ({}, 0)
    assert "cache" not in sim.decider
    assert sim.decider.reconfigure([target("db")], at(sim.t)) == []  # once
    assert [e.target for e in sim.advance(10_000.0)] == ["db"]  # db goes unknown; cache stays silent


def test_removed_target_never_announced_needs_no_event() -> None:
    """A target that never had an event leaves silently."""
    sim = Sim(target("db"), target("cache"))
    healthy(sim)
    assert sim.decider.reconfigure([target("db")], at(sim.t)) == []


def test_changed_settings_apply_from_the_next_result() -> None:
    """A lower failure_threshold takes effect on the next result; the state is kept meanwhile."""
    sim = Sim(target("db", failure_threshold=5))
    healthy(sim)
    sim.feed("fail")
    assert sim.decider.reconfigure([target("db", failure_threshold=2, features=["cache", "sessions"])], at(sim.t)) == []
    assert sim.decider.state("db")[0] == "healthy"
    (down,) = sim.feed("fail")
    assert (down.state, down.breaker) == ("unavailable", "open")
    assert down.features == ["cache", "sessions"]


def test_flap_settings_change_starts_a_fresh_history() -> None:
    """Turning flap detection on by a reload works from then on."""
    sim = Sim(target("db", success_threshold=1))
    healthy(sim)
    flap = FlapSettings(enabled=True, window=11, low=0.2, high=0.4)
    sim.decider.reconfigure([target("db", success_threshold=1, flap=flap)], at(sim.t))
    for _ in range(6):
        sim.feed("pass")
        sim.feed("warn")
    assert any(e.flapping for e in sim.events)


def test_configured_again_after_retirement_continues_the_seq() -> None:
    """A restart restores a retired event of a target configured again: seq goes on, from unknown."""
    sim = Sim(target("db"), target("cache"))
    healthy(sim, "cache")
    (retired,) = sim.decider.reconfigure([target("db")], at(sim.t))
    d = Decider([target("cache")], rng=random.Random(0), now=at(sim.t + 1))
    assert d.restore(retired, at(sim.t + 1))
    assert d.state("cache") == ("unknown", "closed", retired.seq)
    assert d.tick(at(sim.t + 5000.0)) == []  # nothing to refresh: it was retired
    d.on_result(result(sim.t + 5001, name="cache"), at(sim.t + 5001))
    (back,) = d.on_result(result(sim.t + 5002, name="cache"), at(sim.t + 5002))
    assert (back.seq, back.previous, back.state, back.retired) == (retired.seq + 1, "unknown", "healthy", False)


def test_added_back_in_the_same_run_continues_too() -> None:
    """Removed then added again without a restart: unknown, and its seq goes on (the stream
    de-duplicates by ``<target>:<seq>``, so a seq must never be reused)."""
    sim = Sim(target("db"), target("cache"))
    healthy(sim, "cache")
    (retired,) = sim.decider.reconfigure([target("db")], at(sim.t))
    sim.decider.reconfigure([target("db"), target("cache")], at(sim.t))
    assert sim.decider.state("cache") == ("unknown", "closed", retired.seq)
    sim.feed("pass", name="cache")
    (back,) = sim.feed("pass", name="cache")
    assert (back.seq, back.previous, back.state) == (retired.seq + 1, "unknown", "healthy")


def test_changed_quorum_decides_at_the_next_result_even_with_no_verdict_change() -> None:
    """A result that changes no verdict still decides with the new settings (the core's
    fast path once skipped it, keeping the old quorum's state; found by the reference decider)."""
    sim = Sim(target("db", failure_threshold=1, success_threshold=1, quorum="majority"))
    sim.feed("pass", probe="p0", dt=0.0)
    (degraded,) = sim.feed("fail", probe="p1", dt=0.0)
    assert degraded.state == "degraded"
    sim.reload(target("db", failure_threshold=1, success_threshold=1, quorum="any"))
    assert sim.decider.state("db")[0] == "degraded"  # kept until the next result or timer
    (down,) = sim.decider.on_result(result(sim.t, "pass", probe="p0"), at(sim.t))
    assert (down.state, down.breaker) == ("unavailable", "open")


def test_changed_quorum_decides_at_the_next_timer() -> None:
    """With no result, the next tick decides with the new settings."""
    sim = Sim(target("db", failure_threshold=1, success_threshold=1, quorum="majority"))
    sim.feed("pass", probe="p0", dt=0.0)
    sim.feed("fail", probe="p1", dt=0.0)
    sim.reload(target("db", failure_threshold=1, success_threshold=1, quorum="any"))
    (down,) = sim.advance(0.1)
    assert (down.state, down.breaker) == ("unavailable", "open")


def test_changed_degraded_quorum_decides_at_the_next_result() -> None:
    """One failing point of three degrades; reloaded with degraded_quorum 2, the next result
    (which changes no verdict) makes it healthy, and back to 1 degraded again."""
    cfg = {"failure_threshold": 1, "success_threshold": 1}
    sim = Sim(target("db", **cfg))
    for p in ("p0", "p1", "p2"):
        sim.feed("pass", probe=p, dt=0.0)
    (degraded,) = sim.feed("fail", probe="p0", dt=0.0)
    assert degraded.state == "degraded"
    sim.reload(target("db", degraded_quorum=2, **cfg))
    (healthy,) = sim.feed("pass", probe="p1", dt=0.1)
    assert healthy.state == "healthy"
    assert healthy.reason == "1/3 probes failing (refused), below degraded_quorum 2: ignored"
    sim.reload(target("db", **cfg))
    (again,) = sim.advance(0.1)
    assert (again.state, again.reason) == ("degraded", "1/3 probes failing (refused)")
