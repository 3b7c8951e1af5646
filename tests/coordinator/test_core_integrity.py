"""Verdict integrity of the pure core: stale memory never manufactures a verdict.

Evidence older than ``stale_after`` is not evidence: a vantage point heard again after a
silence starts from what it says now, and a failing verdict lapses once the fail results
behind it are older than ``stale_after``.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthbus.coordinator._core import MAX_VANTAGE_POINTS, Decider, Rejected, quorum_need
from healthbus.protocol import (
    BackoffSettings,
    Duration,
    FlapSettings,
    Outcome,
    ProbeResult,
    Ramp,
    RampSettings,
    State,
    StateChanged,
)
from tests.helpers import state_changed

from ._sim import T0, Sim, at, result, target


def _issue_target() -> Sim:
    """The black-box set-up of the report: interval 200 ms, thresholds 2/2, stale_after 1.5 s."""
    return Sim(
        target(
            "tb",
            interval=Duration(0.2),
            failure_threshold=2,
            success_threshold=2,
            stale_after=Duration(1.5),
            quorum="majority",
            backoff=BackoffSettings(base=Duration(0.5), multiplier=2.0, max=Duration(30.0), jitter="none"),
        )
    )


def test_passes_after_silence_do_not_open_the_breaker() -> None:
    """p1 fails four times while p2 and p3 pass, silence, then all pass: never unavailable."""
    sim = _issue_target()
    for _ in range(4):
        sim.feed("fail", probe="p1", name="tb", dt=0.2)
        sim.feed("pass", probe="p2", name="tb", dt=0.0)
        sim.feed("pass", probe="p3", name="tb", dt=0.0)
    assert sim.last("tb").state == "degraded"
    sim.advance(1.51)  # a hair over: 0.8 + 1.5 is not 2.3 in floats
    assert sim.last("tb").state == "unknown"
    mark = len(sim.states("tb"))
    for _ in range(10):
        for probe in ("p1", "p2", "p3"):
            sim.feed("pass", probe=probe, name="tb", dt=0.1 if probe == "p1" else 0.0)
    after = [e for e in sim.events if e.target == "tb"][mark:]
    assert [e.state for e in after] == ["healthy"], [(e.state, e.reason) for e in after]
    assert after[0].breaker == "closed"
    assert "fail" not in after[0].reason


def _bare_fail(t: float, probe: str) -> ProbeResult:
    """A ``fail`` result that carries no error kind (a worker may send one)."""
    return ProbeResult(target="db", probe=probe, outcome="fail", latency_ms=1.0, observed_at=T0 + timedelta(seconds=t))


def test_a_reason_names_only_the_error_kinds_results_carried() -> None:
    """A failing quorum without error kinds says so plainly, never "(fail)"; kinds are named."""
    sim = Sim(target(failure_threshold=1, quorum="any"))
    (opened,) = sim.decider.on_result(_bare_fail(1.0, "p1"), at(1.0))
    assert opened.breaker == "open"
    assert opened.reason.startswith("1/1 probes failing; breaker open"), opened.reason
    assert "(fail)" not in opened.reason
    sim = Sim(target(failure_threshold=1))  # majority
    sim.decider.on_result(result(1.0, "pass", probe="p3"), at(1.0))
    (degraded,) = sim.decider.on_result(_bare_fail(1.0, "p1"), at(1.0))
    assert degraded.reason == "1/2 probes failing", degraded.reason
    (opened,) = sim.decider.on_result(result(1.0, "fail", probe="p2", kind="timeout"), at(1.0))
    assert opened.reason.startswith("2/3 probes failing (timeout; 1 without error kind); breaker open"), opened.reason
    # A failing point whose latest result passed (not yet success_threshold of them) is
    # still failing, and the reason says it is passing again rather than naming a kind.
    sim = Sim(target(failure_threshold=1))
    sim.decider.on_result(result(1.0, "pass", probe="p3"), at(1.0))
    sim.decider.on_result(result(1.0, "fail", probe="p1", kind="dns"), at(1.0))
    assert sim.decider.on_result(result(2.0, "pass", probe="p1"), at(2.0)) == []
    (opened,) = sim.decider.on_result(result(2.0, "fail", probe="p2", kind="timeout"), at(2.0))
    assert opened.reason.startswith("2/3 probes failing (timeout; 1 passing again); breaker open"), opened.reason


def test_a_reason_counts_every_failing_point_that_passes_again() -> None:
    """ "N passing again" counts them all: two failing points whose latest result passed
    (fewer than success_threshold passes: still failing) are two, not one."""
    sim = Sim(target(failure_threshold=1))  # majority; success_threshold 2
    for probe in ("p3", "p4"):
        sim.decider.on_result(result(1.0, "pass", probe=probe), at(1.0))
    sim.decider.on_result(result(1.0, "fail", probe="p1", kind="dns"), at(1.0))
    sim.decider.on_result(result(2.0, "pass", probe="p1"), at(2.0))
    assert sim.decider.on_result(result(2.0, "fail", probe="p2", kind="dns"), at(2.0)) == []  # 2/4: below 3
    assert sim.decider.on_result(result(2.0, "pass", probe="p2"), at(2.0)) == []
    (opened,) = sim.decider.on_result(result(2.0, "fail", probe="p3", kind="timeout"), at(2.0))
    assert opened.reason.startswith("3/4 probes failing (timeout; 2 passing again); breaker open"), opened.reason


def test_a_failed_trials_reason_names_only_the_failed_trials() -> None:
    """A half-open trial that fails is said with the kinds of the points whose trial
    failed, not of points that failed before the trial began (their failures are not
    trial results) nor of a failed trial that lapsed (stale_after) at that very instant."""
    sim = Sim(target(failure_threshold=1, quorum="any"))
    (opened,) = sim.decider.on_result(result(1.0, "fail", probe="p1", kind="timeout"), at(1.0))
    assert opened.breaker == "open"
    sim.decider.on_result(result(1.0, "fail", probe="p2", kind="refused"), at(1.0))  # evidence only
    sim.t = 2.0
    (half_open,) = sim.control("reset")
    assert half_open.breaker == "half_open"
    (failed,) = sim.decider.on_result(result(3.0, "fail", probe="p2", kind="refused"), at(3.0))
    assert failed.breaker == "open"
    assert failed.reason.startswith("trial failed on 1/2 probes (refused); breaker open"), failed.reason

    # Three points, two failed trials needed (majority); p1's failed trial (at 3) lapses
    # at 3 + stale_after = 18, the instant p2's and p3's trials fail.
    sim = Sim(target(failure_threshold=1))
    sim.decider.on_result(result(1.0, "pass", probe="p3"), at(1.0))
    sim.decider.on_result(result(1.0, "fail", probe="p1"), at(1.0))
    (opened,) = sim.decider.on_result(result(1.0, "fail", probe="p2"), at(1.0))
    assert opened.breaker == "open"
    sim.t = 2.0
    sim.control("reset")
    assert sim.decider.on_result(result(3.0, "fail", probe="p1", kind="timeout"), at(3.0)) == []  # 1 of 2
    assert sim.decider.on_result(result(4.0, "pass", probe="p1"), at(4.0)) == []  # one pass: still failed
    for probe in ("p2", "p3"):  # heard from (one pass each: no trial passed yet), so they stay live
        assert sim.decider.on_result(result(10.0, "pass", probe=probe), at(10.0)) == []
    assert sim.decider.tick(at(17.0)) == []
    assert sim.decider.on_result(result(18.0, "fail", probe="p2", kind="refused"), at(18.0)) == []
    (failed,) = sim.decider.on_result(result(18.0, "fail", probe="p3", kind="refused"), at(18.0))
    assert failed.reason.startswith("trial failed on 2/3 probes (refused); breaker open"), failed.reason


def test_a_warn_reason_names_the_kinds_of_latest_warn_results_only() -> None:
    """The warn part of a reason names the error kinds the warn points' latest results
    carried; a warn point whose latest result failed (fewer than failure_threshold: its
    verdict is still warn) carries no warn kind, and the points after it are named."""
    sim = Sim(target(degraded_quorum=2))  # failure_threshold 3, success_threshold 2
    for t in (1.0, 2.0):
        sim.decider.on_result(result(t, "pass", probe="p3"), at(t))
        sim.decider.on_result(result(t, "warn", probe="p1", kind="unhealthy"), at(t))
    assert sim.decider.on_result(result(3.0, "fail", probe="p1", kind="refused"), at(3.0)) == []
    assert sim.decider.state("db")[0] == "healthy"  # one warn point of three: below degraded_quorum
    assert sim.decider.on_result(result(3.0, "warn", probe="p2", kind="timeout"), at(3.0)) == []
    (degraded,) = sim.decider.on_result(result(4.0, "warn", probe="p2", kind="timeout"), at(4.0))
    assert (degraded.state, degraded.reason) == ("degraded", "2/3 probes warn (timeout)")


def test_stopped_flapping_while_waiting_for_verdicts_says_how_many_have_none() -> None:
    """A closed target whose points have no verdict yet stays as it was, and a reason
    given then says "waiting for results: N/M probes have no verdict yet", N counting
    only the points without one. Here flapping ends (window 3, restored flapping and
    unknown) while one of two points has its verdict and quorum "any" needs both."""
    sim = Sim(target(quorum="any", flap=FlapSettings(window=3)))  # success_threshold 2
    assert sim.decider.restore(state_changed("db", 5, "unknown", at=T0, flapping=True), at(0.0))
    assert sim.decider.on_result(result(1.0, "pass", probe="p2"), at(1.0)) == []  # verdicts recorded: 1
    assert sim.decider.on_result(result(1.0, "pass", probe="p1"), at(1.0)) == []  # 2
    (settled,) = sim.decider.on_result(result(2.0, "pass", probe="p1"), at(2.0))  # 3: p1 passing, p2 pending
    assert (settled.state, settled.flapping) == ("unknown", False)
    assert settled.reason == "stopped flapping: waiting for results: 1/2 probes have no verdict yet"


def test_a_mixed_run_of_pass_and_warn_after_failing_counts_as_warn() -> None:
    """docs/coordinator.md, hysteresis: a mixed run of pass and warn success_threshold long,
    coming from failing, counts as warn: the point is no longer failing, so a second
    failing point is one of two (below the majority), not two."""
    sim = Sim(target(failure_threshold=1))  # majority; success_threshold 2
    for t in (0.0, 1.0):
        sim.decider.on_result(result(t, "pass", probe="p2"), at(t))
    (degraded,) = sim.decider.on_result(result(1.0, "fail", probe="p1"), at(1.0))
    assert degraded.reason == "1/2 probes failing (refused)"
    assert sim.decider.on_result(result(2.0, "pass", probe="p1"), at(2.0)) == []
    assert sim.decider.on_result(result(3.0, "warn", probe="p1"), at(3.0)) == []  # p1: warn now
    assert sim.decider.on_result(result(4.0, "fail", probe="p2"), at(4.0)) == []  # 1/2 failing: stays closed
    assert sim.decider.state("db")[:2] == ("degraded", "closed")


def test_a_silent_vantage_point_makes_room_from_the_instant_it_is_silent() -> None:
    """At the cap of vantage points a new probe id replaces the stalest point only once
    that one is silent (not heard for stale_after, 15 s): refused (naming the target and
    the count) a moment before, accepted at that very instant."""
    sim = Sim()
    d = sim.decider
    for i in range(MAX_VANTAGE_POINTS):
        d.on_result(result(1.0 if i == 0 else 2.0, probe=f"p{i}"), at(1.0 if i == 0 else 2.0))
    with pytest.raises(Rejected) as info:
        d.on_result(result(15.5, probe="new"), at(15.5))
    assert (info.value.reason, str(info.value)) == (
        "too_many_probes",
        f"target 'db' already has {MAX_VANTAGE_POINTS} live probes",
    )
    d.on_result(result(16.0, probe="new"), at(16.0))  # p0 heard at 1: silent from 16
    assert d.vantage_points("db") == MAX_VANTAGE_POINTS


def test_a_reason_lists_every_error_kind_and_counts_every_point_without_one() -> None:
    """Kinds are listed sorted, comma-separated; points whose failing result carried no
    kind are counted, all of them."""
    sim = Sim(target(failure_threshold=1, quorum="all", degraded_quorum=5))
    for i in range(1, 6):  # five live points (pending: one pass each), so opening needs all five failing
        sim.decider.on_result(result(0.0, "pass", probe=f"p{i}"), at(0.0))
    sim.decider.on_result(result(1.0, "fail", probe="p1", kind="timeout"), at(1.0))
    sim.decider.on_result(result(1.0, "fail", probe="p2", kind="dns"), at(1.0))
    for probe in ("p3", "p4"):
        sim.decider.on_result(_bare_fail(1.0, probe), at(1.0))
    (opened,) = sim.decider.on_result(_bare_fail(1.0, "p5"), at(1.0))
    assert opened.reason.startswith("5/5 probes failing (dns, timeout; 3 without error kind); breaker open")


def _observed(t: float, skew: float, probe: str = "p1") -> ProbeResult:
    """A pass observed ``skew`` seconds after the coordinator's time ``t``."""
    return ProbeResult(
        target="db", probe=probe, outcome="pass", latency_ms=1.0, observed_at=T0 + timedelta(seconds=t + skew)
    )


