"""Rules of docs/coordinator.md that no other test pinned, each written from the rule.

Mutation testing of the core (scripts/mutation, docs/testing.md) found code that could
be changed against these rules with every test still passing; each test here names the
rule it holds the core to.
"""

from __future__ import annotations

import itertools
import random
from datetime import timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthbus.coordinator._core import (
    ConfirmPlanner,
    ControlError,
    Decider,
    FlapDetector,
    Rejected,
    backoff_delay,
    exponential_cap,
)
from healthbus.protocol import (
    BackoffSettings,
    Duration,
    Evidence,
    FlapSettings,
    Ramp,
    RampSettings,
    State,
    StateChanged,
)
from tests.helpers import state_changed

from ._sim import T0, Sim, at, result, target


def backoff(jitter: str, base: float = 1.0, maximum: float = 60.0) -> BackoffSettings:
    return BackoffSettings(base=Duration(base), multiplier=2.0, max=Duration(maximum), jitter=jitter)  # type: ignore[arg-type]


def evidence(outcome: str, t: float) -> Evidence:
    return Evidence(outcome=outcome, error_kind="refused" if outcome == "fail" else None, at=T0 + timedelta(seconds=t))  # type: ignore[arg-type]


# ------------------------------------------------------------ rule 4: backoff


@pytest.mark.parametrize("attempt", [1, 3, 6])
def test_equal_jitter_is_half_the_cap_plus_a_random_half(attempt: int) -> None:
    """equal: cap/2 + uniform(0, cap/2): never below cap/2, and not always the cap."""
    s = backoff("equal")
    cap = exponential_cap(1.0, 2.0, 60.0, attempt)
    rng = random.Random(1)
    delays = [backoff_delay(s, attempt, rng) for _ in range(200)]
    assert all(cap / 2 <= d <= cap for d in delays)
    assert sum(d == cap for d in delays) <= 2  # uniform over the half: (almost) never the cap itself
    assert min(delays) < cap * 0.6
    assert max(delays) > cap * 0.9


def test_the_cap_grows_from_a_base_below_one_second() -> None:
    """cap = min(max, base × multiplier^(attempt − 1)), for a base below 1 s too."""
    assert [exponential_cap(0.1, 2.0, 60.0, a) for a in (1, 4, 10, 11)] == pytest.approx([0.1, 0.8, 51.2, 60.0])


def test_decorrelated_jitter_stays_within_three_times_the_previous_delay() -> None:
    """decorrelated: uniform(base, 3 × previous delay), clamped to max."""
    s = backoff("decorrelated", base=1.0, maximum=1000.0)
    rng = random.Random(4)
    delays = [backoff_delay(s, 5, rng, previous=2.0) for _ in range(300)]
    assert all(1.0 <= d <= 6.0 for d in delays)
    assert max(delays) > 5.5


@pytest.mark.parametrize("attempt", [1, 3, 6])
def test_full_jitter_spreads_over_the_whole_cap(attempt: int) -> None:
    """full (the default): uniform(0, cap), so some retries come in the first half."""
    s = backoff("full")
    cap = exponential_cap(1.0, 2.0, 60.0, attempt)
    rng = random.Random(2)
    delays = [backoff_delay(s, attempt, rng) for _ in range(200)]
    assert all(0 <= d <= cap for d in delays)
    assert min(delays) < cap * 0.1
    assert max(delays) > cap * 0.9


def test_decorrelated_backoff_grows_from_the_previous_delay_of_the_breaker() -> None:
    """decorrelated: min(max, uniform(base, 3 × previous delay)): a breaker whose
    re-admissions keep failing (the fleet's reports during the ramp) waits longer than
    3 × base (the bound without a previous delay)."""
    cfg = target(failure_threshold=1, backoff=backoff("decorrelated", base=1.0, maximum=1000.0))
    sim = Sim(cfg, seed=3)
    sim.feed("fail")
    delays = []
    for _ in range(12):
        opened = sim.last()
        assert opened.state == "unavailable"
        assert opened.retry_at is not None
        sim.advance((opened.retry_at - opened.at).total_seconds() + 0.001)  # trials from retry_at
        (back,) = sim.feed("pass", dt=0.001)  # a passing trial re-admits, with a ramp
        assert back.ramp is not None
        sim.report("i1", dt=0.001)
        (reopened,) = sim.report("i2", dt=0.001)  # the re-admission failed: backed off
        assert reopened.retry_at is not None
        delays.append((reopened.retry_at - reopened.at).total_seconds())
    assert all(1.0 <= d <= 1000.0 for d in delays)
    assert max(delays) > 3.0


# ------------------------------------------------------------ restore, refresh, reset


def test_an_open_breaker_restored_without_retry_at_is_trialled_at_once() -> None:
    """An open breaker must have a time to retry: restored without one, it is now (the
    next result is a trial)."""
    decider = Decider([target()], rng=random.Random(0), now=at(10.0))
    event = state_changed("db", 4, "unavailable", at=T0 + timedelta(seconds=9), attempt=2)
    assert event.breaker == "open"
    assert event.retry_at is None
    assert decider.restore(event, at(10.0))
    assert decider.tick(at(10.0)) == []
    out = decider.on_result(result(10.0, "pass"), at(10.0))
    assert [(e.state, e.breaker, e.seq) for e in out] == [("healthy", "closed", 5)]


def test_a_refresh_of_a_flapping_target_says_it_is_flapping() -> None:
    """A refresh repeats the state, breaker, attempt, retry_at, failures and flapping."""
    cfg = target(flap=FlapSettings(enabled=True))
    decider = Decider([cfg], rng=random.Random(0), now=at(0.0), refresh_after=10.0)
    event = state_changed("db", 7, "degraded", at=T0, flapping=True, reason="flapping (60% state changes lately)")
    assert decider.restore(event, at(0.0))
    out = decider.tick(at(10.0))
    assert len(out) == 1
    assert out[0].previous == out[0].state == "degraded"
    assert out[0].flapping is True


def test_resetting_a_closed_target_decides_it_afresh_with_the_operators_reason() -> None:
    """reset: a closed target is decided afresh; with no live data that is unknown at once
    (no grace), and the reason names the reset."""
    decider = Decider([target()], rng=random.Random(0), now=at(0.0))
    assert decider.restore(state_changed("db", 3, "healthy", at=T0), at(0.0))
    assert decider.tick(at(1.0)) == []  # silence within stale_after of the restore proves nothing yet
    out = decider.control("reset", "db", "after the upgrade", at(1.0))
    assert [(e.state, e.breaker) for e in out] == [("unknown", "closed")]
    assert out[0].reason.startswith("reset by operator: after the upgrade; ")


