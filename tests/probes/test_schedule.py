"""The per-target cadence: jitter, retry_interval after a fail, and holds until retry_at."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from healthbus.probes import TargetSchedule, hold_until
from healthbus.protocol import BreakerState, State, StateChanged
from tests.helpers import state_changed

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _schedule(now: float = 100.0, seed: int = 1, jitter: float = 0.1) -> TargetSchedule:
    return TargetSchedule(interval=5.0, retry_interval=1.0, jitter=jitter, rng=random.Random(seed), now=now)


def _event(breaker: BreakerState, retry_in: float | None, seq: int = 1) -> StateChanged:
    state: State = "unavailable" if breaker == "open" else "healthy"
    return state_changed("redis-main", seq, state, at=T0, previous="healthy", breaker=breaker, retry_in=retry_in)


def test_first_checks_spread_over_the_interval() -> None:
    """Targets started together get first checks spread over one interval, not lined up."""
    rng = random.Random(7)
    firsts = [
        TargetSchedule(interval=5.0, retry_interval=1.0, jitter=0.1, rng=rng, now=0.0).next_check for _ in range(200)
    ]
    assert all(0.0 <= f <= 5.0 for f in firsts)
    assert max(firsts) - min(firsts) > 4.0
    assert len({round(f, 3) for f in firsts}) > 150


def test_next_check_after_pass_and_fail() -> None:
    """After a pass the next check is an interval later; after a fail a retry_interval later."""
    s = _schedule(jitter=0.0)
    s.record("pass", started=10.0, finished=10.2)
    assert s.next_check == 15.0
    s.record("fail", started=15.0, finished=15.1)
    assert s.next_check == 16.0
    s.record("warn", started=16.0, finished=16.1)
    assert s.next_check == 21.0


@given(st.floats(min_value=0, max_value=1e6), st.integers(0, 2**32), st.sampled_from(["pass", "warn", "fail"]))
def test_jitter_bounds(start: float, seed: int, outcome: str) -> None:
    """Jitter stretches a period by at most the configured fraction, and never before the check ended."""
    s = _schedule(seed=seed, jitter=0.2)
    s.record(outcome, started=start, finished=start + 0.5)  # type: ignore[arg-type]
    period = 1.0 if outcome == "fail" else 5.0
    assert start + 0.5 <= s.next_check
    assert s.next_check <= start + period * 1.2 + 1e-9
    assert s.next_check >= start + period * 0.8 - 1e-9


def test_slow_check_never_overlaps() -> None:
    """A check that took longer than the period makes the next one due when it finished, not before."""
    s = _schedule(jitter=0.0)
    s.record("fail", started=0.0, finished=3.0)
    assert s.next_check == 3.0


def test_poll_before_and_at_due() -> None:
    """poll says wait before the due time and check from it on."""
    s = _schedule(jitter=0.0)
    s.record("pass", started=0.0, finished=0.1)
    assert s.poll(4.9) == "wait"
    assert s.wake_at() == 5.0
    assert s.poll(5.0) == "check"


def test_hold_skips_until_retry_at_then_checks_at_once() -> None:
    """While held, due checks are skipped; the moment the hold ends, a check is due."""
    s = _schedule(jitter=0.0)
    s.record("fail", started=0.0, finished=0.1)  # next at 1.0
    s.hold(12.5, now=0.2)
    assert s.poll(0.5) == "wait"
    assert s.wake_at() == 1.0
    assert s.poll(1.0) == "skip"  # the cadence wanted a check: counted, not run
    assert s.next_check == 6.0
    assert s.poll(6.0) == "skip"
    assert s.poll(11.0) == "skip"
    assert s.wake_at() == 12.5
    assert s.poll(12.4) == "wait"
    assert s.poll(12.5) == "check"  # the trial, at retry_at exactly
    assert s.hold_until is None


def test_hold_never_checks_before_retry_at() -> None:
    """Whatever the cadence, no poll before retry_at says check."""
    s = TargetSchedule(interval=0.5, retry_interval=0.1, jitter=0.5, rng=random.Random(3), now=0.0)
    s.hold(30.0, now=0.0)
    t = 0.0
    while t < 30.0:
        assert s.poll(t) != "check"
        t = min(s.wake_at(), 30.0) if s.wake_at() > t else t + 0.01
    assert s.poll(30.0) == "check"


def test_hold_lifted_early_checks_at_once() -> None:
    """A hold lifted before retry_at (operator reset) makes the target due at once."""
    s = _schedule(jitter=0.0)
    s.record("pass", started=0.0, finished=0.1)
    s.hold(60.0, now=1.0)
    s.hold(None, now=2.0)
    assert s.poll(2.0) == "check"


def test_hold_in_the_past_is_no_hold() -> None:
    """A retry_at already passed holds nothing."""
    s = _schedule(jitter=0.0)
    s.record("pass", started=0.0, finished=0.1)
    s.hold(1.0, now=2.0)
    assert s.hold_until is None
    assert s.poll(2.0) == "wait"


def test_hold_until_from_state_changed() -> None:
    """Only an open (or forced open) breaker with retry_at in the future holds, converted to monotonic time."""
    assert hold_until(_event("open", 8.0), wall_now=T0, mono_now=100.0) == 108.0
    assert hold_until(_event("forced_open", 3.0), wall_now=T0, mono_now=100.0) == 103.0
    assert hold_until(_event("open", -1.0), wall_now=T0, mono_now=100.0) is None
    assert hold_until(_event("open", None), wall_now=T0, mono_now=100.0) is None
    assert hold_until(_event("half_open", 8.0), wall_now=T0, mono_now=100.0) is None
    assert hold_until(_event("closed", 8.0), wall_now=T0, mono_now=100.0) is None


@st.composite
def _scenarios(draw: st.DrawFn) -> list[tuple[str, float, float]]:
    """Random steps: time passes, a hold is set or lifted, the next check's latency and outcome change."""
    return draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("tick"), st.floats(0.0, 3.0), st.just(0.0)),
                st.tuples(st.just("hold"), st.floats(-1.0, 20.0), st.just(0.0)),
                st.tuples(st.just("lift"), st.just(0.0), st.just(0.0)),
                st.tuples(st.just("latency"), st.floats(0.0, 2.0), st.floats(0.0, 2.99)),
            ),
            max_size=60,
        )
    )