@pytest.mark.parametrize(
    ("stale", "skew", "message"),
    [
        (15.0, 15.5, "observed_at is 15.5s in the future (stale_after 15s)"),
        (15.0, -15.5, "observed_at is 15.5s old (stale_after 15s)"),
        (0.5, 0.7, "observed_at is 0.7s in the future (stale_after 0.5s)"),
        (0.5, -0.7, "observed_at is 0.7s old (stale_after 0.5s)"),
    ],
)
def test_a_result_off_by_more_than_stale_after_is_dropped_and_says_why(stale: float, skew: float, message: str) -> None:
    """Results observed more than stale_after away from the coordinator's clock are
    dropped (`stale_timestamp`), the message saying by how much and which way; exactly
    stale_after away is still accepted."""
    sim = Sim(target(stale_after=Duration(stale)))
    with pytest.raises(Rejected) as info:
        sim.decider.on_result(_observed(100.0, skew), at(100.0))
    assert (info.value.reason, str(info.value)) == ("stale_timestamp", message)
    sim.decider.on_result(_observed(100.0, stale, probe="ahead"), at(100.0))
    sim.decider.on_result(_observed(100.0, -stale, probe="behind"), at(100.0))
    assert sim.decider.vantage_points("db") == 2


def test_an_older_result_of_a_live_point_is_dropped_and_says_why() -> None:
    sim = Sim()
    sim.decider.on_result(result(5.0, probe="p1"), at(5.0))
    with pytest.raises(Rejected) as info:
        sim.decider.on_result(result(4.0, probe="p1"), at(5.0))
    assert (info.value.reason, str(info.value)) == ("out_of_order", "older than the last result of probe 'p1'")


