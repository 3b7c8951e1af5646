"""The pure decision core: plain synchronous calls with explicit times, no sleeping."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from healthbus.coordinator._core import (
    MAX_VANTAGE_POINTS,
    PROBATION_MIN_S,
    ControlError,
    Decider,
    Rejected,
    quorum_need,
)
from healthbus.protocol import BackoffSettings, Duration, FlapSettings, ProbeResult, RampSettings, StateChanged

from ._sim import T0, Sim, at, result, target


def assert_contiguous(events: list[StateChanged]) -> None:
    """Per target: seq 1, 2, 3, ... and previous == the state before."""
    last: dict[str, StateChanged] = {}
    for e in events:
        before = last.get(e.target)
        if before is None:
            assert e.seq == 1
            assert e.previous == "unknown"
        else:
            assert e.seq == before.seq + 1
            assert e.previous == before.state
        last[e.target] = e


# ---------------------------------------------------------------- hysteresis, healthy


def test_unknown_then_healthy_after_success_threshold() -> None:
    """A new target is unknown and turns healthy after success_threshold passes, seq 1."""
    sim = Sim()
    assert sim.feed("pass") == []
    (event,) = sim.feed("pass")
    assert (event.seq, event.previous, event.state, event.breaker) == (1, "unknown", "healthy", "closed")
    assert event.features == ["cache"]
    assert event.evidence["p1"].outcome == "pass"
    assert event.msg_id == "db:1"
    assert "1/1 probes passing" in event.reason


def test_single_failure_changes_nothing() -> None:
    """One or two failing results below failure_threshold do not move a healthy target."""
    sim = Sim()
    sim.feed("pass")
    sim.feed("pass")
    assert sim.feed("fail") == []
    assert sim.feed("fail") == []
    assert sim.feed("pass") == []
    assert sim.states() == ["healthy"]


def test_failure_threshold_opens_breaker_with_retry_at() -> None:
    """failure_threshold consecutive fails open the breaker: unavailable, attempt 1, the
    first trial trial_interval later (a fresh outage is not backed off)."""
    sim = Sim()
    sim.feed("pass")
    sim.feed("pass")
    sim.feed("fail")
    sim.feed("fail")
    (event,) = sim.feed("fail")
    assert (event.state, event.breaker, event.attempt, event.failures) == ("unavailable", "open", 1, 3)
    assert event.retry_at == event.at + timedelta(seconds=0.5)
    assert "1/1 probes failing (refused)" in event.reason
    assert "attempt 1" in event.reason


def test_full_cycle_trials_while_open_then_readmitted_with_a_ramp() -> None:
    """unknown → healthy → unavailable → (trials pass: no event before) → healthy, with a ramp."""
    sim = Sim()
    for outcome in ("pass", "pass", "fail", "fail", "fail"):
        sim.feed(outcome)
    assert sim.decider.next_deadline() == pytest.approx(sim.t + 0.5)
    assert sim.advance(0.5) == []  # retry_at: the trials may start, nothing to announce
    (healthy,) = sim.feed("pass", dt=0.1)  # one passing trial re-admits
    assert (healthy.state, healthy.breaker, healthy.attempt) == ("healthy", "closed", 0)
    assert "trial passed" in healthy.reason
    assert healthy.ramp is not None
    assert (healthy.ramp.started_at, healthy.ramp.duration_s, healthy.ramp.from_share) == (healthy.at, 1.0, 0.1)
    assert healthy.ramp.readmission == 1
    assert sim.states() == ["healthy", "unavailable", "healthy"]
    assert_contiguous(sim.events)


def test_results_before_retry_at_do_not_close() -> None:
    """Passing results for an open target before retry_at are evidence, not a trial."""
    sim = Sim(target(trial_interval=Duration(10.0)))
    for outcome in ("fail", "fail", "fail"):
        sim.feed(outcome)
    assert sim.states() == ["unavailable"]
    for _ in range(5):
        assert sim.feed("pass", dt=1.0) == []
    assert sim.last().breaker == "open"


def test_result_after_retry_at_is_a_trial_even_before_tick() -> None:
    """A result arriving after retry_at counts as a trial whether or not a tick ran."""
    sim = Sim()
    for outcome in ("fail", "fail", "fail"):
        sim.feed(outcome)
    sim.t += 5.0  # no tick in between
    out = sim.decider.on_result(result(sim.t, "pass"), at(sim.t))
    assert [e.state for e in out] == ["healthy"]


def test_failed_trials_leave_the_breaker_open_without_events() -> None:
    """Trials failing at the cadence change nothing: no event, attempt 1, still open;
    the first passing run re-admits."""
    sim = Sim()
    for outcome in ("fail", "fail", "fail"):
        sim.feed(outcome)
    for _ in range(20):
        assert sim.feed("fail", dt=0.5) == []
    assert (sim.last().breaker, sim.last().attempt) == ("open", 1)
    (back,) = sim.feed("pass", dt=0.5)
    assert (back.state, back.breaker) == ("healthy", "closed")


def readmit(sim: Sim) -> StateChanged:
    """Let the open target's trials pass; the re-admission event."""
    retry_at = sim.last().retry_at
    assert retry_at is not None
    sim.advance(max(0.0, (retry_at - sim.last().at).total_seconds()))
    (back,) = sim.feed("pass", dt=0.01)
    assert back.breaker == "closed"
    assert back.ramp is not None
    return back