def test_a_reset_that_finds_a_failing_quorum_opens_with_the_operators_reason() -> None:
    """A reset decides a closed target afresh: when that finds a failing quorum (a reload
    made the quorum stricter, its own re-decision not yet run), the breaker opens, and the
    reason names the reset first."""
    sim = Sim(target(failure_threshold=1, success_threshold=1))
    sim.feed("pass", "p2", dt=0.0)
    sim.feed("pass", "p3", dt=0.0)
    sim.feed("fail", "p1", dt=0.0)
    assert sim.last().state == "degraded"
    assert sim.reload(target(failure_threshold=1, success_threshold=1, quorum="any")) == []
    (opened,) = sim.control("reset", reason="after the upgrade")
    assert (opened.state, opened.breaker) == ("unavailable", "open")
    assert opened.reason.startswith("reset by operator: after the upgrade; 1/3 probes failing")


def test_a_restored_degraded_target_seeds_only_its_impaired_points_and_not_as_live() -> None:
    """The vantage points a restored ``degraded`` event names as fail or warn are kept as
    warn (never the passing ones), and they are not live until heard again."""
    decider = Decider([target(stale_after=Duration(15.0))], rng=random.Random(0), now=at(100.0))
    event = state_changed(
        "db",
        5,
        "degraded",
        at=T0 + timedelta(seconds=99),
        evidence={"p1": evidence("fail", 99.0), "p2": evidence("pass", 99.0), "p3": evidence("warn", 98.0)},
    )
    assert decider.restore(event, at(100.0))
    assert decider.vantage_points("db") == 2  # p1 and p3; p2 passed
    # Not live: with no result at all, the target is unknown once results were expected
    # for stale_after (seeded points that counted as live would keep it degraded).
    out = decider.tick(at(115.0))
    assert [e.state for e in out] == ["unknown"]


# ------------------------------------------------------------ rule 1: hysteresis, trials


def test_a_mixed_pass_and_warn_run_of_success_threshold_from_nothing_is_warn() -> None:
    """success_threshold (2) reachable results, pass and warn mixed, make the point warn: degraded."""
    sim = Sim(target(success_threshold=2))
    assert sim.feed("warn") == []
    out = sim.feed("pass")
    assert [e.state for e in out] == ["degraded"]


def test_a_trial_passes_only_after_success_threshold_reachable_results_after_its_fail() -> None:
    """While half-open a fail marks the point's trial failed; it passes again only after
    success_threshold (2) reachable results, not one."""
    cfg = target(failure_threshold=1, success_threshold=2, backoff=backoff("none"))
    sim = Sim(cfg)
    for probe in ("p0", "p1", "p2"):
        sim.feed("pass", probe, dt=0.01)
    sim.feed("fail", "p0", dt=0.01)
    sim.feed("fail", "p1", dt=0.01)
    assert sim.last().state == "unavailable"
    sim.control("reset")  # half-open: a trial by success_threshold
    assert sim.last().state == "recovering"
    sim.feed("fail", "p0", dt=0.01)  # p0's trial failed (1 of 3: no reopen with majority 2)
    sim.feed("pass", "p0", dt=0.01)  # one pass after the fail: not yet passed
    sim.feed("pass", "p1", dt=0.01)
    sim.feed("pass", "p1", dt=0.01)  # p1 passed: 1 passed trial, 2 needed (3 - 2 + 1)
    assert sim.last().state == "recovering"
    sim.feed("pass", "p0", dt=0.01)  # p0's second pass: 2 passed trials close the breaker
    assert (sim.last().state, sim.last().breaker) == ("healthy", "closed")


# ------------------------------------------------------------ rule 5: flapping


def plain_share(verdicts: list[State], window: int) -> Fraction:
    """Rule 5 written plainly, exactly: over the last ``window`` verdicts, each change between
    two neighbours weighs 0.8 (oldest pair of a full window) to 1.2 (newest), linearly; the
    sum is divided by window - 1."""
    last = verdicts[-window:]
    pairs = list(itertools.pairwise(last))
    total = Fraction(0)
    for age, (a, b) in enumerate(reversed(pairs)):  # age 0: the newest pair
        if a != b:
            total += Fraction(4, 5) + Fraction(2, 5) * (window - 2 - age) / (window - 2)
    return total / (window - 1)


#: Histories of runs (a verdict repeated 1 to 30 times): flapping starts, settles and stops.
runs = st.lists(
    st.tuples(st.sampled_from(["healthy", "degraded", "unavailable"]), st.sampled_from([1, 1, 1, 2, 3, 5, 8, 13, 30])),
    max_size=30,
).map(lambda rs: [verdict for verdict, n in rs for _ in range(n)])


@given(verdicts=runs, window=st.integers(3, 12))
def test_flapping_follows_the_weighted_share_of_changes_over_the_window(verdicts: list[State], window: int) -> None:
    """Flapping starts when the share rises above high; it ends only when the share is below
    low and a full window of verdicts was taken since it started; in between, no change."""
    settings = FlapSettings(window=window, low=0.25, high=0.5)
    detector = FlapDetector(settings)
    flapping = False
    since = 0
    for i, verdict in enumerate(verdicts):
        before = flapping
        changed = detector.record(verdict)
        share = plain_share(verdicts[: i + 1], window)
        assert detector.share() == pytest.approx(float(share))
        low, high = Fraction(settings.low), Fraction(settings.high)
        if flapping:
            since += 1
            if since >= window and share == low:
                flapping = detector.flapping  # exactly on the bound: float rounding decides
            elif since >= window and share < low:
                flapping = False
        elif share == high:
            flapping, since = detector.flapping, 0
        elif share > high:
            flapping, since = True, 0
        assert detector.flapping == flapping, f"after {verdicts[: i + 1]}: share {share:.3f}"
        assert changed == (flapping != before)


# ------------------------------------------------------------ aligning to a stored event (a takeover)


def stored_degraded(at_s: float, **evidence_at: tuple[str, float]) -> StateChanged:
    return state_changed(
        "db",
        9,
        "degraded",
        at=T0 + timedelta(seconds=at_s),
        evidence={probe: evidence(outcome, t) for probe, (outcome, t) in evidence_at.items()},
    )


def test_aligned_evidence_that_caught_up_is_decided_afresh_at_once() -> None:
    """Aligned to a stored event whose evidence the replay has caught up with, the target
    is decided afresh at that point: the replay's evidence (2/3 failing) opens the breaker."""
    decider = Decider([target(failure_threshold=1)], rng=random.Random(0), now=at(1.0))
    for probe, t in (("p0", 1.0), ("p1", 1.001), ("p2", 1.002)):
        decider.on_result(result(t, "fail" if probe != "p2" else "pass", probe), at(t))
    stored = stored_degraded(1.0015, p0=("fail", 1.0), p1=("pass", 0.5), p2=("pass", 0.6))
    assert decider.align(stored, at(1.0025))
    out = decider.tick(at(1.0025))
    assert [(e.state, e.seq, e.previous) for e in out] == [("unavailable", 10, "degraded")]