def test_one_pass_after_a_long_fail_streak_is_still_failing() -> None:
    """A failing point needs success_threshold passes: one pass after many fails (the
    streak long past failure_threshold) leaves it failing, so a second failing point
    makes two of two and opens the breaker."""
    sim = Sim(target(failure_threshold=1))  # majority; success_threshold 2
    for t in (0.0, 0.5):
        sim.decider.on_result(result(t, "pass", probe="p2"), at(t))
    for t in (1.0, 2.0, 3.0, 4.0):
        sim.decider.on_result(result(t, "fail", probe="p1"), at(t))
    assert sim.decider.on_result(result(5.0, "pass", probe="p1"), at(5.0)) == []
    sim.decider.on_result(result(5.0, "pass", probe="p2"), at(5.0))
    (opened,) = sim.decider.on_result(result(6.0, "fail", probe="p2"), at(6.0))
    assert opened.reason.startswith("2/2 probes failing (refused; 1 passing again); breaker open"), opened.reason


def test_a_long_pass_streak_then_warns_after_its_verdict_lapsed_is_warn() -> None:
    """The passes of a long streak all count toward a mixed pass-and-warn run: once the
    passing verdict lapsed (no pass for stale_after), two warns after eight passes are a
    run of ten, past success_threshold (4): warn."""
    sim = Sim(target(quorum="any", success_threshold=4))
    for t in range(1, 9):
        sim.decider.on_result(result(float(t), "pass"), at(float(t)))
    assert sim.decider.state("db")[0] == "healthy"
    assert sim.decider.on_result(result(15.0, "warn"), at(15.0)) == []
    assert sim.decider.tick(at(23.0)) == []  # the pass verdict lapsed: pending, no opinion
    (warn,) = sim.decider.on_result(result(24.0, "warn"), at(24.0))
    assert (warn.state, warn.reason) == ("degraded", "1/1 probes warn")


