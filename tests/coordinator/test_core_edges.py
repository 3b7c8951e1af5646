"""Edge cases of the decision core found in review: explicit times, no sleeping."""

from __future__ import annotations

import itertools
from datetime import timedelta

import msgspec

from healthbus.protocol import BackoffSettings, BreakerState, Duration, State, StateChanged, TargetConfig
from tests.helpers import state_changed

from ._sim import T0, Sim, at, result, target


def feed_all(sim: Sim, outcome: str, probes: tuple[str, ...], rounds: int) -> None:
    """``rounds`` rounds of one ``outcome`` from every probe, 0.1 s apart."""
    for _ in range(rounds):
        for p in probes:
            sim.feed(outcome, probe=p, dt=0.1)  # type: ignore[arg-type]


def open_breaker(sim: Sim, probes: tuple[str, ...] = ("p1",)) -> StateChanged:
    """Make ``db`` healthy, then fail it until the breaker opens; return the open event."""
    feed_all(sim, "pass", probes, 2)
    assert sim.last().state == "healthy"
    feed_all(sim, "fail", probes, 3)
    event = sim.last()
    assert event.breaker == "open"
    return event


def test_reset_during_half_open_announces_attempt_zero() -> None:
    """A reset while half-open zeroes attempt and says so in an event (else the stream keeps the old attempt)."""
    sim = Sim()
    open_breaker(sim)
    (half,) = sim.control("reset")
    assert (half.breaker, half.attempt) == ("half_open", 0)
    sim.feed("fail")  # the trial fails: open again, attempt 1
    assert (sim.last().breaker, sim.last().attempt) == ("open", 1)
    (half,) = sim.control("reset")
    sim.t += 0.1
    # half-open with attempt 0 already: a second reset restarts the trial silently; one
    # with an attempt to zero says so (the restored event may carry one).
    sim.decider.restore(msgspec.structs.replace(half, seq=half.seq + 1, attempt=2), at(sim.t))
    (event,) = sim.control("reset")
    assert (event.seq, event.previous, event.state, event.breaker, event.attempt) == (
        half.seq + 2,
        "recovering",
        "recovering",
        "half_open",
        0,
    )
    assert "reset by operator" in event.reason
    assert sim.decider.current("db") == event
    assert sim.control("reset") == []  # nothing left to change: silent


def test_result_exactly_at_retry_at_is_a_trial() -> None:
    """A result received exactly at retry_at counts as a trial (a failing one: no event;
    then passing ones re-admit)."""
    sim = Sim()
    opened = open_breaker(sim)
    assert opened.retry_at is not None
    sim.t = (opened.retry_at - T0).total_seconds()
    assert sim.decider.on_result(result(sim.t, "fail"), at(sim.t)) == []
    (back,) = sim.decider.on_result(result(sim.t, "pass"), at(sim.t))
    assert (back.breaker, back.attempt) == ("closed", 0)


def test_observed_at_slightly_in_the_future_is_taken() -> None:
    """Clock skew between hosts (observed_at 3 s ahead, under stale_after) is not dropped."""
    sim = Sim()
    for i in (1.0, 2.0):
        sim.decider.on_result(result(i + 3.0), at(i))
    assert sim.decider.state("db")[0] == "healthy"


def test_quorum_number_above_live_points_is_all_of_them() -> None:
    """quorum = 5 with three live vantage points opens when all three fail."""
    sim = Sim(target(quorum=5))
    assert open_breaker(sim, ("p1", "p2", "p3")).reason.startswith("3/3 probes failing")


def test_warn_trials_close_the_breaker_as_degraded() -> None:
    """warn results during half-open pass the trial (reachable) and close it, announced degraded."""
    sim = Sim()
    open_breaker(sim)
    sim.advance(5)
    (event,) = sim.feed("warn")
    assert (event.state, event.breaker, event.attempt) == ("degraded", "closed", 0)


def test_force_open_of_an_open_breaker_then_reset_is_a_trial() -> None:
    """force-open over an open breaker drops retry_at; no timer fires; reset goes half-open."""
    sim = Sim()
    open_breaker(sim)
    (forced,) = sim.control("force-open")
    assert (forced.state, forced.breaker, forced.attempt, forced.retry_at) == ("unavailable", "forced_open", 0, None)
    assert sim.advance(100) == []
    (reset,) = sim.control("reset")
    assert (reset.state, reset.breaker) == ("recovering", "half_open")