def test_aligned_evidence_that_has_not_caught_up_waits_for_the_results_to_come() -> None:
    """Evidence behind the stored event's (a point it names heard later than the replay
    heard it) is not decided on early."""
    decider = Decider([target(failure_threshold=1)], rng=random.Random(0), now=at(1.0))
    for probe, t in (("p0", 1.0), ("p1", 1.001)):
        decider.on_result(result(t, "fail", probe), at(t))
    stored = stored_degraded(1.0015, p0=("fail", 1.0), p1=("pass", 0.5), p2=("pass", 1.0012))
    assert decider.align(stored, at(1.0025))
    assert decider.tick(at(1.0025)) == []


# ------------------------------------------------------------ failure reports


def test_forgetting_a_target_keeps_every_other_targets_flood_memory() -> None:
    """forget(target) drops what is known about that target only."""
    planner = ConfirmPlanner(window=1.0, flood_gap=0.5)
    assert planner.on_report("a", "i1", 10.0, held=False) == "round"
    assert planner.on_report("b", "i1", 10.0, held=False) == "round"
    planner.forget("a")
    assert planner.on_report("b", "i1", 10.1, held=False) == "flood"  # b's memory kept
    assert planner.on_report("a", "i1", 10.1, held=False) == "round"  # a starts afresh
    assert planner.instances("b") == 1
    assert planner.round_number("b") == 1


# ------------------------------------------------------------ renew and restart_grace


def test_restart_grace_gives_every_target_a_fresh_stale_after_and_emits_nothing() -> None:
    """After a bus outage no target turns unknown before stale_after from the grace."""
    sim = Sim(target(stale_after=Duration(15.0)))
    sim.feed("pass", dt=1.0)
    sim.feed("pass", dt=1.0)
    assert sim.last().state == "healthy"
    sim.decider.restart_grace(at(20.0))
    sim.t = 20.0
    assert sim.advance(14.0) == []  # the point went stale at 17; the grace lasts until 35
    assert [e.state for e in sim.advance(1.5)] == ["unknown"]


def test_restart_grace_restarts_a_half_open_trials_wait_for_results() -> None:
    """A half-open target too waits stale_after from the grace before it turns unknown."""
    sim = Sim(target(failure_threshold=1, stale_after=Duration(15.0), backoff=backoff("none")))
    sim.feed("fail", dt=1.0)
    sim.advance(1.0)
    sim.control("reset")
    assert sim.last().state == "recovering"  # half-open since 2; the point went stale at 16
    sim.decider.restart_grace(at(10.0))
    sim.t = 10.0
    assert sim.advance(14.5) == []
    assert [(e.state, e.breaker) for e in sim.advance(1.0)] == [("unknown", "half_open")]


def test_flapping_stops_only_below_low_not_at_it() -> None:
    """Flapping ends when the share *falls below* low: a share equal to low keeps it."""
    settings = FlapSettings(window=9, low=0.25, high=0.5)
    detector = FlapDetector(settings, flapping=True)
    # Over 9 verdicts (8 pairs) only the oldest (0.8) and newest (1.2) pair change: 2.0 / 8 = low.
    for verdict in ["healthy", "degraded", *["degraded"] * 6, "healthy"]:
        detector.record(verdict)  # type: ignore[arg-type]
    assert detector.share() == 0.25
    assert detector.flapping


def test_a_restored_flapping_target_stops_after_a_full_window_of_steady_verdicts() -> None:
    """Flapping survives a restart through the event's flag, and ends as it always does:
    below low over a full window of verdicts taken since (here: window 5, steady results)."""
    cfg = target(success_threshold=1, flap=FlapSettings(enabled=True, window=5, low=0.25, high=0.5))
    sim = Sim(cfg)
    assert sim.decider.restore(state_changed("db", 3, "degraded", at=T0, flapping=True), at(0.0))
    for _ in range(4):
        assert sim.feed("pass") == []  # held degraded while flapping
    assert [(e.state, e.flapping) for e in sim.feed("pass")] == [("healthy", False)]


def test_a_cleared_flap_history_starts_from_nothing() -> None:
    """reset clears the flap history: the next verdict is the first, with no change before it."""
    detector = FlapDetector(FlapSettings(window=5, low=0.25, high=0.5))
    for verdict in ["healthy", "degraded", "healthy", "degraded", "healthy"]:
        detector.record(verdict)  # type: ignore[arg-type]
    assert detector.flapping
    detector.clear()
    assert not detector.flapping
    assert detector.share() == 0.0
    detector.record("degraded")
    assert detector.share() == 0.0
    detector.record("degraded")
    assert detector.share() == 0.0


# ------------------------------------------------------------ staleness at its deadline

#: (instant, stale_after) where float rounding makes the two ways of computing staleness
#: disagree: ``(x + stale) - x < stale``. A timer scheduled for ``x + stale`` and run
#: exactly then must find what was heard at ``x`` lapsed.
ROUNDING_TIES = [(1000.1, 3.3), (1000.2, 9.9), (1000.2, 30.3)]


@pytest.mark.parametrize(("heard", "stale"), ROUNDING_TIES)
def test_a_point_goes_stale_at_the_timer_scheduled_for_it(heard: float, stale: float) -> None:
    """Live: heard within stale_after. The timer run at the deadline (heard + stale_after)
    sees the only point silent, and the target unknown then, not a moment later."""
    cfg = target(stale_after=Duration(stale), success_threshold=1)
    decider = Decider([cfg], rng=random.Random(0), now=at(heard - 1))
    assert [e.state for e in decider.on_result(result(heard, "pass"), at(heard))] == ["healthy"]
    deadline = decider.next_deadline()
    assert deadline == heard + stale
    assert deadline - heard < stale  # the tie: computed as a difference, not stale yet
    out = decider.tick(at(deadline))
    assert [(e.state, e.at) for e in out] == [("unknown", at(deadline).wall)]


@pytest.mark.parametrize(("since", "stale"), ROUNDING_TIES)
@pytest.mark.parametrize(
    ("state", "shown"), [("healthy", ("unknown", "closed")), ("recovering", ("unknown", "half_open"))]
)
def test_silence_since_a_restore_is_unknown_at_the_timer_scheduled_for_it(
    since: float, stale: float, state: State, shown: tuple[str, str]
) -> None:
    """No live point for stale_after while results are expected (from the restore on, or
    from the half-open moment) → unknown, decided by the timer at that deadline."""
    decider = Decider([target(stale_after=Duration(stale))], rng=random.Random(0), now=at(since))
    assert decider.restore(state_changed("db", 3, state, at=T0 + timedelta(seconds=since)), at(since))
    deadline = decider.next_deadline()
    assert deadline == since + stale
    out = decider.tick(at(deadline))
    assert [(e.state, e.breaker) for e in out] == [shown]