def test_a_warn_verdict_lapses_through_fails_below_the_failure_threshold() -> None:
    """A warn verdict lasts while its latest pass or warn is younger than stale_after:
    fails (fewer than failure_threshold) do not keep it; once it lapsed the other point's
    pass makes the target healthy."""
    sim = Sim(target(failure_threshold=5))  # majority; success_threshold 2
    for t in (0.0, 1.0):
        sim.decider.on_result(result(t, "pass", probe="p2"), at(t))
    sim.decider.on_result(result(1.0, "warn", probe="p1"), at(1.0))
    (degraded,) = sim.decider.on_result(result(2.0, "warn", probe="p1"), at(2.0))
    assert degraded.state == "degraded"
    for t in (5.0, 10.0, 15.0):
        assert sim.decider.on_result(result(t, "fail", probe="p1"), at(t)) == []
        assert sim.decider.on_result(result(t, "pass", probe="p2"), at(t)) == []
    (healthy,) = sim.decider.tick(at(17.0))  # p1's warn (at 2) lapsed
    assert (healthy.state, healthy.reason) == ("healthy", "1/2 probes passing")


def test_a_failing_verdict_that_lapses_at_that_instant_is_not_named() -> None:
    """A verdict counts while its latest agreeing result is younger than stale_after: at
    exactly stale_after it no longer does, in the count and in the reason alike."""
    sim = Sim(target(failure_threshold=1, success_threshold=3))  # majority
    for p in ("p2", "p3"):
        sim.decider.on_result(result(1.0, "pass", probe=p), at(1.0))
    sim.decider.on_result(result(3.0, "fail", probe="p1", kind="timeout"), at(3.0))
    sim.decider.on_result(result(4.0, "pass", probe="p1"), at(4.0))  # still failing
    for p in ("p2", "p3"):
        sim.decider.on_result(result(10.0, "pass", probe=p), at(10.0))
    sim.decider.tick(at(18.0))  # p1's fail (at 3) lapses now
    assert sim.decider.on_result(result(18.0, "fail", probe="p2"), at(18.0)) == []
    (opened,) = sim.decider.on_result(result(18.0, "fail", probe="p3"), at(18.0))
    assert opened.reason.startswith("2/3 probes failing (refused); breaker open"), opened.reason


def test_flapping_that_stops_on_a_steady_result_says_what_the_probes_say() -> None:
    """Flapping ends on the result that fills the window with steady verdicts (here the
    fourth pass, one that changes nothing else), and the event's reason gives the current
    counts after "stopped flapping: "."""
    sim = Sim(target(quorum="any", flap=FlapSettings(window=3)))  # success_threshold 2
    # Restored flapping: held degraded.
    assert sim.decider.restore(state_changed("db", 5, "degraded", at=T0, flapping=True), at(0.0))
    for t in (1.0, 2.0, 3.0):  # verdicts recorded: degraded (pending), healthy, healthy
        assert sim.decider.on_result(result(t, "pass"), at(t)) == []
    (settled,) = sim.decider.on_result(result(4.0, "pass"), at(4.0))  # healthy, healthy, healthy
    assert (settled.state, settled.flapping) == ("healthy", False)
    assert settled.reason == "stopped flapping: 1/1 probes passing"


@pytest.mark.parametrize(
    ("restored", "outcome", "success_threshold", "reason"),
    [
        ("unknown", "pass", 5, "stopped flapping: waiting for results: 1/1 probes have no verdict yet"),
        ("degraded", "warn", 2, "stopped flapping: 1/1 probes warn"),
    ],
)
def test_flapping_that_stops_while_unknown_or_degraded_says_so(
    restored: State, outcome: Outcome, success_threshold: int, reason: str
) -> None:
    """The same on a steady run that leaves the state as restored: pending points
    (waiting for verdicts) or a warn point."""
    sim = Sim(target(quorum="any", success_threshold=success_threshold, flap=FlapSettings(window=3)))
    assert sim.decider.restore(state_changed("db", 5, restored, at=T0, flapping=True), at(0.0))
    for t in (1.0, 2.0):
        assert sim.decider.on_result(result(t, outcome), at(t)) == []
    (settled,) = sim.decider.on_result(result(3.0, outcome), at(3.0))
    assert (settled.state, settled.flapping, settled.reason) == (restored, False, reason)


# ---------------------------------------------------------------- properties