def test_disable_then_reset_needs_a_trial() -> None:
    """Results while disabled decide nothing; reset goes half-open and passing trials close it."""
    sim = Sim()
    feed_all(sim, "pass", ("p1",), 2)
    (disabled,) = sim.control("disable")
    assert (disabled.state, disabled.breaker) == ("unknown", "disabled")
    feed_all(sim, "fail", ("p1",), 3)
    assert sim.last() == disabled
    assert sim.control("reset")[0].breaker == "half_open"
    feed_all(sim, "pass", ("p1",), 2)
    assert (sim.last().state, sim.last().breaker) == ("healthy", "closed")


def mk(state: State, breaker: BreakerState, attempt: int = 0, retry: float | None = None) -> StateChanged:
    """A last event of ``db`` (seq 7, decided at t=990) as a restore would read it."""
    return state_changed(
        "db",
        7,
        state,
        at=T0 + timedelta(seconds=990),
        previous="healthy",
        breaker=breaker,
        reason="restored",
        attempt=attempt,
        retry_at=None if retry is None else T0 + timedelta(seconds=retry),
        features=["cache"],
    )


RESTORED: list[tuple[StateChanged, list[tuple[str, str]]]] = [
    (mk("unknown", "closed"), []),
    (mk("healthy", "closed"), [("unknown", "closed")]),
    (mk("degraded", "closed"), [("unknown", "closed")]),
    (mk("unavailable", "open", 2, 1005.0), []),
    (mk("unavailable", "open", 2, 900.0), []),
    (mk("recovering", "half_open", 2), [("unknown", "half_open")]),
    (mk("unknown", "half_open", 2), []),
    (mk("unavailable", "forced_open"), []),
    (mk("unknown", "disabled"), []),
]


def test_restore_of_every_state_then_silence_then_results() -> None:
    """After a restore of any state/breaker, silence never announces healthy and the chain stays contiguous."""
    for last, silent in RESTORED:
        cfg: TargetConfig = target()
        sim = Sim(cfg, start=1000.0)
        assert sim.decider.restore(last, at(1000.0))
        sim.events.append(last)
        for _ in range(40):
            sim.advance(5)
        assert [(e.state, e.breaker) for e in sim.events[1:]] == silent, (last.state, last.breaker)
        feed_all(sim, "pass", ("p1",), 3)
        for a, b in itertools.pairwise(sim.events):
            assert (b.seq, b.previous) == (a.seq + 1, a.state)
        end = (sim.last().state, sim.last().breaker)
        expected = (last.state, last.breaker) if last.breaker in ("forced_open", "disabled") else ("healthy", "closed")
        assert end == expected, (last.state, last.breaker)


def test_restored_decorrelated_backoff_grows_from_the_restored_delay() -> None:
    """A restored open breaker (two failed re-admissions) with decorrelated jitter: re-admitted
    after retry_at, a third failed re-admission reopens with attempt 4 and a bounded delay."""
    backoff = BackoffSettings(base=Duration(1.0), multiplier=2.0, max=Duration(60.0), jitter="decorrelated")
    sim = Sim(target(backoff=backoff), start=1000.0)
    assert sim.decider.restore(mk("unavailable", "open", 3, 1010.0), at(1000.0))
    assert sim.feed("pass", dt=9.8) + sim.feed("pass", dt=0.1) == []  # before retry_at: evidence
    (back,) = sim.feed("pass", dt=0.2)
    assert back.ramp is not None
    assert back.ramp.readmission == 3
    sim.report("i1")
    (event,) = sim.report("i2")
    assert (event.breaker, event.attempt) == ("open", 4)
    assert event.retry_at is not None
    assert 1.0 <= (event.retry_at - event.at).total_seconds() <= 60.0


def test_restored_retry_at_beyond_backoff_max_is_capped() -> None:
    """A retry_at an hour ahead (the deciding host's clock ran ahead) allows trials after backoff.max, not an hour."""
    sim = Sim(start=1000.0)  # backoff.max is 60 s
    assert sim.decider.restore(mk("unavailable", "open", 2, 1000.0 + 3600.0), at(1000.0))
    assert sim.feed("pass", dt=59.7) + sim.feed("pass", dt=0.1) == []  # still before the capped retry_at
    (event,) = sim.feed("pass", dt=0.3)
    assert (event.state, event.breaker, event.attempt) == ("healthy", "closed", 0)