@pytest.mark.parametrize(("mono", "stale"), [(114.39, 19.15), (422.3, 21.97), (452.44, 94.1)])
def test_seeded_points_are_not_live_at_the_instant_of_the_restore(mono: float, stale: float) -> None:
    """Seeded points are not live until heard again, also where ``mono - stale`` rounds so
    that adding stale_after back overshoots ``mono``: a passing point alone then decides."""
    assert (mono - stale) + stale > mono  # the tie
    decider = Decider([target(stale_after=Duration(stale), success_threshold=1)], rng=random.Random(0), now=at(mono))
    event = state_changed("db", 5, "degraded", at=T0 + timedelta(seconds=mono), evidence={"p1": evidence("fail", mono)})
    assert decider.restore(event, at(mono))
    out = decider.on_result(result(mono, "pass", "p2"), at(mono))
    assert [e.state for e in out] == ["healthy"]


# ------------------------------------------------------------ failure reports → confirmation rounds


def test_a_window_and_flood_gap_of_zero_are_allowed_and_negative_ones_are_refused() -> None:
    """Both must be >= 0 seconds: 0 is allowed (every report its own round), a negative
    one is a clear error."""
    p = ConfirmPlanner(window=0.0, flood_gap=0.0)
    assert [p.on_report("db", "a", 1.0, held=False) for _ in range(2)] == ["round", "round"]
    refused = r"^confirmation window and flood gap must be >= 0 seconds$"
    with pytest.raises(ValueError, match=refused):
        ConfirmPlanner(window=-1.0)
    with pytest.raises(ValueError, match=refused):
        ConfirmPlanner(flood_gap=-0.1)


def test_a_report_exactly_flood_gap_after_the_last_is_not_a_flood() -> None:
    """flood: the same instance reported the same target *less than* flood_gap ago."""
    p = ConfirmPlanner(window=0.0, flood_gap=0.5)
    assert p.on_report("db", "a", 10.0, held=False) == "round"
    assert p.on_report("db", "a", 10.5, held=False) == "round"
    assert p.reports == {"db": 2}


def test_the_pair_reported_least_recently_is_forgotten_first() -> None:
    """At most max_pairs pairs are remembered; the oldest (by its latest accepted report)
    goes first, so an instance that keeps reporting stays flood-limited."""
    p = ConfirmPlanner(window=0.0, flood_gap=1.0, max_pairs=2)
    p.on_report("db", "a", 0.0, held=False)
    p.on_report("db", "b", 0.5, held=False)
    p.on_report("db", "a", 1.5, held=False)  # accepted again: a is now the newest pair
    p.on_report("db", "c", 1.6, held=False)  # room for c: b (0.5) goes, not a
    assert p.on_report("db", "a", 2.0, held=False) == "flood"
    assert p.on_report("db", "b", 2.0, held=False) == "round"  # forgotten: not a flood


def test_a_target_with_nothing_pending_or_no_round_yet_counts_zero() -> None:
    """take_pending: reports since the last round (0 when none); round_number: 0 before
    the first round."""
    p = ConfirmPlanner()
    assert p.take_pending("db") == 0
    assert p.round_number("db") == 0
    p.on_report("db", "a", 1.0, held=True)
    assert p.round_number("db") == 0
    assert p.take_pending("db") == 1
    assert p.take_pending("db") == 0


@pytest.mark.parametrize("held", [False, True])
def test_forget_drops_everything_about_a_target_whatever_it_had(held: bool) -> None:
    """forget: a target that left the configuration (with or without reports, rounds or
    pending ones) is dropped; configured again, it starts from nothing."""
    p = ConfirmPlanner(window=10.0, flood_gap=5.0)
    p.forget("never-reported")
    p.on_report("db", "a", 1.0, held=held)
    p.forget("db")
    assert (p.take_pending("db"), p.round_number("db"), p.instances("db")) == (0, 0, 0)
    p.forget("db")  # twice: nothing left to drop, no error
    assert p.on_report("db", "a", 2.0, held=False) == "round"  # no flood memory, no round memory
    assert (p.take_pending("db"), p.round_number("db"), p.reports) == (1, 1, {"db": 1})


# ------------------------------------------------------------ the decider: seeds, reports, refresh, renew


def restored_degraded(cfg_overrides: dict[str, Any], evidence_of: dict[str, Evidence], **kw: int) -> Decider:
    """A decider restored at 100 from a ``degraded`` event decided at 99 (stale_after 15)."""
    decider = Decider([target(stale_after=Duration(15.0), **cfg_overrides)], rng=random.Random(0), now=at(100.0), **kw)
    event = state_changed("db", 5, "degraded", at=T0 + timedelta(seconds=99), evidence=evidence_of)
    assert decider.restore(event, at(100.0))
    return decider


def test_seeded_points_are_at_most_max_vantage_points() -> None:
    """Vantage points remembered per target are bounded, seeds too."""
    decider = restored_degraded({}, {"p1": evidence("fail", 99.0), "p2": evidence("warn", 99.0)}, max_vantage_points=1)
    assert decider.vantage_points("db") == 1


def test_seeded_points_keep_the_evidence_the_restored_event_named() -> None:
    """Until heard again, a seeded point's evidence is what the restored event said of it
    (outcome, error kind, time): the next event repeats it."""
    decider = restored_degraded({}, {"p1": evidence("fail", 99.0), "p3": evidence("warn", 98.0)})
    (unknown,) = decider.tick(at(115.0))
    assert unknown.evidence == {"p1": evidence("fail", 99.0), "p3": evidence("warn", 98.0)}


@pytest.mark.parametrize(
    ("seeded", "after_each_pass"),
    [("warn", [[], ["degraded"], ["healthy"]]), ("fail", [[], [], ["healthy"]])],
)
def test_a_seeded_point_is_one_result_of_its_outcome_when_heard_again(
    seeded: str, after_each_pass: list[list[str]]
) -> None:
    """A seed continues the point's run when it is heard again: a warn seed is one
    reachable result, so with success_threshold 3 two passes after it make a mixed run
    of three (warn: degraded) and the third pass a passing point; a fail seed is none."""
    decider = restored_degraded({"success_threshold": 3}, {"p1": evidence(seeded, 99.0)})
    assert [e.state for e in decider.tick(at(115.0))] == ["unknown"]  # the seed lapsed, unheard
    seen = []
    for t in (120.0, 121.0, 122.0):
        seen.append([e.state for e in decider.on_result(result(t, "pass", "p1"), at(t))])
    assert seen == after_each_pass