# Times on a quarter-second grid: wall-clock instants are then exact, so a restored
# retry_at falls on the same instant as the one it was decided from.
quarters = st.integers(0, 24).map(lambda q: q / 4)
outcomes = st.sampled_from(["pass", "pass", "warn", "fail", "fail"])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("run"), st.integers(0, 2), outcomes, quarters, st.integers(1, 5)),
        st.tuples(st.just("tick"), st.integers(0, 80).map(lambda q: q / 4)),
    ),
    min_size=1,
    max_size=40,
)
controls = st.tuples(st.just("control"), st.sampled_from(["force-open", "disable", "reset"]))
stale_afters = st.sampled_from([Duration(2.0), Duration(4.0), Duration(15.0)])
configs = st.fixed_dictionaries(
    {
        "failure_threshold": st.integers(1, 4),
        "success_threshold": st.integers(1, 3),
        "quorum": st.sampled_from(["majority", "any", "all", 1, 2]),
        "stale_after": stale_afters,
        "backoff": st.builds(
            BackoffSettings,
            base=st.sampled_from([Duration(0.5), Duration(1.0), Duration(5.0)]),
            multiplier=st.sampled_from([1.0, 2.0, 3.0]),
            max=st.sampled_from([Duration(5.0), Duration(60.0)]),
            jitter=st.sampled_from(["none", "full", "decorrelated"]),
        ),
    }
)


class Log:
    """Every result delivered (time, probe, outcome) and every event with its time."""

    def __init__(self) -> None:
        self.results: list[tuple[float, str, str]] = []
        # (time, event, cause, how many results had been delivered by then)
        self.events: list[tuple[float, StateChanged, str, int]] = []

    def add(self, t: float, out: list[StateChanged], cause: str) -> None:
        self.events.extend((t, e, cause, len(self.results)) for e in out)


def drive(sim: Sim, plan: list[tuple[Any, ...]], log: Log) -> None:
    """Feed ``plan`` to ``sim``: timers run before every result, as the service runs them."""
    for step in plan:
        if step[0] == "run":
            _, p, outcome, dt, count = step
            for _ in range(count):
                ticked = sim.advance(dt)  # before reading sim.t: the timers run at the new time
                log.add(sim.t, ticked, "timer")
                out = sim.decider.on_result(result(sim.t, outcome, probe=f"p{p}"), at(sim.t))
                sim.events.extend(out)
                log.results.append((sim.t, f"p{p}", outcome))
                log.add(sim.t, out, outcome)
        elif step[0] == "tick":
            ticked = sim.advance(step[1])
            log.add(sim.t, ticked, "timer")
        else:
            log.add(sim.t, sim.control(step[1]), "control")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, plan=st.lists(st.one_of(steps.map(tuple), controls), max_size=6), seed=st.integers(0, 99))
def test_stale_results_never_count_and_a_pass_never_opens(config: dict[str, Any], plan: list[Any], seed: int) -> None:
    """A pass never yields an opening or ``unavailable``; every opening rests on a failing
    quorum of results received within stale_after."""
    flat = [s for part in plan for s in (part if isinstance(part[0], tuple) else (part,))]
    sim = Sim(target(**config), seed=seed)
    log = Log()
    drive(sim, flat, log)
    stale = float(config["stale_after"])
    before: StateChanged | None = None
    for t, e, cause, delivered in log.events:
        if cause == "pass":
            assert e.state != "unavailable", e.reason
            assert e.breaker != "open", e.reason
        opened = e.breaker == "open" and (before is None or before.breaker != "open" or e.attempt > before.attempt)
        if opened:
            recent = [(p, o) for h, p, o in log.results[:delivered] if t - h < stale]
            live = {p for p, _ in recent}
            failing = {p for p, o in recent if o == "fail"}
            assert live, e.reason
            assert len(failing) >= quorum_need(config["quorum"], len(live)), (e.reason, recent)
        assert "(fail)" not in e.reason
        assert "(warn)" not in e.reason
        before = e


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=configs,
    history=st.lists(st.one_of(steps.map(tuple), controls), max_size=5),
    after=steps,
    seed=st.integers(0, 99),
)
def test_after_a_silence_only_new_results_decide(
    config: dict[str, Any], history: list[Any], after: list[tuple[Any, ...]], seed: int
) -> None:
    """After a silence of stale_after or more, what happens next is what a coordinator that
    never saw the earlier results (restored from the last event only) decides."""
    config = {**config, "backoff": BackoffSettings(**{**_backoff_fields(config["backoff"]), "jitter": "none"})}
    flat = [s for part in history for s in (part if isinstance(part[0], tuple) else (part,))]
    stale = float(config["stale_after"])
    sim = Sim(target(**config), seed=seed)
    drive(sim, flat, Log())
    # The silence: stale_after at least, then until the timers have nothing more to say
    # (a breaker may go half-open during it and then need stale_after to turn unknown).
    sim.advance(stale)
    for _ in range(100):
        if not sim.advance(stale):
            break
    fresh = Sim(target(**config), seed=seed, start=sim.t)
    if sim.events:
        assert fresh.decider.restore(sim.events[-1], at(sim.t))
    mark = len(sim.events)
    drive(sim, after, Log())
    drive(fresh, after, Log())

    def shape(events: list[StateChanged]) -> list[tuple[Any, ...]]:
        return [(e.seq, e.previous, e.state, e.breaker, e.attempt, e.failures, e.retry_at) for e in events]

    assert shape(sim.events[mark:]) == shape(fresh.events)


def _backoff_fields(b: BackoffSettings) -> dict[str, Any]:
    return {"base": b.base, "multiplier": b.multiplier, "max": b.max}


# ---------------------------------------------------------------- flapping


def _outage(sim: Sim, probes: int, fail_rounds: int, pass_rounds: int, dt: float) -> None:
    """Every probe passes, then fails for ``fail_rounds`` rounds, then passes again."""
    phases: tuple[tuple[Outcome, int], ...] = (("pass", 6), ("fail", fail_rounds), ("pass", pass_rounds))
    for outcome, rounds in phases:
        for _ in range(rounds):
            for p in range(probes):
                sim.feed(outcome, probe=f"p{p}", dt=dt if p == 0 else 0.0)


