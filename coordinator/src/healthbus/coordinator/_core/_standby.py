"""What a coordinator that does not lead keeps for a takeover: a decider kept live, not a log.

A standby decides every result it hears, and runs the timers, with the same
:class:`~._decider.Decider` a leader uses: that decider's per-target state (vantage
points and their streaks, breaker, backoff, flap history) *is* everything a takeover
needs, folded as the results arrive, so it costs O(targets × vantage points) however
long the outage and however many results per second. What the standby decides is not
published; instead:

* Each event the leader publishes to the state stream is :meth:`Standby.stored` (the
  standby hears it on the stream's subject): the target is aligned to it
  (:meth:`Decider.align`: the event becomes what it announced last, the evidence heard
  is kept) and what the standby decided for it before is forgotten (the leader decided
  it, or decided otherwise and that stands).
* Hearing an event is not proof that the stream stored it: a core subscriber gets the
  leader's message even while the stream has no leader and stores nothing. So the
  event followed last is kept too (with the leader's time and evidence). The leader
  sends a target's next event only once the stream acked the previous one
  (:mod:`.._outbox`), so every earlier one *is* stored: per target the standby keeps
  one followed event, not a log.
* What it decided *after* a target's last followed event is kept (in order, with the
  seq that follows that event): the transitions a leader that can no longer store them
  decided, or would have. Bounded by the transitions themselves (hysteresis, backoff
  and flap damping), not by the number of results.
* On a takeover (:meth:`Standby.take_over`) the stream's last events are compared with
  the one followed: a target whose last stored event is the one followed, or the one
  just before it (the followed event never stored), publishes what it kept after the
  stream's last event, the leader's unstored event first, at the leader's time; any
  other (an event the standby missed, or a stream that lost one) is aligned to the
  stream's last event and decided afresh from the evidence kept.
* A leader that steps down (:meth:`Standby.step_down`) keeps its decider: the events
  its outbox could not store become the ones decided after each target's last stored
  event.

Pure: no I/O, no clock; the caller passes the time and publishes what it gets.
"""

from __future__ import annotations

from collections.abc import Iterable

from healthbus.protocol import StateChanged

from ._decider import Decider, Now


class Standby:
    """Per target: the seq of the last stored event aligned to, and what was decided since."""

    def __init__(self) -> None:
        self._stored: dict[str, int] = {}
        self._unstored: dict[str, list[StateChanged]] = {}

    def __len__(self) -> int:
        """Events kept: per target the one followed last (perhaps not stored) and those decided since."""
        return sum(len(events) for events in self._unstored.values())

    def unstored(self, target: str) -> list[StateChanged]:
        """The event followed last for ``target`` (perhaps not stored) and what was decided after it, in order."""
        return list(self._unstored.get(target, ()))

    def keep(self, events: Iterable[StateChanged]) -> None:
        """Keep events the decider decided while not leading (in seq order per target)."""
        for event in events:
            kept = self._unstored.get(event.target)
            if kept is None:
                self._unstored[event.target] = [event]
            else:
                kept.append(event)

    def stored(self, decider: Decider, event: StateChanged, now: Now, *, realign: bool = False) -> bool:
        """The leader published ``event`` (heard on the stream's subject, or read from the
        stream at start): align its target to it, keep it (it may not be stored) and what
        the evidence already proves beyond it.

        An event the decider decided itself after the one followed before (kept here as
        its own: the same seq, state, breaker and attempt) is followed without aligning the
        decider back to it, unless ``realign`` (a takeover aligning to the stream's last
        event). An event not newer than the last one aligned to is ignored. False if
        ignored or the target is not configured.
        """
        name = event.target
        before = self._stored.get(name, 0)
        if name not in decider or event.seq <= before:
            return False
        self._stored[name] = event.seq
        kept = self._unstored.get(name, [])
        mine = None
        if not realign:
            mine = next((i for i, own in enumerate(kept) if own.seq > before and _decided(own, event)), None)
        if mine is not None:
            # This decider decided that very transition itself (a deposed leader hearing
            # its unstored events published by the new leader): it is already past it.
            # Aligning it back would forget what it learnt since (an open breaker's
            # passed trials, for one). Follow the published one, and keep what was decided
            # after it.
            self._unstored[name] = [event, *kept[mine + 1 :]]
            return True
        # Kept until the stream is known to hold it (take_over drops it then): heard
        # on the wire, it may be an event the stream could not store.
        self._unstored[name] = [event]
        if not decider.align(event, now):
            self._unstored.pop(name, None)
            return False
        self.keep(decider.tick(now))
        return True

    def step_down(self, decider: Decider, unacked: Iterable[StateChanged]) -> None:
        """A leader stands by with its decider: what it announced is stored, but for
        ``unacked`` (its outbox's events not acked, in order per target)."""
        self._stored = {name: decider.state(name)[2] for name in decider.names}
        self._unstored = {}
        for event in unacked:
            if event.target not in self._unstored:
                self._stored[event.target] = event.seq - 1
            self.keep((event,))

    def take_over(self, decider: Decider, last: Iterable[StateChanged], now: Now) -> tuple[int, list[StateChanged]]:
        """Lead from ``last`` (the stream's last event per target): align every target
        whose last stored event is not the one followed, decide what is due at ``now``.

        Returns how many targets were aligned here and the events to publish, in order
        per target: those decided after each target's last stored event.
        """
        aligned = 0
        for event in last:
            name = event.target
            if name not in decider:
                continue
            kept = self._unstored.get(name, [])
            # Known stored: everything up to the one before the first kept event.
            floor = kept[0].seq - 1 if kept else self._stored.get(name, -1)
            ahead = event.seq - floor
            followed = kept[0] if kept and kept[0].seq == self._stored.get(name) else None
            if ahead == 0 or (ahead == 1 and followed is not None and _same(followed, event)):
                # The stream holds all up to the one followed, or all but it: publish the
                # rest (the leader's unstored event first, at the leader's time).
                self._unstored[name] = kept[ahead:]
                continue
            self._stored[name] = 0  # the stream is the truth, even if it went back
            if self.stored(decider, event, now, realign=True):
                self._unstored[name] = self._unstored[name][1:]  # that one is stored
                aligned += 1
        self.keep(decider.tick(now))
        events = [event for kept in self._unstored.values() for event in kept]
        self._stored.clear()
        self._unstored.clear()
        return aligned, events


def _same(kept: StateChanged, stored: StateChanged) -> bool:
    """The stream's event is the one followed (the same seq, state and decision time)."""
    return kept.seq == stored.seq and kept.state == stored.state and kept.at == stored.at


def _decided(own: StateChanged, published: StateChanged) -> bool:
    """``published`` is the transition this decider decided as ``own``: the same seq, state,
    breaker and attempt (its time and reason are the publisher's)."""
    return (own.seq, own.state, own.breaker, own.attempt) == (
        published.seq,
        published.state,
        published.breaker,
        published.attempt,
    )