def reopened_by_reports(sim: Sim, kinds: list[str]) -> StateChanged:
    sim.feed("fail")
    opened = sim.last()
    assert opened.retry_at is not None
    sim.advance((opened.retry_at - opened.at).total_seconds() + 0.001)
    (back,) = sim.feed("pass", dt=0.001)  # a passed trial re-admits, with a ramp
    assert back.ramp is not None
    for n, kind in enumerate(kinds):
        out = sim.report(f"i{n}", kind=kind, dt=0.001)
    (reopened,) = out
    return reopened


def test_a_re_admission_reopened_by_reports_names_every_kind_reported() -> None:
    """The reason names how many instances reported and the distinct error kinds, sorted."""
    ramp = RampSettings(duration=Duration(10.0), reopen_reports=3)
    sim = Sim(target(failure_threshold=1, success_threshold=1, ramp=ramp))
    reopened = reopened_by_reports(sim, ["timeout", "refused", "timeout"])
    assert (reopened.state, reopened.attempt) == ("unavailable", 2)
    assert reopened.reason.startswith("re-admission 1 failed: 3 instances reported failures (refused, timeout); ")


def test_a_report_of_a_target_not_configured_decides_nothing() -> None:
    decider = Decider([target()], rng=random.Random(0), now=at(0.0))
    assert decider.on_report("nope", "i1", "refused", T0, at(1.0)) == []


def test_a_refresh_during_a_ramp_announces_the_ramp() -> None:
    """Every event while the re-admission's ramp lasts announces it, a refresh too."""
    cfg = target(failure_threshold=1, success_threshold=1, ramp=RampSettings(duration=Duration(60.0)))
    sim = Sim(cfg, refresh_after=10.0)
    sim.feed("fail")
    sim.advance(0.6)
    (back,) = sim.feed("pass", dt=0.001)
    assert back.ramp is not None
    refreshes = [e for e in sim.advance(10.0) if e.unchanged_since is not None]
    assert [e.ramp for e in refreshes] == [back.ramp]


def test_a_rejected_result_says_why_in_its_message() -> None:
    """A rejected input raises with a clear message (logged as the reason it was dropped)."""
    decider = Decider([target()], rng=random.Random(0), now=at(0.0))
    with pytest.raises(Rejected, match=r"^no target 'nope' in the configuration$") as rejected:
        decider.on_result(result(0.0, "pass", name="nope"), at(0.0))
    assert rejected.value.reason == "unknown_target"


def test_a_command_for_a_target_not_configured_is_a_clear_error() -> None:
    decider = Decider([target()], rng=random.Random(0), now=at(0.0))
    with pytest.raises(ControlError, match=r"^no target 'nope' in the configuration$"):
        decider.control("reset", "nope", "why", at(0.0))


# ------------------------------------------------------------ operator commands and the ramp


def in_ramp() -> Sim:
    """A target just re-admitted after one failed re-admission: closed, ramp of 60 s,
    reopened by 2 reports."""
    cfg = target(failure_threshold=1, success_threshold=1, ramp=RampSettings(duration=Duration(60.0)))
    sim = Sim(cfg)
    sim.feed("fail")
    sim.advance(0.6)
    (back,) = sim.feed("pass", dt=0.001)
    assert back.ramp is not None
    assert back.ramp.readmission == 1
    return sim


def test_a_command_without_a_reason_says_so() -> None:
    sim = in_ramp()
    (forced,) = sim.control("force-open", reason="  ")
    assert forced.reason == "forced open by operator: no reason given"


def test_resetting_a_closed_target_leaves_its_ramp_in_progress() -> None:
    """A reset of a closed target leaves the ramp be: the fleet's reports during it still
    re-open the breaker as a failed re-admission."""
    sim = in_ramp()
    sim.control("reset")
    sim.report("i1", dt=0.01)
    (reopened,) = sim.report("i2", dt=0.01)
    assert (reopened.state, reopened.attempt) == ("unavailable", 2)


@pytest.mark.parametrize("override", ["force-open", "disable"])
def test_an_override_ends_the_ramp_in_progress(override: str) -> None:
    """An override ends the ramp: after it (and a reset), a failed trial is a fresh outage,
    attempt 1, not a failed re-admission backed off."""
    sim = in_ramp()
    sim.control(override)
    (half_open,) = sim.control("reset")
    assert half_open.breaker == "half_open"
    (opened,) = sim.feed("fail", dt=0.01)
    assert (opened.state, opened.attempt) == ("unavailable", 1)
    assert opened.retry_at is not None
    assert (opened.retry_at - opened.at).total_seconds() == pytest.approx(0.5)  # trial_interval, no backoff


def test_a_reset_forgets_the_failed_re_admissions() -> None:
    """After a reset the next re-admission is the first again (its ramp says so)."""
    sim = in_ramp()
    sim.report("i1", dt=0.01)
    (reopened,) = sim.report("i2", dt=0.01)
    assert reopened.attempt == 2  # one re-admission failed
    sim.control("reset")  # open → half-open, at once
    (closed,) = sim.feed("pass", dt=0.01)
    assert closed.breaker == "closed"
    assert closed.ramp is not None
    assert closed.ramp.readmission == 1


def test_resetting_a_half_open_target_restarts_its_trial_from_nothing() -> None:
    """reset of a half-open breaker restarts its trial: passes before it do not count
    towards success_threshold."""
    sim = Sim(target(failure_threshold=1, success_threshold=2))
    sim.feed("fail")
    (half_open,) = sim.control("reset")
    assert half_open.breaker == "half_open"
    assert sim.feed("pass", dt=0.01) == []  # 1 of the 2 passes the trial needs
    sim.control("reset")  # the trial starts again
    assert sim.feed("pass", dt=0.01) == []  # 1 of 2 again, not 2 of 2
    (closed,) = sim.feed("pass", dt=0.01)
    assert (closed.state, closed.breaker) == ("healthy", "closed")


@pytest.mark.parametrize(
    ("action", "duration", "message"),
    [
        ("explode", None, r"^unknown command 'explode'$"),
        ("maintenance", None, r"^maintenance needs a duration greater than 0 seconds, got None$"),
        ("maintenance", 0.0, r"^maintenance needs a duration greater than 0 seconds, got 0\.0$"),
    ],
)
def test_a_command_that_cannot_be_applied_changes_nothing(action: str, duration: float | None, message: str) -> None:
    """A rejected command raises a clear error and leaves every state as it was: here a
    ramp in progress goes on (the fleet's reports still re-open the breaker)."""
    sim = in_ramp()
    with pytest.raises(ControlError, match=message):
        sim.decider.control(action, "db", "why", at(sim.t), duration=duration)  # type: ignore[arg-type]
    sim.report("i1", dt=0.01)
    (reopened,) = sim.report("i2", dt=0.01)
    assert (reopened.state, reopened.attempt) == ("unavailable", 2)