def test_restore_of_a_degraded_target_does_not_flip_through_healthy() -> None:
    """Steady inputs after a restart: degraded (1 of 3 failing) stays degraded, no spurious healthy then degraded."""
    first = Sim()
    feed_all(first, "pass", ("p1", "p2", "p3"), 2)
    feed_all(first, "fail", ("p1",), 3)
    feed_all(first, "pass", ("p2", "p3"), 1)
    last = first.last()
    assert (last.state, last.breaker) == ("degraded", "closed")
    second = Sim(start=100.0)
    assert second.decider.restore(last, at(100.0))
    # The same world after the restart, workers interleaved: p1 still fails, p2 and p3 pass.
    for _ in range(4):
        second.feed("pass", probe="p2", dt=0.5)
        second.feed("fail", probe="p1", dt=0.5)
        second.feed("pass", probe="p3", dt=0.5)
    assert second.events == []
    # p1 recovers: after success_threshold passes (hysteresis kept across the restart) → healthy.
    assert second.feed("pass", probe="p1") == []
    (event,) = second.feed("pass", probe="p1")
    assert (event.seq, event.previous, event.state) == (last.seq + 1, "degraded", "healthy")


def stored(event: StateChanged, term: int = 3) -> StateChanged:
    """``event`` as the service publishes and the stream stores it: stamped with who
    decided it, under which lease."""
    return msgspec.structs.replace(event, coordinator="coord-a", term=term)


def test_control_replies_carry_the_event_as_stored() -> None:
    """Once an event went out stamped (coordinator, term), ``current`` — what a control
    reply carries, for the command's own event and for ``status`` — is that stamped event,
    not the core's unstamped copy; a later event replaces it only when it too is published."""
    sim = Sim()
    feed_all(sim, "pass", ("p1",), 2)
    (forced,) = sim.control("force-open")
    sent = stored(forced)
    sim.decider.published(sent)
    assert sim.decider.current("db") == sent
    assert (sim.decider.current("db").coordinator, sim.decider.current("db").term) == ("coord-a", 3)  # type: ignore[union-attr]
    assert sim.control("status") == []
    assert sim.decider.current("db") == sent  # status answers the stored event too
    (reset,) = sim.control("reset")
    assert sim.decider.current("db") == reset  # decided, not yet published: the core's own
    sim.decider.published(stored(reset, term=4))
    assert sim.decider.current("db") == stored(reset, term=4)


def test_publishing_an_older_event_leaves_the_newer_one_current() -> None:
    """A takeover publishes the events decided since the stream's last one, several per
    target, oldest first: each older one published while a newer one is the target's last
    must not become what ``current`` answers (a reply would go back in time)."""
    sim = Sim()
    feed_all(sim, "pass", ("p1",), 2)
    healthy = sim.last()
    (forced,) = sim.control("force-open")
    assert forced.seq == healthy.seq + 1
    sim.decider.published(stored(healthy))
    assert sim.decider.current("db") == forced
    sim.decider.published(stored(forced))
    assert sim.decider.current("db") == stored(forced)


def test_publishing_a_retired_targets_events_is_harmless() -> None:
    """A reload that removes a target publishes its ``retired`` event after the core has
    forgotten it: publishing it raises nothing. Configured again, the target has announced
    nothing yet (``current`` None) and an event of its earlier life published late does
    not become its current one."""
    sim = Sim(target("db"), target("cache"))
    feed_all(sim, "pass", ("p1",), 2)
    healthy = sim.last()
    (retired,) = sim.reload(target("cache"))
    assert retired.retired
    sim.decider.published(stored(retired))  # db is gone: nothing to update
    assert "db" not in sim.decider
    sim.reload(target("cache"), target("db"))
    assert sim.decider.current("db") is None
    sim.decider.published(stored(retired))
    sim.decider.published(stored(healthy))
    assert sim.decider.current("db") is None
    assert sim.decider.current("cache") is None


def test_a_point_gone_stale_at_its_deadline_counts_no_failures() -> None:
    """A vantage point is evidence only within stale_after: when its silence makes the
    target unknown, at the very deadline its timer runs, the event counts none of its
    failures (it is not live any more)."""
    sim = Sim()
    feed_all(sim, "pass", ("p1",), 2)
    sim.feed("fail", dt=0.1)  # one failure, below failure_threshold: no event
    heard = sim.t
    assert sim.decider.tick(at(heard + 14.9)) == []  # its earlier pass verdict lapsed: no opinion, no event
    (unknown,) = sim.decider.tick(at(heard + 15.0))  # stale_after after it was heard
    assert (unknown.state, unknown.failures) == ("unknown", 0)
