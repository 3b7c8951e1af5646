"""Catching up on a takeover: record what can be proven from the results seen meanwhile.

A coordinator that takes over (or re-takes the lease after another one led) restores every
target from the last event in the state stream. Transitions decided after that event by a
leader that could not publish them are lost with that leader; what is *not* lost are the
results behind them, which every coordinator hears, standby or not. :func:`catch_up`
replays them into a fresh decider, in the order and at the times they were received, so
it decides what a live leader would have decided from them, with the ``at`` of the
result that decided it and evidence from those results.

Rules:

* The decider is created at ``start``, no later than the first result replayed, and
  time only moves forward for it: each result at the time it was received, the timers
  (:meth:`Decider.tick`) before each result and once more at ``now``.
* Every result rebuilds evidence (vantage points, streaks). A target's stored event is
  *aligned* (:meth:`Decider.align`) just before the first result observed, or
  received, after its ``at`` (one received after it reached the old leader after it
  too, give or take the difference in delivery): from then on the decider continues
  that target's ``seq`` and state. What it decided for the target before that point is
  already in the stream (that event, or the ones before it) and is not returned.
* At that point, if the evidence replayed so far has caught up with the stored
  event's, the target is decided afresh (a timer run at the aligned time): results
  observed before the stored event but received after it by the old leader may already
  prove its next transition, which is then recorded with that time — not only once
  some verdict changes or a timer is due, which with a long ``stale_after`` could be
  after the phase it announces had ended.
* A target with no stored event keeps everything decided for it; a stored event later
  than every result is aligned at the end (at its ``at``, within ``[start, now]``).
* A result the decider rejects is skipped (it was not handled live either).
* Pure: no I/O, no clock. The caller publishes the returned events, in order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from healthbus.protocol import ProbeResult, StateChanged

from ._decider import Decider, Now, Rejected


def _at(event: StateChanged, start: Now, floor: Now, ceiling: Now) -> Now:
    """``event.at`` on ``start``'s timeline, kept within ``[floor, ceiling]``."""
    mono = start.mono + (event.at - start.wall).total_seconds()
    if mono <= floor.mono:
        return floor
    if mono >= ceiling.mono:
        return ceiling
    return Now(mono, event.at)


def catch_up(
    decider: Decider,
    last: Iterable[StateChanged],
    seen: Iterable[tuple[Now, ProbeResult]],
    now: Now,
    start: Now,
) -> tuple[int, list[StateChanged]]:
    """Replay ``seen`` (results with the time each was received, in that order) into
    ``decider`` (fresh, created at ``start``), aligning each target to ``last`` (its last
    stored event) along the way.

    Returns how many targets were aligned and the events to publish: those decided after
    each target's stored event, ending with the timers due at ``now``.
    """
    pending = {event.target: event for event in last if event.target in decider}
    aligned: set[str] = set()
    events: list[StateChanged] = []
    previous = start

    def keep(out: list[StateChanged]) -> None:
        events.extend(e for e in out if e.target not in pending)

    def align(stored: StateChanged, point: Now) -> None:
        keep(decider.tick(point))  # the timers up to that point (this target's still before it)
        del pending[stored.target]
        if decider.align(stored, point):
            aligned.add(stored.target)
            keep(decider.tick(point))  # what the evidence so far proves beyond the stored event

    for when, result in seen:
        if when.mono < previous.mono or when.mono > now.mono:
            continue  # outside [start, now], or out of order: not on this timeline
        stored = pending.get(result.target)
        if stored is not None and (result.observed_at > stored.at or when.wall > stored.at):
            align(stored, _at(stored, start, previous, when))
        keep(decider.tick(when))
        with contextlib.suppress(Rejected):
            keep(decider.on_result(result, when))
        previous = when
    # Stored events later than every result, in the order of their aligned times.
    points = [(_at(stored, start, previous, now), stored) for stored in pending.values()]
    for point, stored in sorted(points, key=lambda item: item[0].mono):
        align(stored, point)
    events += decider.tick(now)
    return len(aligned), events