def test_status_is_read_only_a_ramp_in_progress_goes_on() -> None:
    """``status`` only reads: no event, and a ramp in progress goes on (the fleet's reports
    during it still re-open the breaker as a failed re-admission)."""
    sim = in_ramp()
    assert sim.control("status") == []
    sim.report("i1", dt=0.01)
    (reopened,) = sim.report("i2", dt=0.01)
    assert (reopened.state, reopened.attempt) == ("unavailable", 2)


@pytest.mark.parametrize(
    ("action", "state", "breaker", "reason"),
    [
        ("force-open", "unavailable", "forced_open", "forced open by operator: why"),
        ("disable", "unknown", "disabled", "disabled by operator: why"),
    ],
)
def test_a_duration_makes_only_maintenance_a_window(action: str, state: str, breaker: str, reason: str) -> None:
    """``duration_s`` is ``maintenance``'s only: a ``force-open`` or ``disable`` request
    that carries one (the wire accepts it on every command) is the open-ended override it
    names, with no ``retry_at``: nothing ends it but a reset."""
    sim = Sim()
    sim.feed("pass")
    sim.feed("pass")
    (event,) = sim.decider.control(action, "db", "why", at(sim.t), duration=5.0)  # type: ignore[arg-type]
    assert (event.state, event.breaker, event.retry_at, event.reason) == (state, breaker, None, reason)
    assert sim.advance(100.0) == []  # no window to end


def test_a_reset_with_a_duration_is_a_reset() -> None:
    """A ``reset`` that carries a ``duration_s`` resets: a healthy closed target stays as
    it is (silent), an open one goes half-open; neither becomes a maintenance window."""
    sim = Sim()
    sim.feed("pass")
    sim.feed("pass")
    assert sim.decider.control("reset", "db", "why", at(sim.t), duration=5.0) == []
    for _ in range(3):
        sim.feed("fail")
    (half_open,) = sim.decider.control("reset", "db", "why", at(sim.t), duration=5.0)
    assert (half_open.state, half_open.breaker, half_open.retry_at) == ("recovering", "half_open", None)


def test_a_reset_is_no_verdict_for_flap_detection() -> None:
    """A reset clears the flap history, and deciding the closed target afresh is no
    verdict of the dependency: flapping is then judged on the verdicts after the reset
    alone, exactly as a fresh history would judge them."""
    flap = FlapSettings(enabled=True, window=5, low=0.25, high=0.5)
    sim = Sim(target(failure_threshold=1, success_threshold=1, flap=flap))
    for probe in ("p1", "p2", "p3"):
        sim.feed("pass", probe=probe, dt=0.1)
    outcomes = itertools.cycle(["fail", "pass"])  # p1 alone: degraded, healthy, degraded, ...
    while not sim.last().flapping:
        sim.feed(next(outcomes), probe="p1", dt=0.1)  # type: ignore[arg-type]
    (reset,) = sim.control("reset")
    assert not reset.flapping
    fresh = FlapDetector(flap)
    for outcome in ["fail", "pass", "fail", "pass", "fail"]:
        sim.feed(outcome, probe="p1", dt=0.1)  # type: ignore[arg-type]
        fresh.record("degraded" if outcome == "fail" else "healthy")
        assert sim.last().flapping == fresh.flapping, outcome
    assert fresh.flapping  # the verdicts after the reset flap again, in their own time


# ------------------------------------------------------------ silence, restarts of a point, align


def test_a_point_heard_again_after_a_silence_starts_a_mixed_run_afresh() -> None:
    """Heard again after stale_after or more, a point starts from that result: a pass and
    a warn (success_threshold 2) make it warn, as from nothing."""
    sim = Sim(target(success_threshold=2, stale_after=Duration(15.0)))
    sim.feed("pass")
    sim.feed("pass")
    assert sim.last().state == "healthy"
    assert [e.state for e in sim.advance(16.0)] == ["unknown"]
    assert sim.feed("pass") == []
    assert [e.state for e in sim.feed("warn")] == ["degraded"]


def test_silence_with_no_point_ever_heard_says_so() -> None:
    decider = Decider([target(stale_after=Duration(15.0))], rng=random.Random(0), now=at(0.0))
    assert decider.restore(state_changed("db", 3, "healthy", at=T0), at(0.0))
    (unknown,) = decider.tick(at(15.0))
    assert unknown.reason == "no result from any probe yet"


def test_align_of_a_target_not_configured_is_false() -> None:
    decider = Decider([target()], rng=random.Random(0), now=at(0.0))
    assert decider.align(state_changed("nope", 3, "healthy", at=T0), at(0.0)) is False


def test_align_keeps_the_trial_of_a_breaker_half_open_on_both_sides() -> None:
    """Trial marks are kept when this decider's breaker was half-open too (the same
    trial): the second pass of success_threshold 2 after the alignment closes it."""
    decider = Decider([target(failure_threshold=1, success_threshold=2)], rng=random.Random(0), now=at(0.0))
    decider.on_result(result(0.1, "fail"), at(0.1))
    decider.control("reset", "db", "test", at(0.2))
    assert decider.state("db")[1] == "half_open"
    assert decider.on_result(result(0.3, "pass"), at(0.3)) == []  # 1 of 2
    stored = state_changed("db", 9, "recovering", at=T0 + timedelta(seconds=0.35))
    assert decider.align(stored, at(0.4))
    out = decider.on_result(result(0.5, "pass"), at(0.5))
    assert [(e.state, e.breaker, e.seq) for e in out] == [("healthy", "closed", 10)]


def heard_p1_passing() -> Decider:
    """p1 passed at 18 and 19 (success_threshold 2, stale_after 15): healthy by this decider."""
    decider = Decider([target(stale_after=Duration(15.0))], rng=random.Random(0), now=at(0.0))
    decider.on_result(result(18.0, "pass"), at(18.0))
    assert [e.state for e in decider.on_result(result(19.0, "pass"), at(19.0))] == ["healthy"]
    return decider


@pytest.mark.parametrize(
    ("evidence_of", "afresh"),
    [
        # p2's result is exactly stale_after older than the event: not part of its evidence
        ({"p2": evidence("fail", 5.0), "p1": evidence("pass", 19.0)}, True),
        # a stale entry first does not end the check: p1's 19.5 was not heard here
        ({"p2": evidence("fail", 4.0), "p1": evidence("pass", 19.5)}, False),
        # a point this decider never heard, whatever it heard from the others
        ({"p3": evidence("pass", 19.0)}, False),
    ],
)
def test_align_decides_afresh_only_once_every_live_point_of_the_stored_event_was_heard(
    evidence_of: dict[str, Evidence], afresh: bool
) -> None:
    """Caught up: every vantage point the stored event names as live (its result younger
    than stale_after at the event) heard here up to that result or later. Then the
    target is decided afresh at the aligned time (healthy, from p1's passes), else the
    stored state stands until the results to come."""
    decider = heard_p1_passing()
    stored = state_changed("db", 7, "degraded", at=T0 + timedelta(seconds=20), evidence=evidence_of)
    assert decider.align(stored, at(20.0))
    out = decider.tick(at(20.0))
    assert [(e.state, e.seq) for e in out] == ([("healthy", 8)] if afresh else [])