def test_a_long_outage_comes_back_healthy_not_flapping() -> None:
    """A dependency down through many failed trials, then back, is healthy: the breaker's
    own trials (the breaker stays open through failed ones) are not changes in what it answers."""
    sim = Sim(
        target(
            interval=Duration(1.0),
            stale_after=Duration(3.0),
            backoff=BackoffSettings(base=Duration(0.5), multiplier=1.0, max=Duration(0.5), jitter="none"),
            flap=FlapSettings(),
        )
    )
    _outage(sim, probes=3, fail_rounds=40, pass_rounds=10, dt=1.0)
    assert "recovering" not in [e.state for e in sim.events]  # trials failed silently, open throughout
    assert sim.last().state == "healthy"
    assert not any(e.flapping for e in sim.events)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=configs,
    probes=st.integers(1, 3),
    fail_rounds=st.integers(0, 120),
    pass_rounds=st.integers(0, 40),
    dt=st.sampled_from([0.25, 0.5, 1.0]),
    window=st.sampled_from([11, 21]),
    seed=st.integers(0, 99),
)
def test_failures_of_any_length_then_passes_never_flap(
    config: dict[str, Any], probes: int, fail_rounds: int, pass_rounds: int, dt: float, window: int, seed: int
) -> None:
    """A run of failures of any length followed by a run of passes never yields flapping."""
    sim = Sim(target(**config, flap=FlapSettings(window=window)), seed=seed)
    _outage(sim, probes, fail_rounds, pass_rounds, dt)
    assert not any(e.flapping for e in sim.events), [(e.state, e.breaker) for e in sim.events]


def test_a_dependency_that_keeps_going_down_and_up_still_flaps() -> None:
    """Changes in what the dependency answers still count: down, back, down, back... flaps."""
    sim = Sim(
        target(
            failure_threshold=1,
            success_threshold=1,
            interval=Duration(1.0),
            stale_after=Duration(3.0),
            backoff=BackoffSettings(base=Duration(0.5), multiplier=1.0, max=Duration(0.5), jitter="none"),
            flap=FlapSettings(window=11),
        )
    )
    for _ in range(8):
        sim.feed("fail", dt=1.0)
        sim.feed("pass", dt=1.0)
    assert any(e.flapping for e in sim.events), [(e.state, e.breaker) for e in sim.events]


def test_a_lapsed_verdict_given_again_is_a_change() -> None:
    """A failing verdict that lapsed (its fail older than stale_after, the point still live)
    and is given again by one new fail makes the target degraded again at once.

    The core once took the lapsed verdict for the current one and skipped the evaluation,
    so the target stayed healthy with a failing vantage point (found by the reference decider).
    """
    sim = Sim(target(failure_threshold=1, success_threshold=2, quorum="all"))
    sim.feed("pass", probe="p1", dt=0.0)
    sim.feed("pass", probe="p2", dt=0.0)
    (down,) = sim.feed("fail", probe="p1", dt=1.0)  # t=1: p1 failing
    assert down.state == "degraded"
    sim.feed("pass", probe="p2", dt=5.0)  # p2 passing
    sim.feed("pass", probe="p1", dt=8.0)  # t=14: one pass, p1 still failing
    sim.feed("pass", probe="p2", dt=1.0)
    (up,) = sim.advance(1.5)  # t=16.5: p1's fail is older than stale_after: lapsed
    assert (up.state, up.reason) == ("healthy", "1/2 probes passing")
    (again,) = sim.feed("fail", probe="p1", dt=0.5)  # a new fail: failing again
    assert (again.state, again.reason) == ("degraded", "1/2 probes failing (refused)")


def test_a_disabled_target_forgets_long_silent_vantage_points() -> None:
    """A vantage point not heard from for 10 x stale_after is forgotten whatever the breaker:
    a disabled target reset long after no longer names it in its evidence."""
    sim = Sim(target())
    sim.control("disable")
    sim.feed("pass", probe="p1", dt=1.0)  # recorded while disabled
    sim.advance(20.0)
    sim.advance(200.0)
    (trial,) = sim.control("reset")
    assert (trial.breaker, trial.evidence) == ("half_open", {})


def test_a_forced_open_target_forgets_long_silent_vantage_points() -> None:
    """The same while forced open without an end: its evidence drops the silent point."""
    sim = Sim(target())
    sim.control("force-open")
    sim.feed("pass", probe="p1", dt=1.0)  # recorded while forced open
    assert sim.decider.vantage_points("db") == 1
    sim.advance(20.0)
    sim.advance(200.0)
    assert sim.decider.vantage_points("db") == 0


def test_the_next_timer_of_a_silent_target_is_the_moment_its_point_is_forgotten() -> None:
    """With nothing else due, the core's next deadline is when the last silent vantage
    point is forgotten (heard + 10 x stale_after), not earlier: a service sleeps until it."""
    sim = Sim(target())  # stale_after 15
    sim.feed("pass", probe="p1", dt=1.0)  # heard at 1
    sim.advance(15.0)  # t=16: silent; the grace of the start is over too
    sim.advance(20.0)  # t=36: unknown since 31 (no live point, grace over)
    assert sim.decider.state("db")[0] == "unknown"
    assert sim.decider.next_deadline() == 1.0 + 150.0


def test_an_open_target_forgets_long_silent_vantage_points() -> None:
    """The same while open (past retry_at nothing else is due: results are trials)."""
    sim = Sim(target(failure_threshold=1, quorum="any"))
    (opened,) = sim.feed("fail", probe="p1", dt=1.0)
    assert opened.breaker == "open"
    sim.advance(20.0)
    sim.advance(200.0)
    assert sim.decider.vantage_points("db") == 0


