"""Property tests of the catch-up rule: a takeover records what the results it saw prove.

A leader ``A`` decides from a stream of results but only its first events reach the state
stream (it is cut off, then deposed). A new leader ``B`` that heard the same results
restores A's last *stored* event and replays them with :func:`catch_up`: it must record
the transitions A decided and never stored, in the same order, continuing A's ``seq`` —
including a failing phase far shorter than the outage, and, when the vantage points of a
round report within milliseconds (a result observed before A's stored event can arrive
after it), at the times A decided them.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from healthbus.coordinator._core import Decider, Now, catch_up, is_refresh
from healthbus.protocol import Outcome, ProbeResult, StateChanged

from ._sim import at, result, target

PROBES = ("p0", "p1", "p2")
#: Seconds between two rounds of results (one per vantage point), as in the failover bench.
ROUND = 0.25

phases = st.lists(st.tuples(st.sampled_from(["pass", "fail"]), st.integers(1, 40)), min_size=2, max_size=8)


def rounds(
    plan: Sequence[tuple[Outcome, int]],
    start: float = 1.0,
    *,
    period: float = ROUND,
    spread: float = 0.01,
    delay: float = 0.0,
) -> list[tuple[Now, ProbeResult]]:
    """Every vantage point reports the phase's outcome once per round (``period`` apart), the
    points of a round observing ``spread`` apart, each result arriving ``delay`` after it was observed."""
    seen: list[tuple[Now, ProbeResult]] = []
    t = start
    for outcome, count in plan:
        for _ in range(count):
            for i, probe in enumerate(PROBES):
                observed = t + i * spread
                seen.append((at(observed + delay), result(observed, outcome, probe)))
            t += period
    return seen


def decide_live(seen: list[tuple[Now, ProbeResult]], end: Now) -> list[StateChanged]:
    """What a leader deciding live makes of ``seen`` (timers between results, as the service runs them)."""
    decider = Decider([target(failure_threshold=2, success_threshold=2)], rng=random.Random(0), now=at(0.0))
    events: list[StateChanged] = []
    for when, res in seen:
        events += decider.tick(when)
        events += decider.on_result(res, when)
    events += decider.tick(end)
    return events


def changes(events: list[StateChanged]) -> list[tuple[str, str, int]]:
    return [(e.state, e.breaker, e.attempt) for e in events if not is_refresh(e)]


@settings(max_examples=200, deadline=None)
@given(plan=phases, cut=st.integers(0, 30))
def test_a_takeover_records_every_transition_the_deposed_leader_did_not_store(
    plan: list[tuple[Outcome, int]], cut: int
) -> None:
    """B = restore(A's last stored event) + replay(results) decides exactly A's unstored transitions."""
    seen = rounds(plan)
    end = at(seen[-1][0].mono + 1.0)
    leader = decide_live(seen, end)
    stored = leader[: min(cut, len(leader))]  # what reached the stream before the outage
    start = seen[0][0]
    fresh = Decider([target(failure_threshold=2, success_threshold=2)], rng=random.Random(0), now=start)
    restored, caught_up = catch_up(fresh, stored[-1:], seen, end, start)
    assert restored == (1 if stored else 0)
    assert changes(caught_up) == changes(leader[len(stored) :])
    chain = stored + caught_up
    assert [e.seq for e in chain] == list(range(1, len(chain) + 1))
    for before, after in itertools.pairwise(chain):
        assert after.previous == before.state
        assert after.at >= before.at  # the time of the result that decided it, never earlier
    for event in caught_up:
        assert event.evidence  # what it was decided on, from the results themselves


def test_a_failing_phase_shorter_than_the_outage_is_recorded() -> None:
    """Healthy stored; then 2 s of failure inside a 10 s outage; B records unavailable and the recovery."""
    plan: list[tuple[Outcome, int]] = [("pass", 8), ("pass", 8), ("fail", 8), ("pass", 24)]
    seen = rounds(plan)
    end = at(seen[-1][0].mono + 1.0)
    leader = decide_live(seen, end)
    stored = [e for e in leader if e.state == "healthy"][:1]
    start = seen[0][0]
    fresh = Decider([target(failure_threshold=2, success_threshold=2)], rng=random.Random(0), now=start)
    _, caught_up = catch_up(fresh, stored, seen, end, start)
    states = [e.state for e in caught_up if not is_refresh(e)]
    assert "unavailable" in states
    assert states[-1] == "healthy"
    down = next(e for e in caught_up if e.state == "unavailable")
    fail_started = seen[16 * len(PROBES)][0].wall
    assert fail_started <= down.at <= fail_started + timedelta(seconds=2 * ROUND)  # at the deciding result
    assert {ev.outcome for ev in down.evidence.values()} == {"fail"}


def test_results_the_stored_event_accounts_for_are_not_replayed() -> None:
    """Results observed at or before the restored event's ``at`` decide nothing twice."""
    seen = rounds([("fail", 10)])
    end = at(seen[-1][0].mono + 0.5)
    leader = decide_live(seen, end)
    start = seen[0][0]
    fresh = Decider([target(failure_threshold=2, success_threshold=2)], rng=random.Random(0), now=start)
    _, caught_up = catch_up(fresh, leader[-1:], seen, end, start)
    assert changes(caught_up) == []


#: Seconds between two rounds of :func:`same_round`: no backoff delay is a multiple of it,
#: so no retry time falls on the instant of a result (the microseconds of a timestamp on
#: the wire would then decide which of the two came first).
SAME_ROUND = 0.27


def same_round(plan: Sequence[tuple[Outcome, int]], start: float = 1.0) -> list[tuple[Now, ProbeResult]]:
    """As :func:`rounds`, but the vantage points of a round observe within 2 ms of each other
    and each result arrives 3 ms after it was observed: a result observed *before* the
    event an earlier one decided is received *after* it (the failover bench's traffic)."""
    return rounds(plan, start, period=SAME_ROUND, spread=0.001, delay=0.003)


@settings(max_examples=300, deadline=None)
@given(plan=phases, cut=st.integers(0, 30))
def test_a_takeover_decides_what_the_old_leader_decided_after_its_stored_event_at_the_same_time(
    plan: list[tuple[Outcome, int]], cut: int
) -> None:
    """Results observed before the stored event but received after it: B decides A's next
    transitions from them, with A's times (not only when a verdict changes or a timer fires)."""
    seen = same_round(plan)
    end = at(seen[-1][0].mono + 1.0)
    leader = decide_live(seen, end)
    stored = leader[: min(cut, len(leader))]
    start = seen[0][0]
    fresh = Decider([target(failure_threshold=2, success_threshold=2)], rng=random.Random(0), now=start)
    _, caught_up = catch_up(fresh, stored[-1:], seen, end, start)

    def timed(events: list[StateChanged]) -> list[tuple[str, str, int, object]]:
        return [(e.state, e.breaker, e.attempt, e.at) for e in events if not is_refresh(e)]

    assert timed(caught_up) == timed(leader[len(stored) :])