def test_align_that_caught_up_decides_afresh_at_the_next_result_too() -> None:
    """Decided afresh at the next tick *or result*: not left to the fast path."""
    decider = heard_p1_passing()
    stored = state_changed("db", 7, "degraded", at=T0 + timedelta(seconds=20), evidence={"p1": evidence("pass", 19.0)})
    assert decider.align(stored, at(20.0))
    out = decider.on_result(result(20.5, "pass"), at(20.5))
    assert [(e.state, e.seq) for e in out] == [("healthy", 8)]


def test_align_of_a_closed_breaker_keeps_the_silence_it_heard() -> None:
    """Results have been expected since this decider's closed phase began (here its start
    at 0, nothing heard since): aligned at 10, the target is unknown at 15, not 25."""
    decider = Decider([target(stale_after=Duration(15.0))], rng=random.Random(0), now=at(0.0))
    stored = state_changed("db", 3, "healthy", at=T0 + timedelta(seconds=10), evidence={"p1": evidence("pass", 9.9)})
    assert decider.align(stored, at(10.0))
    assert decider.tick(at(14.9)) == []
    assert [e.state for e in decider.tick(at(15.0))] == ["unknown"]


def test_align_to_a_half_open_event_starts_the_trial_from_nothing() -> None:
    """Trial marks are this decider's only if its breaker was half-open too: aligned from
    closed to a half-open event, the trial needs all success_threshold (2) passes."""
    decider = heard_p1_passing()
    stored = state_changed("db", 7, "recovering", at=T0 + timedelta(seconds=20))
    assert stored.breaker == "half_open"
    assert decider.align(stored, at(20.0))
    decider.tick(at(20.0))
    assert decider.on_result(result(20.5, "pass"), at(20.5)) == []
    out = decider.on_result(result(21.0, "pass"), at(21.0))
    assert [(e.state, e.breaker) for e in out] == [("healthy", "closed")]


def test_a_reset_right_after_aligning_to_an_unknown_trial_announces_the_points_heard() -> None:
    """A standby that hears p1 takes over from a stored ``unknown`` half-open event (the
    old leader heard nothing in its trial): an operator reset before the next timer
    restarts the trial with attempt 0 and announces what this coordinator hears, the
    target ``recovering`` (heard from again), not the stored ``unknown``."""
    decider = heard_p1_passing()
    stored = state_changed(
        "db", 7, "unknown", at=T0 + timedelta(seconds=20), previous="recovering", breaker="half_open", attempt=1
    )
    assert decider.align(stored, at(20.0))
    out = decider.control("reset", "db", "after the takeover", at(20.0))
    assert [(e.seq, e.previous, e.state, e.breaker, e.attempt) for e in out] == [
        (8, "unknown", "recovering", "half_open", 0)
    ]


def test_a_target_configured_again_after_its_retirement_announces_nothing_until_decided() -> None:
    """Restored from its retired event it is a new target (unknown) that continues the
    seq: no refresh of a state it never announced, the first event is seq + 1."""
    decider = Decider([target(stale_after=Duration(15.0))], rng=random.Random(0), now=at(0.0), refresh_after=5.0)
    retired = StateChanged(
        target="db", seq=4, at=T0, previous="healthy", state="unknown", breaker="closed", reason="r", retired=True
    )
    assert decider.restore(retired, at(0.0))
    assert decider.on_result(result(1.0, "pass"), at(1.0)) == []  # 1 of success_threshold 2
    assert decider.tick(at(20.0)) == []
    decider.on_result(result(21.0, "pass"), at(21.0))
    out = decider.on_result(result(22.0, "pass"), at(22.0))
    assert [(e.state, e.seq) for e in out] == [("healthy", 5)]


@pytest.mark.parametrize(
    ("state", "attempt", "readmission"),
    [("unavailable", 1, 1), ("unavailable", 3, 3), ("recovering", 0, 1)],
)
def test_a_restored_breaker_counts_the_failed_re_admissions_its_attempt_says(
    state: State, attempt: int, readmission: int
) -> None:
    """Open at attempt k: k - 1 re-admissions of this outage failed, so the next one is
    the k-th (its ramp says so); a half-open breaker (after a reset or a maintenance
    window) has none behind it."""
    cfg = target(failure_threshold=1, success_threshold=1, ramp=RampSettings(duration=Duration(10.0)))
    decider = Decider([cfg], rng=random.Random(0), now=at(10.0))
    event = state_changed("db", 6, state, at=T0 + timedelta(seconds=10), attempt=attempt, retry_in=0.0)
    assert decider.restore(event, at(10.0))
    (closed,) = decider.on_result(result(10.1, "pass"), at(10.1))
    assert closed.breaker == "closed"
    assert closed.ramp is not None
    assert closed.ramp.readmission == readmission


def test_a_restored_ramp_in_progress_backs_off_a_failed_re_admission() -> None:
    """A ramp restored in progress (its second re-admission) goes on: reports re-open the
    breaker as its third attempt, the delay drawn by the decorrelated backoff from base."""
    cfg = target(
        failure_threshold=1,
        backoff=backoff("decorrelated", base=2.0, maximum=100.0),
        ramp=RampSettings(duration=Duration(60.0)),
    )
    decider = Decider([cfg], rng=random.Random(0), now=at(10.0))
    ramp = Ramp(started_at=T0 + timedelta(seconds=9), duration_s=60.0, from_share=0.1, readmission=2)
    assert decider.restore(state_changed("db", 6, "healthy", at=T0 + timedelta(seconds=9), ramp=ramp), at(10.0))
    decider.on_report("db", "i1", "refused", T0 + timedelta(seconds=10), at(10.0))
    (reopened,) = decider.on_report("db", "i2", "refused", T0 + timedelta(seconds=10), at(10.0))
    assert (reopened.state, reopened.attempt) == ("unavailable", 3)
    assert reopened.retry_at is not None
    assert 2.0 <= (reopened.retry_at - reopened.at).total_seconds() <= 6.0