def test_after_a_verdict_lapses_the_next_deadline_is_when_its_point_goes_stale() -> None:
    """A passing point heard since only with a warn: its verdict lapses stale_after after
    its last pass (17), and the point goes stale stale_after after the warn (20); the
    timer at the lapse asks to be woken at 20, not at once."""
    sim = Sim(target(quorum="any"))  # stale_after 15, success_threshold 2
    for t in (1.0, 2.0):
        sim.decider.on_result(result(t, "pass"), at(t))
    sim.decider.on_result(result(5.0, "warn"), at(5.0))
    sim.decider.tick(at(16.0))
    assert sim.decider.next_deadline() == 17.0
    sim.decider.tick(at(17.0))
    assert sim.decider.next_deadline() == 20.0


def test_a_failed_trials_lapse_is_a_deadline() -> None:
    """Half-open: a point's failed trial lapses stale_after after its fail (18), before
    the point goes stale (19); the timer asks to be woken then."""
    sim = Sim(target(failure_threshold=3))  # majority; success_threshold 2
    for t in (1.0, 2.0):
        for p in ("p1", "p2"):
            sim.decider.on_result(result(t, "pass", probe=p), at(t))
    sim.t = 2.0
    sim.control("force-open")
    (half_open,) = sim.control("reset")
    assert half_open.breaker == "half_open"
    assert sim.decider.on_result(result(3.0, "fail", probe="p1"), at(3.0)) == []  # failed trial: 1 of 2
    for p in ("p1", "p2"):  # one pass each: no trial passed yet
        assert sim.decider.on_result(result(4.0, "pass", probe=p), at(4.0)) == []
    assert sim.decider.tick(at(17.0)) == []  # the half-open state's own timer
    assert sim.decider.next_deadline() == 18.0


def test_a_silent_point_is_forgotten_at_its_moment_while_others_are_live() -> None:
    """The forget moment (heard + 10 x stale_after) is a deadline even while another point
    is live and its own deadlines are later."""
    sim = Sim(target())
    sim.decider.on_result(result(1.0, probe="p1"), at(1.0))  # then silent: forgotten at 151
    for t in range(10, 141, 10):
        sim.decider.tick(at(float(t)))
        sim.decider.on_result(result(float(t), probe="p2"), at(float(t)))
    sim.decider.tick(at(145.0))
    assert sim.decider.next_deadline() == 151.0
    sim.decider.tick(at(152.0))
    assert sim.decider.vantage_points("db") == 1


def test_a_half_open_target_without_live_points_waits_stale_after_from_going_half_open() -> None:
    """Half-open with no live point: unknown only stale_after after it went half-open (10 +
    15), not after the target's start; the timer is set to that moment."""
    sim = Sim(target(failure_threshold=1, quorum="any"))
    (opened,) = sim.feed("fail", probe="p1", dt=1.0)
    assert opened.breaker == "open"
    sim.t = 10.0
    (half_open,) = sim.control("reset")
    assert half_open.breaker == "half_open"
    assert sim.decider.tick(at(16.0)) == []  # p1 goes stale
    assert sim.decider.next_deadline() == 25.0
    (unknown,) = sim.decider.tick(at(25.0))
    assert (unknown.state, unknown.breaker) == ("unknown", "half_open")


def test_a_half_open_targets_silent_point_is_forgotten_at_its_moment() -> None:
    """Half-open after a reset with no live point: its timer is the earlier of the moment
    it becomes unknown (stale_after after the reset) and the moment its silent point is
    forgotten (heard + 10 x stale_after)."""
    sim = Sim(target())
    sim.control("disable")
    sim.feed("pass", probe="p1", dt=1.0)  # heard at 1 while disabled: forgotten at 151
    sim.decider.tick(at(100.0))
    sim.t = 140.0
    (trial,) = sim.control("reset")
    assert trial.breaker == "half_open"
    assert sim.decider.tick(at(151.0)) == []
    assert sim.decider.vantage_points("db") == 1  # silent for exactly 150 s: not yet (more than)
    assert sim.decider.tick(at(152.0)) == []
    assert sim.decider.vantage_points("db") == 0  # forgotten, not only once unknown at 155


def test_targets_with_different_settings_each_keep_their_own() -> None:
    """Targets share their settings in memory only when they are equal: of two targets
    alike but for flap detection (on for b only), fed the same results, b flaps and a
    never does."""
    sim = Sim(
        target("a", failure_threshold=1, quorum="any"),
        target("b", failure_threshold=1, quorum="any", flap=FlapSettings(window=3)),
    )
    for t in (1.0, 2.0, 3.0):
        for name in ("a", "b"):
            sim.events += sim.decider.on_result(result(t, "fail" if t == 3.0 else "pass", name=name), at(t))
    assert [(e.target, e.breaker) for e in sim.events if e.breaker == "open"] == [("a", "open"), ("b", "open")]
    sim.t = 3.0
    for name in ("a", "b"):
        sim.control("reset", name=name)
    for t in (4.0, 5.0, 6.0, 7.0, 8.0):  # trials pass, then back and forth
        sim.events += sim.decider.tick(at(t))
        for name in ("a", "b"):
            sim.events += sim.decider.on_result(result(t, "pass" if t % 2 else "fail", name=name), at(t))
    assert any(e.flapping for e in sim.events if e.target == "b"), [(e.state, e.flapping) for e in sim.events]
    assert not any(e.flapping for e in sim.events if e.target == "a")