def test_reports_during_the_ramp_reopen_with_growing_backoff() -> None:
    """reopen_reports instances reporting during the ramp re-open the breaker; each failed
    re-admission waits longer (backoff of the failed ones), capped at backoff.max."""
    sim = Sim(target(backoff=BackoffSettings(base=Duration(1.0), max=Duration(5.0), jitter="none")))
    for outcome in ("fail", "fail", "fail"):
        sim.feed(outcome)
    delays = []
    for n in range(1, 6):
        back = readmit(sim)
        assert back.ramp is not None
        assert back.ramp.readmission == n
        assert sim.report("i1", dt=0.1) == []  # one instance is not enough (reopen_reports 2)
        assert sim.report("i1", dt=0.1) == []  # nor the same one twice
        (reopened,) = sim.report("i2", dt=0.1)
        assert (reopened.state, reopened.breaker, reopened.attempt) == ("unavailable", "open", n + 1)
        assert f"re-admission {n} failed: 2 instances reported failures (refused)" in reopened.reason
        delays.append((reopened.retry_at - reopened.at).total_seconds())  # type: ignore[operator]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_reports_outside_a_ramp_decide_nothing() -> None:
    """Reports of a healthy target with no ramp in progress (or after its probation ended:
    the ramp, and at least PROBATION_MIN_S), or seen by the instance before the
    re-admission, change nothing."""
    sim = Sim()
    sim.feed("pass")
    sim.feed("pass")
    assert sim.report("i1") + sim.report("i2") + sim.report("i3") == []
    for outcome in ("fail", "fail", "fail"):
        sim.feed(outcome)
    assert sim.report("i1") + sim.report("i2") == []  # open: the trials look, not reports
    back = readmit(sim)
    start = (back.at - T0).total_seconds()
    assert sim.report("i1", seen=start - 0.2) + sim.report("i2", seen=start - 0.1) == []  # about the outage
    sim.advance(PROBATION_MIN_S)  # the ramp (1 s) and its probation (at least 2 s) are over
    assert sim.report("i1") + sim.report("i2") == []
    assert sim.last().state == "healthy"


def test_a_probe_failure_during_the_ramp_is_a_failed_readmission() -> None:
    """The probes opening the breaker again during the ramp back the next re-admission off;
    after the ramp, an opening is a fresh outage (attempt 1, trial_interval)."""
    sim = Sim()
    for outcome in ("fail", "fail", "fail"):
        sim.feed(outcome)
    readmit(sim)
    sim.feed("fail", dt=0.1)
    sim.feed("fail", dt=0.1)
    (reopened,) = sim.feed("fail", dt=0.1)
    assert (reopened.breaker, reopened.attempt) == ("open", 2)
    assert reopened.retry_at == reopened.at + timedelta(seconds=1.0)
    readmit(sim)
    sim.advance(2.0)
    for _ in range(3):
        sim.feed("fail", dt=0.1)
    assert (sim.last().breaker, sim.last().attempt) == ("open", 1)
    assert sim.last().retry_at == sim.last().at + timedelta(seconds=0.5)