@pytest.mark.parametrize("started", [0.0, -100.0])
def test_a_restored_ramp_that_has_ended_is_over(started: float) -> None:
    """A ramp goes on after a restore only until it was announced to end: one that ended
    (exactly now, or long ago) is over, and the outage with it: reports re-open nothing,
    and after a maintenance window the next re-admission is the first."""
    cfg = target(failure_threshold=1, success_threshold=1, ramp=RampSettings(duration=Duration(60.0)))
    decider = Decider([cfg], rng=random.Random(0), now=at(60.0))
    ramp = Ramp(started_at=T0 + timedelta(seconds=started), duration_s=60.0, from_share=0.1, readmission=3)
    assert decider.restore(state_changed("db", 6, "healthy", at=T0, ramp=ramp), at(60.0))
    assert decider.on_report("db", "i1", "refused", T0 + timedelta(seconds=60), at(60.0)) == []
    assert decider.on_report("db", "i2", "refused", T0 + timedelta(seconds=60), at(60.0)) == []
    decider.control("maintenance", "db", "upgrade", at(60.0), duration=1.0)
    (half_open,) = decider.tick(at(61.0))
    assert half_open.breaker == "half_open"
    (closed,) = decider.on_result(result(61.1, "pass"), at(61.1))
    assert closed.ramp is not None
    assert closed.ramp.readmission == 1


@pytest.mark.parametrize(("previous", "low", "high"), [(20.0, 3.0, 60.0), (0.2, 0.5, 0.6)])
def test_a_restored_open_breaker_backs_off_from_its_announced_delay(previous: float, low: float, high: float) -> None:
    """decorrelated: uniform(base, 3 × the previous delay); restored, the previous delay is
    the one the event announced (retry_at − at): from 20 s the delays spread up to 60 s
    (beyond 3 × base), from 0.2 s never beyond 0.6 s. (base 0.1, trial_interval 0.5: the
    delay is at least 0.5.)"""
    cfg = target(
        failure_threshold=1,
        success_threshold=1,
        backoff=backoff("decorrelated", base=0.1, maximum=1000.0),
        ramp=RampSettings(duration=Duration(10.0)),
    )
    delays = []
    for seed in range(30):
        decider = Decider([cfg], rng=random.Random(seed), now=at(100.0))
        event = state_changed("db", 6, "unavailable", at=T0 + timedelta(seconds=100), attempt=2, retry_in=previous)
        assert decider.restore(event, at(100.0))
        when = 100.0 + previous + 0.01
        decider.tick(at(when))
        (closed,) = decider.on_result(result(when, "pass"), at(when))
        assert closed.ramp is not None
        decider.on_report("db", "i1", "refused", T0 + timedelta(seconds=when), at(when))
        (reopened,) = decider.on_report("db", "i2", "refused", T0 + timedelta(seconds=when), at(when))
        assert reopened.retry_at is not None
        delays.append((reopened.retry_at - reopened.at).total_seconds())
    assert max(delays) <= high + 1e-6
    assert max(delays) > low


def test_a_ramp_from_the_whole_fleet_is_no_ramp() -> None:
    """ramp.from 1 (everyone at once) re-admits without a ramp, like duration 0."""
    cfg = target(failure_threshold=1, success_threshold=1, ramp=RampSettings(duration=Duration(10.0), start=1.0))
    sim = Sim(cfg)
    sim.feed("fail")
    sim.advance(0.6)
    (closed,) = sim.feed("pass", dt=0.001)
    assert (closed.breaker, closed.ramp) == ("closed", None)


def test_a_re_admission_without_a_ramp_ends_the_outage() -> None:
    """Without a ramp the passed trial ends the outage at once: the failed re-admissions
    are forgotten, and a later re-admission (a ramp configured meanwhile, after a
    maintenance window) is the first."""
    no_ramp = target(failure_threshold=1, success_threshold=1, ramp=RampSettings(duration=Duration(0.0)))
    sim = Sim(no_ramp)
    sim.feed("fail")
    sim.advance(0.6)
    (closed,) = sim.feed("pass", dt=0.001)
    assert (closed.breaker, closed.ramp) == ("closed", None)
    sim.reload(target(failure_threshold=1, success_threshold=1, ramp=RampSettings(duration=Duration(10.0))))
    sim.control_for("maintenance", 1.0)
    (half_open,) = sim.advance(1.0)
    assert half_open.breaker == "half_open"
    (again,) = sim.feed("pass", dt=0.001)
    assert again.ramp is not None
    assert again.ramp.readmission == 1


def test_after_a_re_admission_every_points_staleness_is_a_deadline_again() -> None:
    """An open breaker schedules no staleness; once a trial closes it, every vantage point
    goes stale on time again: p1, failing since before the outage's trial, lapses 15 s
    after it was last heard (at 16), and the target is healthy then, not a second later."""
    cfg = target(failure_threshold=1, success_threshold=1, stale_after=Duration(15.0))
    decider = Decider([cfg], rng=random.Random(0), now=at(0.0))
    decider.on_result(result(0.5, "pass", "p2"), at(0.5))
    decider.on_result(result(1.0, "fail", "p1"), at(1.0))  # 1 of 2 failing: degraded
    (opened,) = decider.on_result(result(1.0, "fail", "p2"), at(1.0))
    assert opened.state == "unavailable"
    decider.tick(at(1.6))  # past retry_at: results are trials
    (closed,) = decider.on_result(result(2.0, "pass", "p2"), at(2.0))
    assert (closed.state, closed.breaker) == ("degraded", "closed")  # p1 still failing
    assert decider.tick(at(15.9)) == []
    assert [e.state for e in decider.tick(at(16.0))] == ["healthy"]


def test_flapping_stops_as_soon_as_the_share_is_below_low_with_one_old_change_left() -> None:
    """Rule 5 at a fine low bound: the only change left in a window of 12 is the oldest
    pair (weight 0.8: share 0.8/11 ≈ 0.073), below low 0.075: flapping stops then, not
    one verdict later."""
    detector = FlapDetector(FlapSettings(window=12, low=0.075, high=0.5))
    flips: list[State] = ["healthy", "degraded"]
    steady: list[State] = ["healthy"]
    verdicts = flips * 6 + steady * 11
    stopped = [i for i, v in enumerate(verdicts) if detector.record(v) and not detector.flapping]
    assert float(plain_share(verdicts, 12)) < 0.075
    assert stopped == [len(verdicts) - 1]


def test_force_open_during_a_maintenance_window_names_the_operators_reason() -> None:
    """force-open turns a maintenance window into an open-ended force-open, announced with
    the force-open's own reason."""
    sim = Sim(target())
    sim.control_for("maintenance", 600.0)
    (forced,) = sim.control("force-open", reason="hardware fault")
    assert (forced.breaker, forced.retry_at) == ("forced_open", None)
    assert forced.reason == "forced open by operator: hardware fault"


def test_a_reset_of_an_open_breaker_names_the_operators_reason() -> None:
    """reset: an open breaker goes half-open at once, the reason naming the reset."""
    sim = Sim(target(failure_threshold=1))
    sim.feed("fail", "p1", dt=0.0)
    assert sim.last().breaker == "open"
    (half_open,) = sim.control("reset", reason="after the fix")
    assert half_open.breaker == "half_open"
    assert half_open.reason == "reset by operator: after the fix; trial checks allowed now"