def test_a_ramp_with_under_a_second_left_is_restored_too() -> None:
    """A restored ramp goes on until it was announced to end, however little is left: a
    failure in its last half second is a failed re-admission (attempt 3 after the second
    re-admission), not a fresh outage (attempt 1)."""
    sim = Sim(target(failure_threshold=1, quorum="any", ramp=RampSettings(duration=Duration(10.0))))
    ramp = Ramp(started_at=T0, duration_s=10.0, from_share=0.1, readmission=2)
    assert sim.decider.restore(state_changed("db", 7, "healthy", at=T0, ramp=ramp), at(9.5))
    (opened,) = sim.decider.on_result(result(9.6, "fail"), at(9.6))
    assert (opened.breaker, opened.attempt) == ("open", 3)


def test_a_timer_that_changes_nothing_is_no_flap_verdict() -> None:
    """Flap detection counts a timer's evaluation only when it changes the verdict: two
    points going stale while a third keeps the target degraded leave a restored flapping
    target flapping (window 5: four verdicts recorded, not six)."""
    sim = Sim(target(quorum="any", flap=FlapSettings(window=5)))
    assert sim.decider.restore(state_changed("db", 5, "degraded", at=T0, flapping=True), at(0.0))
    heard: list[tuple[float, Outcome, str]] = [(1.0, "pass", "p2"), (1.0, "warn", "p1"), (1.5, "pass", "p3")]
    for t, outcome, probe in [*heard, (2.0, "warn", "p1")]:  # four verdicts; p2 and p3 pending
        assert sim.decider.on_result(result(t, outcome, probe=probe), at(t)) == []
    assert sim.decider.tick(at(16.0)) == []  # p2 goes stale: still degraded (p1 warn)
    assert sim.decider.tick(at(16.5)) == []  # p3 too
    current = sim.decider.current("db")
    assert current is not None
    assert current.flapping


def test_a_point_is_forgotten_only_when_silent_for_more_than_ten_stale_afters() -> None:
    """At the instant p2 has been silent for exactly 10 x stale_after (150 s) it stays,
    while p1, silent longer, goes."""
    sim = Sim(target())
    sim.control("disable")
    sim.decider.on_result(result(1.0, probe="p1"), at(1.0))
    sim.decider.on_result(result(1.5, probe="p2"), at(1.5))
    sim.decider.tick(at(151.5))
    assert sim.decider.vantage_points("db") == 1


def test_a_lapsed_failing_verdict_brought_back_is_decided() -> None:
    """A failing point whose fail lapsed (only slow passes since) is re-decided when a
    fresh fail makes it failing again: the target goes back to degraded at once."""
    sim = Sim(target(failure_threshold=1, success_threshold=3, stale_after=Duration(3.0)))

    def round_(p1: Outcome) -> None:
        sim.feed(p1, probe="p1", dt=1.0)
        sim.feed("pass", probe="p2", dt=0.0)
        sim.feed("pass", probe="p3", dt=0.0)

    for _ in range(3):
        round_("pass")
    assert sim.last().state == "healthy"
    round_("fail")
    assert sim.last().state == "degraded"
    round_("pass")
    round_("pass")
    sim.advance(1.01)  # the fail is now older than stale_after: p1 no longer counts as failing
    assert sim.last().state == "healthy"
    assert "probes passing" in sim.last().reason
    sim.feed("fail", probe="p1", dt=0.1)
    assert sim.last().state == "degraded", [(e.state, e.reason) for e in sim.events[-3:]]


def test_a_point_going_stale_at_the_timer_is_not_named_among_the_kinds() -> None:
    """At the very moment a vantage point goes stale (its timer, heard + stale_after), it
    is no longer counted, and the reason names the kinds of the live points only (all of
    them, whatever order the points were first heard in)."""
    d = Decider(
        [target(failure_threshold=1, success_threshold=1, quorum="all", degraded_quorum=2)],
        rng=random.Random(0),
        now=at(0.0),
    )
    for probe in ("p1", "p2", "p3"):
        d.on_result(result(0.0, "pass", probe), at(0.0))
    d.on_result(result(0.0, "fail", "p1", kind="refused"), at(0.0))  # p1: first heard, failing
    out = d.on_result(result(5.0, "fail", "p2", kind="timeout"), at(5.0))
    assert [e.state for e in out] == ["degraded"]
    for t in (10.0, 14.0):
        d.on_result(result(t, "fail", "p2", kind="timeout"), at(t))
        d.on_result(result(t, "pass", "p3"), at(t))
    assert d.next_deadline() == 15.0  # p1, heard at 0, goes stale
    (healthy,) = d.tick(at(15.0))
    assert healthy.state == "healthy"
    assert healthy.reason == "1/2 probes failing (timeout), below degraded_quorum 2: ignored"


def test_a_restored_target_turns_unknown_after_stale_after_without_results() -> None:
    """A restored state is kept for stale_after (results may be on their way), then, with no
    result from any probe, the target is unknown: the restore arms that timer."""
    d = Decider([target(stale_after=Duration(15.0))], rng=random.Random(0), now=at(100.0))
    assert d.restore(state_changed("db", 3, "healthy", at=T0 + timedelta(seconds=99)), at(100.0))
    assert d.next_deadline() == 115.0
    assert d.tick(at(114.0)) == []
    (unknown,) = d.tick(at(115.0))
    assert (unknown.seq, unknown.previous, unknown.state) == (4, "healthy", "unknown")