def test_ramp_duration_zero_readmits_everyone_at_once() -> None:
    """ramp.duration 0: no ramp in the event and no probation (reports decide nothing)."""
    sim = Sim(target(ramp=RampSettings(duration=Duration(0.0))))
    for outcome in ("fail", "fail", "fail"):
        sim.feed(outcome)
    sim.advance(0.5)
    (back,) = sim.feed("pass", dt=0.01)
    assert back.ramp is None
    assert sim.report("i1") + sim.report("i2") == []


# ---------------------------------------------------------------- quorum


def test_quorum_need() -> None:
    """majority, any, all and a number, over the live vantage points."""
    assert [quorum_need("majority", n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    assert quorum_need("any", 5) == 1
    assert quorum_need("all", 5) == 5
    assert quorum_need(2, 5) == 2
    assert quorum_need(4, 3) == 3  # fewer live than the number: all of them


def three_healthy(**kw: Any) -> Sim:
    """Three vantage points, all passing: healthy."""
    sim = Sim(target(**kw))
    for _ in range(2):
        for p in ("p1", "p2", "p3"):
            sim.feed("pass", probe=p, dt=0.1)
    assert sim.states() == ["healthy"]
    return sim


def test_minority_failure_is_degraded() -> None:
    """One of three vantage points failing (majority quorum) → degraded, breaker closed."""
    sim = three_healthy()
    for _ in range(3):
        sim.feed("fail", probe="p1", dt=0.1)
        sim.feed("pass", probe="p2", dt=0.1)
        sim.feed("pass", probe="p3", dt=0.1)
    assert sim.states() == ["healthy", "degraded"]
    event = sim.last()
    assert event.breaker == "closed"
    assert "1/3 probes failing (refused)" in event.reason
    assert set(event.evidence) == {"p1", "p2", "p3"}


def test_majority_failure_opens() -> None:
    """Two of three failing (majority) opens the breaker."""
    sim = three_healthy()
    for _ in range(3):
        sim.feed("fail", probe="p1", dt=0.1)
        sim.feed("fail", probe="p2", dt=0.1)
    assert sim.states() == ["healthy", "degraded", "unavailable"]


def test_quorum_any_opens_on_one() -> None:
    """With quorum any, one failing vantage point opens the breaker."""
    sim = three_healthy(quorum="any")
    for _ in range(3):
        sim.feed("fail", probe="p1", dt=0.1)
    assert sim.states() == ["healthy", "unavailable"]


def test_quorum_all_needs_every_live_point() -> None:
    """With quorum all, two of three failing is only degraded."""
    sim = three_healthy(quorum="all")
    for _ in range(3):
        sim.feed("fail", probe="p1", dt=0.1)
        sim.feed("fail", probe="p2", dt=0.1)
    assert sim.states() == ["healthy", "degraded"]
    for _ in range(3):
        sim.feed("fail", probe="p3", dt=0.1)
    assert sim.states() == ["healthy", "degraded", "unavailable"]


def test_warn_is_degraded() -> None:
    """success_threshold warns from a vantage point make the target degraded."""
    sim = Sim()
    sim.feed("pass")
    sim.feed("pass")
    sim.feed("warn")
    (event,) = sim.feed("warn")
    assert event.state == "degraded"
    assert "1/1 probes warn" in event.reason


def test_pending_points_give_no_opinion() -> None:
    """With three new vantage points, one passing is not enough to call the target healthy."""
    sim = Sim()
    sim.feed("pass", probe="p1", dt=0.1)
    sim.feed("pass", probe="p2", dt=0.1)
    sim.feed("pass", probe="p3", dt=0.1)
    sim.feed("pass", probe="p1", dt=0.1)
    assert sim.events == []
    sim.feed("pass", probe="p2", dt=0.1)
    assert sim.states() == ["healthy"]


@pytest.mark.parametrize(
    ("degraded_quorum", "state", "reason"),
    [
        (1, "degraded", "trial passed on 2/3 probes, breaker closed; 1/3 probes failing (refused)"),
        (
            2,
            "healthy",
            "trial passed on 2/3 probes, breaker closed; "
            "1/3 probes failing (refused), below degraded_quorum 2: ignored",
        ),
    ],
)
def test_trial_with_quorum_closes_despite_minority_failing(degraded_quorum: int, state: str, reason: str) -> None:
    """Open with three points, trials allowed: one failing trial does not reopen; two passing close, and
    the one failing point is judged by the closed-breaker rule: degraded by default, ignored
    (healthy) below a degraded_quorum of 2."""
    sim = three_healthy(degraded_quorum=degraded_quorum)
    for _ in range(3):
        for p in ("p1", "p2", "p3"):
            sim.feed("fail", probe=p, dt=0.1)
    sim.advance(1.0)
    assert sim.last().state == "unavailable"  # open, trials allowed
    sim.feed("fail", probe="p1", dt=0.1)
    for _ in range(2):
        sim.feed("pass", probe="p2", dt=0.1)
        sim.feed("pass", probe="p3", dt=0.1)
    closed = sim.last()
    assert (closed.state, closed.breaker, closed.reason) == (state, "closed", reason)
    assert_contiguous(sim.events)


# ---------------------------------------------------------------- degraded_quorum


def test_degraded_quorum_ignores_fewer_failing_or_warn_points() -> None:
    """degraded_quorum 2 of three: one failing point is ignored (still healthy); one failing
    and one warn degrade; back to one, healthy with the ignored point named; two failing open."""
    sim = three_healthy(degraded_quorum=2)
    for _ in range(3):
        sim.feed("fail", probe="p1", dt=0.1)
        sim.feed("pass", probe="p2", dt=0.1)
        sim.feed("pass", probe="p3", dt=0.1)
    assert sim.states() == ["healthy"]
    for _ in range(2):
        sim.feed("warn", probe="p2", dt=0.1)
    assert sim.states() == ["healthy", "degraded"]
    assert sim.last().reason == "1/3 probes failing (refused); 1/3 probes warn"
    for _ in range(2):
        sim.feed("pass", probe="p2", dt=0.1)
    assert sim.states() == ["healthy", "degraded", "healthy"]
    assert sim.last().reason == "1/3 probes failing (refused), below degraded_quorum 2: ignored"
    for _ in range(3):
        sim.feed("fail", probe="p2", dt=0.1)
    assert sim.states() == ["healthy", "degraded", "healthy", "unavailable"]
    assert sim.last().reason.startswith("2/3 probes failing (refused); breaker open")


def test_degraded_quorum_is_capped_at_the_live_points() -> None:
    """degraded_quorum 3 with one live point: its warn alone degrades; with two, both must;
    a third point passing makes two below it (the reason adds them up, no "(fail)" where no
    kind was carried)."""
    sim = Sim(target(degraded_quorum=3, quorum="all", failure_threshold=1, success_threshold=1))
    (degraded,) = sim.feed("warn", probe="p1")
    assert (degraded.state, degraded.reason) == ("degraded", "1/1 probes warn")
    sim.t += 1.0
    no_kind = ProbeResult(
        target="db", probe="p2", outcome="fail", latency_ms=1.0, observed_at=T0 + timedelta(seconds=sim.t)
    )
    assert sim.decider.on_result(no_kind, at(sim.t)) == []  # two of two: still degraded
    (healthy,) = sim.feed("pass", probe="p3")
    assert healthy.state == "healthy"
    assert healthy.reason == "1/3 probes failing; 1/3 probes warn; together 2/3, below degraded_quorum 3: ignored"

    assert_contiguous(sim.events)


def test_a_trial_that_closes_is_announced_even_when_verdicts_lapsed() -> None:
    """A half-open trial (after a reset) passes on two of three points while one of them has
    no verdict that still counts (its passes are older than stale_after) and the third is
    pending: the breaker closes with an event, healthy. (The closed rule used to keep the
    state, "recovering", so the breaker closed without an event and the stream still said
    half-open.)"""
    sim = three_healthy()
    for _ in range(3):
        for p in ("p1", "p2", "p3"):
            sim.feed("fail", probe=p, dt=0.1)
    sim.control("reset")
    assert sim.last().state == "recovering"
    sim.feed("pass", probe="p1", dt=0.0)
    sim.feed("pass", probe="p1", dt=0.1)  # p1: trial passed, verdict passing
    sim.feed("pass", probe="p2", dt=7.0)
    sim.feed("pass", probe="p3", dt=0.0)
    sim.feed("warn", probe="p1", dt=2.0)  # p1 live, but its passing verdict lapses at +15 s
    (closed,) = sim.feed("pass", probe="p2", dt=6.5)  # p2: trial passed; p3 pending
    assert (closed.state, closed.breaker, closed.attempt) == ("healthy", "closed", 0)
    assert closed.reason == "trial passed on 2/3 probes, breaker closed; 1/3 probes passing"
    assert sim.decider.state("db") == (closed.state, closed.breaker, closed.seq)


def test_below_degraded_quorum_a_flapping_point_does_not_flap_the_target() -> None:
    """One point flipping between failing and passing, degraded_quorum 2: the verdict
    recorded for flap detection is healthy every time, so the target never flaps; with the
    default it flaps."""
    flap = FlapSettings(enabled=True, window=5)
    for k, flaps in ((2, False), (1, True)):
        sim = three_healthy(degraded_quorum=k, failure_threshold=1, success_threshold=1, flap=flap)
        for _ in range(6):  # p2 and p3 stay passing (heard within stale_after)
            sim.feed("fail", probe="p1", dt=0.1)
            sim.feed("pass", probe="p1", dt=0.1)
        assert any(e.flapping for e in sim.events) is flaps, k
        if not flaps:
            assert sim.states() == ["healthy"]


# ---------------------------------------------------------------- staleness


def test_silence_becomes_unknown_without_traffic() -> None:
    """No result for stale_after → unknown, decided by a timer alone."""
    sim = Sim()
    sim.feed("pass")
    sim.feed("pass")
    assert sim.advance(14.0) == []
    (event,) = sim.advance(1.0)
    assert (event.state, event.previous) == ("unknown", "healthy")
    assert "no result from any probe for 15s" in event.reason


def test_stale_failing_point_drops_out_of_quorum() -> None:
    """A vantage point that goes silent no longer counts; the live ones decide."""
    sim = three_healthy()
    for _ in range(3):
        sim.feed("fail", probe="p1", dt=0.1)
    assert sim.last().state == "degraded"
    for _ in range(20):
        sim.feed("pass", probe="p2", dt=0.5)
        sim.feed("pass", probe="p3", dt=0.5)
    assert sim.last().state == "healthy"


def test_unknown_in_half_open_keeps_breaker() -> None:
    """A half-open target that hears nothing becomes unknown but stays half-open (no trial skipped)."""
    sim = Sim()
    for outcome in ("fail", "fail", "fail"):
        sim.feed(outcome)
    sim.control("reset")  # half-open: a trial
    sim.advance(15.0)
    assert (sim.last().state, sim.last().breaker) == ("unknown", "half_open")
    sim.feed("pass")
    assert sim.last().state == "recovering"
    sim.feed("pass")
    assert (sim.last().state, sim.last().breaker) == ("healthy", "closed")


def test_a_silent_half_open_target_is_announced_unknown_once() -> None:
    """A half-open target that hears nothing is announced unknown once: the timers that
    run later (its silent vantage point forgotten after 10 × stale_after) announce nothing
    more, no ``unknown → unknown`` event."""
    sim = Sim()
    for outcome in ("fail", "fail", "fail"):
        sim.feed(outcome)
    sim.control("reset")  # half-open: a trial
    quiet: list[StateChanged] = []
    for _ in range(40):  # 200 s of silence
        quiet += sim.advance(5.0)
    assert [(e.previous, e.state, e.breaker) for e in quiet] == [("recovering", "unknown", "half_open")]
    assert sim.decider.vantage_points("db") == 0  # the timer that forgot p1 ran in between


def test_a_silent_trial_heard_from_again_says_so() -> None:
    """A half-open target announced unknown for silence is announced recovering again
    when a probe is heard, with the reason saying why: the trial hears probes again."""
    sim = Sim()
    for outcome in ("fail", "fail", "fail"):
        sim.feed(outcome)
    sim.control("reset")  # half-open: a trial
    sim.advance(15.0)
    assert (sim.last().state, sim.last().breaker) == ("unknown", "half_open")
    (heard,) = sim.feed("pass")
    assert (heard.state, heard.breaker, heard.reason) == ("recovering", "half_open", "trial: probes heard from again")


def test_open_breaker_is_not_unknown_while_waiting() -> None:
    """While open, silence is expected (workers hold off) and does not make the target unknown."""
    sim = Sim()
    for outcome in ("fail", "fail", "fail"):
        sim.feed(outcome)
    assert sim.advance(39.0) == []
    assert sim.advance(100.0) == []
    assert (sim.last().state, sim.last().breaker) == ("unavailable", "open")


# ---------------------------------------------------------------- rejected input


def test_rejects_leave_state_unchanged() -> None:
    """Unknown target, absurd timestamps and out-of-order results raise Rejected and change nothing."""
    sim = Sim()
    sim.feed("pass")
    sim.feed("pass")
    d = sim.decider
    before = d.state("db")
    now = at(sim.t)
    with pytest.raises(Rejected) as info:
        d.on_result(result(sim.t, name="nope"), now)
    assert info.value.reason == "unknown_target"
    with pytest.raises(Rejected) as info:
        d.on_result(result(sim.t + 3600, "fail"), now)
    assert info.value.reason == "stale_timestamp"
    with pytest.raises(Rejected) as info:
        d.on_result(result(sim.t - 3600, "fail"), now)
    assert info.value.reason == "stale_timestamp"
    with pytest.raises(Rejected) as info:
        d.on_result(result(sim.t - 5, "fail"), now)
    assert info.value.reason == "out_of_order"
    assert d.state("db") == before
    assert d.vantage_points("db") == 1


def test_vantage_points_are_bounded() -> None:
    """A flood of new probe ids cannot grow memory past the cap or push out live points."""
    sim = Sim()
    d = sim.decider
    for i in range(MAX_VANTAGE_POINTS):
        d.on_result(result(sim.t, probe=f"p{i}"), at(sim.t))
    with pytest.raises(Rejected) as info:
        d.on_result(result(sim.t, probe="spoof"), at(sim.t))
    assert info.value.reason == "too_many_probes"
    assert d.vantage_points("db") == MAX_VANTAGE_POINTS
    sim.t += 16.0  # all silent now: a new one replaces the stalest
    d.on_result(result(sim.t, probe="late"), at(sim.t))
    assert d.vantage_points("db") == MAX_VANTAGE_POINTS


def test_long_silent_points_are_forgotten() -> None:
    """Vantage points silent for many stale_after periods are dropped from memory."""
    sim = Sim()
    sim.feed("pass")
    sim.feed("pass")
    sim.advance(16.0)
    sim.advance(200.0)
    assert sim.decider.vantage_points("db") == 0
    assert sim.decider.next_deadline() is None


# ---------------------------------------------------------------- restore


def test_restore_continues_seq_and_emits_nothing() -> None:
    """A restored target continues at seq + 1 with previous = the restored state."""
    first = Sim()
    for outcome in ("pass", "pass", "fail", "fail", "fail"):
        first.feed(outcome)
    last = first.last()
    second = Decider([target()], rng=random.Random(0), now=at(100.0))
    assert second.restore(last, at(100.0)) is True
    assert second.state("db") == ("unavailable", "open", 2)
    # retry_at passed while it was down: results are trials at once; the next event is seq 3.
    assert second.tick(at(100.0)) == []
    (event,) = second.on_result(result(100.1), at(100.1))
    assert (event.seq, event.previous, event.state) == (3, "unavailable", "healthy")


def test_restore_is_silent_until_something_changes() -> None:
    """Restoring a healthy target emits nothing; results that agree emit nothing either."""
    first = Sim()
    first.feed("pass")
    first.feed("pass")
    d = Decider([target()], rng=random.Random(0), now=at(50.0))
    d.restore(first.last(), at(50.0))
    assert d.tick(at(50.0)) == []
    assert d.on_result(result(51.0), at(51.0)) == []
    assert d.on_result(result(52.0), at(52.0)) == []
    assert d.tick(at(60.0)) == []
    (event,) = (
        d.on_result(result(61.0, "fail"), at(61.0))
        + d.on_result(result(62.0, "fail"), at(62.0))
        + (d.on_result(result(63.0, "fail"), at(63.0)))
    )
    assert (event.seq, event.previous, event.state) == (2, "healthy", "unavailable")


def test_restore_open_breaker_keeps_retry_at() -> None:
    """A restored open breaker takes trials from the restored retry_at on, not before."""
    ev = StateChanged(
        target="db",
        seq=7,
        at=T0 + timedelta(seconds=100),
        previous="healthy",
        state="unavailable",
        breaker="open",
        reason="x",
        attempt=3,
        retry_at=T0 + timedelta(seconds=110),
    )
    d = Decider([target()], rng=random.Random(0), now=at(105.0))
    d.restore(ev, at(105.0))
    assert d.on_result(result(106.0), at(106.0)) + d.on_result(result(107.0), at(107.0)) == []
    assert d.tick(at(110.0)) == []
    (event,) = d.on_result(result(110.1), at(110.1))
    assert (event.seq, event.state, event.attempt) == (8, "healthy", 0)
    assert event.ramp is not None
    assert event.ramp.readmission == 3


def test_restore_silence_grace_then_unknown() -> None:
    """After a restore, a healthy target becomes unknown only after stale_after of silence."""
    ev = StateChanged(target="db", seq=2, at=T0, previous="unknown", state="healthy", breaker="closed", reason="x")
    d = Decider([target()], rng=random.Random(0), now=at(1000.0))
    d.restore(ev, at(1000.0))
    assert d.tick(at(1014.0)) == []
    (event,) = d.tick(at(1015.0))
    assert (event.seq, event.state) == (3, "unknown")


def test_restore_ignores_unconfigured_and_older() -> None:
    """An event for an unconfigured target, or not newer than known, is ignored."""
    d = Decider([target()], rng=random.Random(0), now=at(0.0))
    ev = StateChanged(target="gone", seq=2, at=T0, previous="unknown", state="healthy", breaker="closed", reason="x")
    assert d.restore(ev, at(0.0)) is False
    ev2 = StateChanged(target="db", seq=2, at=T0, previous="unknown", state="healthy", breaker="closed", reason="x")
    assert d.restore(ev2, at(0.0)) is True
    assert d.restore(ev2, at(0.0)) is False
    assert d.current("db") == ev2


# ---------------------------------------------------------------- operator control


def test_force_open_holds_until_reset_then_trial() -> None:
    """force-open announces unavailable/forced_open, ignores results, and reset goes half-open."""
    sim = Sim()
    sim.feed("pass")
    sim.feed("pass")
    (forced,) = sim.control("force-open", reason="maintenance")
    assert (forced.state, forced.breaker, forced.retry_at) == ("unavailable", "forced_open", None)
    assert "maintenance" in forced.reason
    assert sim.control("force-open") == []  # idempotent
    for _ in range(5):
        assert sim.feed("pass") == []
    (reset,) = sim.control("reset", reason="done")
    assert (reset.state, reset.breaker) == ("recovering", "half_open")
    sim.feed("pass")
    sim.feed("pass")
    assert sim.states() == ["healthy", "unavailable", "recovering", "healthy"]
    assert_contiguous(sim.events)


def test_disable_is_unknown_and_ignores_results() -> None:
    """disable announces unknown/disabled and no result changes it until reset."""
    sim = Sim()
    sim.feed("pass")
    sim.feed("pass")
    (disabled,) = sim.control("disable")
    assert (disabled.state, disabled.breaker) == ("unknown", "disabled")
    for _ in range(5):
        assert sim.feed("fail") == []
    assert sim.advance(100.0) == []
    (reset,) = sim.control("reset")
    assert reset.breaker == "half_open"


def test_reset_on_closed_target_without_change_is_silent() -> None:
    """reset of a healthy closed target changes nothing and emits nothing."""
    sim = Sim()
    sim.feed("pass")
    sim.feed("pass")
    assert sim.control("reset") == []


def test_control_unknown_target_and_status() -> None:
    """An unknown target raises ControlError; status never emits."""
    sim = Sim()
    with pytest.raises(ControlError):
        sim.control("force-open", name="nope")
    with pytest.raises(ControlError):
        sim.control("explode")
    assert sim.control("status") == []


def test_restored_forced_open_stays_forced() -> None:
    """An operator override survives a restart: results do not lift it."""
    ev = StateChanged(
        target="db", seq=4, at=T0, previous="healthy", state="unavailable", breaker="forced_open", reason="forced"
    )
    d = Decider([target()], rng=random.Random(0), now=at(0.0))
    d.restore(ev, at(0.0))
    for i in range(1, 6):
        assert d.on_result(result(float(i)), at(float(i))) == []
    assert d.tick(at(1000.0)) == []


# ---------------------------------------------------------------- flapping


def test_flapping_holds_degraded_then_settles() -> None:
    """Rapid healthy/degraded changes mark the target flapping, held degraded until it settles."""
    flap = FlapSettings(enabled=True, window=11, low=0.2, high=0.4)
    sim = Sim(target(success_threshold=1, flap=flap))
    for _ in range(6):
        sim.feed("pass")
        sim.feed("warn")
    flapping = [e for e in sim.events if e.flapping]
    assert flapping, sim.states()
    assert flapping[0].state == "degraded"
    assert "flapping" in flapping[0].reason
    # once flapping, the alternation no longer changes the announced state
    n = len(sim.events)
    sim.feed("pass")
    sim.feed("warn")
    assert len(sim.events) == n
    for _ in range(30):
        sim.feed("pass")
    assert sim.last().state == "healthy"
    assert sim.last().flapping is False
    assert "stopped flapping" in sim.last().reason
    assert_contiguous(sim.events)


def test_deterministic_with_seed() -> None:
    """Same inputs and seed → identical events (full jitter included)."""

    def run() -> list[StateChanged]:
        sim = Sim(target(backoff=BackoffSettings(jitter="full")), seed=42)
        for outcome in ("pass", "pass", "fail", "fail", "fail"):
            sim.feed(outcome)
        for _ in range(4):
            sim.advance(60.0)
            sim.feed("fail", dt=0.0)
        return sim.events

    assert run() == run()


def test_point_heard_again_after_silence_goes_stale_again() -> None:
    """A vantage point that comes back after going stale is timed again (regression found by hypothesis)."""
    sim = Sim(target(success_threshold=1))
    sim.feed("pass", dt=0.0)
    assert sim.advance(15.0)[0].state == "unknown"
    assert sim.feed("pass", dt=0.0)[0].state == "healthy"
    (event,) = sim.advance(15.0)
    assert event.state == "unknown"


def test_reset_without_live_data_is_unknown() -> None:
    """An operator reset decides afresh: with no live vantage point the target is unknown, never healthy."""
    sim = Sim(target(success_threshold=1))
    sim.feed("pass", dt=0.0)
    sim.control("disable")
    sim.advance(20.0)
    (event,) = sim.control("reset")
    assert event.breaker == "half_open"
    sim.advance(15.0)
    assert sim.last().state == "unknown"


def test_older_result_accepted_once_point_went_silent() -> None:
    """Out-of-order applies to a live vantage point; a silent one (worker clock stepped back) starts afresh."""
    sim = Sim()
    d = sim.decider
    d.on_result(result(20.0), at(10.0))  # this worker's clock runs 10 s ahead
    with pytest.raises(Rejected) as info:
        d.on_result(result(19.0), at(11.0))
    assert info.value.reason == "out_of_order"
    # Silent since 25 s: accepted, and it starts a fresh streak (its first pass decides nothing).
    assert d.on_result(result(18.0), at(30.0)) == []
    (event,) = d.on_result(result(19.0), at(31.0))  # the second pass of the new streak
    assert event.state == "healthy"
    assert event.evidence["p1"].at == T0 + timedelta(seconds=19)
