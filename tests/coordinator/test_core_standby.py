"""Property tests of the standby's takeover state (:class:`~healthbus.coordinator._core.Standby`).

A leader ``A`` decides live from a stream of results; only its first events reach the
state stream (it is cut off, then deposed). A standby ``B`` heard the same results,
decided them with its own decider (publishing nothing) and followed the events the stream
stored. On taking over it must publish exactly the transitions A decided and never
stored, in order, continuing A's ``seq``, at A's times — however long the outage and
however many results it spanned (the old time log of results, capped at 200,000, lost
them beyond that), while keeping per target only its decider's state and the events
decided since the last stored one.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from datetime import timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from healthbus.coordinator._core import Decider, Now, Standby, is_refresh
from healthbus.protocol import Outcome, ProbeResult, StateChanged
from tests.helpers import state_changed

from ._sim import T0, at, result, target

PROBES = ("p0", "p1", "p2")
ROUND = 0.27

phases = st.lists(st.tuples(st.sampled_from(["pass", "fail"]), st.integers(1, 40)), min_size=2, max_size=8)


def rounds(
    plan: Sequence[tuple[Outcome, int]], *, names: Sequence[str] = ("db",), spread: float = 0.001, delay: float = 0.003
) -> list[tuple[Now, ProbeResult]]:
    """Every vantage point reports the phase's outcome for every target once per round,
    observing ``spread`` apart, each result arriving ``delay`` after it was observed."""
    seen: list[tuple[Now, ProbeResult]] = []
    t = 1.0
    for outcome, count in plan:
        for _ in range(count):
            for n, name in enumerate(names):
                for i, probe in enumerate(PROBES):
                    observed = t + (n * len(PROBES) + i) * spread / len(names)
                    seen.append((at(observed + delay), result(observed, outcome, probe, name=name)))
            t += ROUND
    return seen


def decider(names: Sequence[str]) -> Decider:
    return Decider(
        [target(name, failure_threshold=2, success_threshold=2) for name in names],
        rng=random.Random(0),
        now=at(0.0),
    )


def replay(
    seen: list[tuple[Now, ProbeResult]], end: Now, names: Sequence[str], cut: int, *, heard: bool = False
) -> tuple[list[StateChanged], list[StateChanged], list[StateChanged], Standby, Decider]:
    """A decides live and stores its first ``cut`` events; B follows them as a standby.

    ``heard``: B also hears, per target, A's first event the stream did not store (A sends
    it, the stream has no leader to store it; A sends no later one before an ack).
    Returns A's events, the stored ones, what B publishes on taking over at ``end``, and B.
    """
    a, b = decider(names), decider(names)
    standby = Standby()
    leader: list[StateChanged] = []
    stored: list[StateChanged] = []
    sent_unstored: set[str] = set()

    def lead(events: list[StateChanged], now: Now) -> None:
        leader.extend(events)
        for event in events:
            if len(stored) < cut:
                stored.append(event)
                # The stream delivers it to B just after B heard what A decided it on.
                standby.stored(b, event, now)
            elif heard and event.target not in sent_unstored:
                sent_unstored.add(event.target)
                standby.stored(b, event, now)

    for when, res in seen:
        standby.keep(b.tick(when))
        standby.keep(b.on_result(res, when))
        lead(a.tick(when) + a.on_result(res, when), when)
    lead(a.tick(end), end)
    last = {event.target: event for event in stored}
    _, caught_up = standby.take_over(b, last.values(), end)
    return leader, stored, caught_up, standby, b


def timed(events: list[StateChanged]) -> list[tuple[str, str, str, int, object]]:
    """The transitions, per target in order (targets are independent: the order across them is not kept)."""
    changes = [(e.target, e.state, e.breaker, e.attempt, e.at) for e in events if not is_refresh(e)]
    return sorted(changes, key=lambda change: change[0])


def check_chains(stored: list[StateChanged], caught_up: list[StateChanged]) -> None:
    for name in {e.target for e in stored + caught_up}:
        chain = [e for e in stored + caught_up if e.target == name]
        assert [e.seq for e in chain] == list(range(1, len(chain) + 1))
        for before, after in itertools.pairwise(chain):
            assert after.previous == before.state
            assert after.at >= before.at
    for event in caught_up:
        assert event.evidence


@settings(max_examples=300, deadline=None)
@given(plan=phases, cut=st.integers(0, 30))
# The history with which the replay-based takeover lost the deposed leader's last transition
# (`unavailable`/`open`, attempt 5: issue 31); kept against the standby that replaced it.
@example(
    plan=[("fail", 15), ("pass", 5), ("pass", 7), ("pass", 16), ("pass", 40), ("pass", 40), ("fail", 23), ("fail", 40)],
    cut=10,
)
def test_a_takeover_publishes_what_the_deposed_leader_decided_and_did_not_store(
    plan: list[tuple[Outcome, int]], cut: int
) -> None:
    seen = rounds(plan)
    end = at(seen[-1][0].mono + 1.0)
    leader, stored, caught_up, _, _ = replay(seen, end, ("db",), cut)
    assert timed(caught_up) == timed(leader[len(stored) :])
    check_chains(stored, caught_up)


@settings(max_examples=200, deadline=None)
@given(plan=phases, cut=st.integers(0, 30))
def test_an_event_heard_but_never_stored_is_published_at_the_leaders_time(
    plan: list[tuple[Outcome, int]], cut: int
) -> None:
    """B hears A's first unstored event (a core subscriber gets it while the stream cannot
    store it): the takeover publishes it and what follows, dated when A decided them, not
    at the takeover (the failure chaos/test_lost_transitions.py found)."""
    seen = rounds(plan)
    end = at(seen[-1][0].mono + 1.0)
    leader, stored, caught_up, _, _ = replay(seen, end, ("db",), cut, heard=True)
    assert timed(caught_up) == timed(leader[len(stored) :])
    check_chains(stored, caught_up)


def _heard_everything() -> tuple[Standby, Decider, list[StateChanged], Now]:
    """B decided every result and heard every event A sent (each acked before the next)."""
    seen = rounds([("pass", 10), ("fail", 10)])
    a, b = decider(["db"]), decider(["db"])
    standby = Standby()
    events: list[StateChanged] = []
    for when, res in seen:
        standby.keep(b.tick(when) + b.on_result(res, when))
        for event in a.tick(when) + a.on_result(res, when):
            events.append(event)
            standby.stored(b, event, when)
    return standby, b, events, at(seen[-1][0].mono + 0.5)


def test_the_heard_event_is_published_once_whether_or_not_the_stream_stored_it() -> None:
    standby, b, events, end = _heard_everything()
    assert len(events) >= 2
    assert events[-1].state == "unavailable"
    assert standby.unstored("db") == events[-1:]  # one followed event kept, not a log
    # The stream stored the last one: nothing to publish.
    assert [e for e in standby.take_over(b, events[-1:], end)[1] if not is_refresh(e)] == []
    # The stream did not store it (it had no leader): published as A decided it.
    standby, b, events, end = _heard_everything()
    assert standby.take_over(b, events[-2:-1], end)[1][:1] == events[-1:]


def test_an_outage_longer_than_the_old_cap_loses_nothing() -> None:
    """250,000 results (over the 200,000 the time log kept) after the last stored event,
    with phases of failure and recovery all through it: every transition is published."""
    names = [f"t{i}" for i in range(10)]
    cycle: list[tuple[Outcome, int]] = [("fail", 60), ("pass", 1_650)]
    plan: list[tuple[Outcome, int]] = [("pass", 10), *cycle * 5]
    seen = rounds(plan, names=names)
    assert len(seen) > 250_000
    end = at(seen[-1][0].mono + 1.0)
    stored_before_outage = len(names)  # every target's first event: healthy
    leader, stored, caught_up, standby, b = replay(seen, end, names, stored_before_outage)
    assert {e.state for e in stored} == {"healthy"}
    lost = leader[len(stored) :]
    assert len([e for e in lost if e.state == "unavailable"]) >= 5 * len(names)
    assert timed(caught_up) == timed(lost)
    check_chains(stored, caught_up)
    assert len(standby) == 0  # handed over
    assert all(b.vantage_points(name) == len(PROBES) for name in names)  # O(targets × points)


def test_events_the_stream_stored_are_not_published_again() -> None:
    seen = rounds([("pass", 10), ("fail", 10)])
    end = at(seen[-1][0].mono + 0.5)
    leader, stored, caught_up, _, _ = replay(seen, end, ("db",), 100)
    assert stored == leader
    assert caught_up == []


def test_a_stream_event_the_standby_missed_is_aligned_on_taking_over() -> None:
    """B never saw A's events stored (it followed nothing): it aligns to the stream's last."""
    seen = rounds([("pass", 10), ("fail", 10), ("pass", 10)])
    end = at(seen[-1][0].mono + 0.5)
    a, b = decider(["db"]), decider(["db"])
    standby = Standby()
    leader: list[StateChanged] = []
    for when, res in seen:
        standby.keep(b.tick(when) + b.on_result(res, when))
        leader += a.tick(when) + a.on_result(res, when)
    leader += a.tick(end)
    aligned, caught_up = standby.take_over(b, leader[-1:], end)
    assert aligned == 1
    assert [e for e in caught_up if not is_refresh(e)] == []
    assert b.state("db")[2] == leader[-1].seq


def _leader() -> tuple[Decider, list[StateChanged], Now]:
    """A leader that decided a few events (at least two) from a pass then fail phase, and
    the moment after its last round."""
    seen = rounds([("pass", 10), ("fail", 10)])
    end = at(seen[-1][0].mono + 0.5)
    a = decider(["db"])
    events: list[StateChanged] = []
    for when, res in seen:
        events += a.tick(when) + a.on_result(res, when)
    events += a.tick(end)
    assert len(events) >= 2
    return a, events, end


def _stepped_down() -> tuple[Decider, Standby, list[StateChanged], Now]:
    """That leader stepped down with all but its first event unacked."""
    a, events, end = _leader()
    standby = Standby()
    standby.step_down(a, events[1:])
    return a, standby, events, end


def test_a_leader_that_steps_down_keeps_its_unacked_events_for_a_later_takeover() -> None:
    a, standby, events, end = _stepped_down()
    assert standby.unstored("db") == events[1:]
    _, caught_up = standby.take_over(a, events[:1], end)
    assert caught_up == events[1:]


def test_after_stepping_down_an_event_up_to_the_last_acked_one_is_not_news() -> None:
    """Stored is everything up to the first unacked event: hearing the last acked one
    again (e.g. read back from the stream) changes nothing."""
    a, standby, events, end = _stepped_down()
    assert not standby.stored(a, events[0], end)
    assert standby.unstored("db") == events[1:]
    assert Standby().unstored("db") == []  # nothing kept for a target never heard of


def test_a_takeover_aligns_to_a_stream_that_stored_an_unacked_event() -> None:
    """The stream stored the first unacked event after all (its ack was lost): the target
    is aligned to the stream and decided afresh, and the rest is published after it."""
    a, standby, events, end = _stepped_down()
    aligned, caught_up = standby.take_over(a, events[1:2], end)
    assert aligned == 1
    assert [e.seq for e in caught_up if not is_refresh(e)] == [e.seq for e in events[2:]]


def test_a_leader_that_steps_down_with_everything_acked_takes_over_without_aligning() -> None:
    """Everything it announced is stored: the stream's last event is its own last, so a
    later takeover has nothing to align and nothing to publish."""
    a, events, end = _leader()
    standby = Standby()
    standby.step_down(a, [])
    aligned, caught_up = standby.take_over(a, events[-1:], end)
    assert aligned == 0
    assert [e for e in caught_up if not is_refresh(e)] == []


def test_a_standby_that_followed_nothing_aligns_to_the_streams_first_event() -> None:
    """A standby started after the leader's only event (seq 1) was stored aligns to it;
    an event of a target no longer configured is skipped, not the end of the list."""
    b = decider(["db", "cache"])
    first = state_changed("db", 1, "healthy", at=T0)
    gone = state_changed("gone", 3, "healthy", at=T0)
    cache = state_changed("cache", 2, "degraded", at=T0)
    aligned, _ = Standby().take_over(b, [gone, first, cache], at(1.0))
    assert aligned == 2
    assert b.state("db") == ("healthy", "closed", 1)
    assert b.state("cache") == ("degraded", "closed", 2)


def test_a_stream_event_with_the_followed_seq_but_another_time_is_not_the_one_followed() -> None:
    """The stream holds an event with the seq of the one followed but decided at another
    time (another leader's): the target is aligned to the stream's, not published after it."""
    b = decider(["db"])
    standby = Standby()
    assert standby.stored(b, state_changed("db", 5, "degraded", at=T0 + timedelta(seconds=10)), at(10.0))
    other = state_changed("db", 5, "degraded", at=T0 + timedelta(seconds=11))
    aligned, _ = standby.take_over(b, [other], at(12.0))
    assert aligned == 1
    assert b.current("db") == other  # the stream's event, not the one followed


def test_a_stored_event_unlike_what_the_standby_decided_is_aligned_to() -> None:
    """The standby's core decided the next transition itself, but the leader's stored event
    with that seq says otherwise: the core is aligned to the stored one (only a transition it
    decided the same way is followed without aligning)."""
    b = decider(["db"])
    standby = Standby()
    assert standby.stored(b, state_changed("db", 1, "healthy", at=T0 + timedelta(seconds=1)), at(1.0))
    for t in (2.0, 3.0):
        standby.keep(b.on_result(result(t, "warn", "p1"), at(t)))
    assert [e.state for e in standby.unstored("db")] == ["healthy", "degraded"]  # its own seq 2
    leaders = state_changed("db", 2, "unavailable", at=T0 + timedelta(seconds=3), previous="healthy")
    assert standby.stored(b, leaders, at(3.5))
    assert b.state("db") == ("unavailable", "open", 2)


def test_a_deposed_leader_follows_its_own_transition_as_published_without_aligning() -> None:
    """A leader steps down with an unacked event; the new leader publishes that transition
    (its own ``at``): the deposed leader's standby follows it (True), keeps the published
    one as followed, and its core is not aligned back (its last event stays its own)."""
    b = decider(["db"])
    (own,) = [e for t in (1.0, 2.0) for e in b.on_result(result(t, "pass", "p1"), at(t))]
    standby = Standby()
    standby.step_down(b, [own])
    published = state_changed("db", own.seq, own.state, at=T0 + timedelta(seconds=2.5), breaker=own.breaker)
    assert standby.stored(b, published, at(3.0))
    assert standby.unstored("db") == [published]
    assert b.current("db") == own