@given(_scenarios(), st.integers(0, 2**16))
def test_schedule_properties(steps: list[tuple[str, float, float]], seed: int) -> None:
    """Whatever happens: never a check while held, a check as soon as a hold ends, no overlapping checks."""
    s = TargetSchedule(interval=2.0, retry_interval=0.4, jitter=0.3, rng=random.Random(seed), now=0.0)
    now = 0.0
    latency = 0.1
    outcome = "pass"
    for kind, value, extra in steps:
        if kind == "tick":
            now += value
        elif kind == "hold":
            s.hold(now + value, now)
        elif kind == "lift":
            s.hold(None, now)
        else:
            latency = value
            outcome = ("pass", "warn", "fail")[int(extra)]
        held_until = s.hold_until
        action = s.poll(now)
        if held_until is not None and now < held_until:
            assert action != "check"
        elif held_until is not None:
            assert action == "check"  # the trial, at once
        if action == "check":
            s.record(outcome, now, now + latency)  # type: ignore[arg-type]
            assert s.next_check >= now + latency  # the next check never starts before this one ended
            now += latency
        assert s.wake_at() >= 0.0


def test_confirm_makes_the_target_due_at_once_unless_held() -> None:
    """A confirmation request: due now and marked; during a hold it is ignored and the hold stands."""
    s = _schedule(jitter=0.0)
    s.record("pass", 100.0, 100.1)
    assert s.poll(101.0) == "wait"
    assert s.confirm(101.0)
    assert s.poll(101.0) == "check"
    assert s.take_confirm()
    assert not s.take_confirm()
    s.record("fail", 101.0, 101.2)
    assert s.next_check == 102.0  # failing: re-checked at retry_interval, as after any fail
    s.hold(110.0, 101.5)
    assert not s.confirm(101.5)
    assert not s.confirming
    assert s.poll(101.5) == "wait"
    assert s.wake_at() == 102.0  # the cadence's skip, then the hold's end: never earlier
    assert s.poll(110.0) == "check"


def test_confirm_during_a_check_checks_again_when_it_ends() -> None:
    """A request that arrives while a check runs is answered by another check right after it."""
    s = _schedule(jitter=0.0)
    assert s.poll(s.next_check) == "check"
    started = s.next_check
    assert not s.take_confirm()
    assert s.confirm(started + 0.1)  # the check is still running
    s.record("pass", started, started + 0.3)
    assert s.next_check == started + 0.3
    assert s.take_confirm()


def test_a_trialled_target_is_checked_every_trial_interval_whatever_the_outcome() -> None:
    """Breaker open past retry_at (or half-open): checks every trial_interval, passing or
    failing, unstretched; back to the usual cadence once the breaker closes."""
    s = TargetSchedule(interval=5.0, retry_interval=1.0, jitter=0.5, rng=random.Random(3), now=0.0, trial_interval=0.25)
    s.hold(2.0, 0.0)
    s.trial(True, 0.0)
    assert s.poll(1.9) in ("skip", "wait")
    assert s.poll(2.0) == "check"  # the hold ended: at once
    starts = [2.0]
    for outcome in ("fail", "pass", "fail", "pass", "pass"):
        s.record(outcome, starts[-1], starts[-1] + 0.01)
        assert s.poll(starts[-1] + 0.2499) == "wait"
        starts.append(s.next_check)
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [0.25] * 5
    s.trial(False, starts[-1])
    s.record("pass", starts[-1], starts[-1] + 0.01)
    assert s.next_check - starts[-1] >= 2.5  # the usual interval (5 s ± 50 %)


def test_trialling_starts_within_one_trial_interval() -> None:
    """A target that starts being trialled with its next check an interval away is due
    within trial_interval."""
    s = TargetSchedule(interval=5.0, retry_interval=1.0, jitter=0.0, rng=random.Random(0), now=0.0, trial_interval=0.5)
    s.record("pass", 0.0, 0.01)
    assert s.next_check == 5.0
    s.trial(True, 1.0)
    assert s.next_check == 1.5
