"""What a subscriber knows: every target's current state, and the answers derived from it.

This module is pure: no I/O, no clock (times are passed in), no asyncio. Both the real
:class:`~healthbus.subscribers.HealthClient` and the test stand-in
:class:`~healthbus.subscribers.testing.FakeHealthClient` keep their knowledge in a
:class:`StateTable`, so they answer every question the same way.

Invariants:

- A target's state only moves forward: an event whose ``seq`` is not greater than the
  known one for its target (a duplicate, or older and delivered late) is ignored.
- ``available`` and ``features_ok`` are plain dicts kept up to date on every change, so
  ``is_available()`` is a single dict lookup on the hot path. They are updated key by key
  in place (never swapped half-built), so a reader in another thread sees, for each key,
  either the old or the new answer.
- Availability: ``healthy`` and ``degraded`` are available (degraded means reachable but
  impaired: callers should still use it, perhaps more gently); ``unknown``,
  ``unavailable`` and ``recovering`` are not. A target never heard of is not available.
- Re-admission ramp: an event carrying a ``ramp`` admits this instance only from its own
  moment in it (:func:`healthbus.protocol.ramp_wait` of its place,
  :func:`healthbus.protocol.ramp_place` of ``instance`` and the target). That moment is
  computed once per ramp, on this instance's monotonic clock, from when the event was
  taken in, less how far into the ramp the event's ``started_at`` says it already is by
  the wall clock (0 to the ramp's duration: a late joiner is not held for a ramp already
  over; clock skew moves the moment by at most the ramp's duration). Until then the
  target is answered unavailable (``waiting``); from then on available for the rest of
  that ramp, whatever later events of the same ramp say: never back and forth. Only the
  thread that applies events writes the table: it admits a waiting target at its moment
  (:meth:`StateTable.admit_due`, from a timer); a reader in any thread asking after the
  moment but before the timer ran gets True from :meth:`StateTable.admitted` (read-only).
- Bus loss: once the bus has been lost for ``stale_after`` seconds (at once when nothing
  was ever loaded), every state is marked ``stale`` and the policy decides availability:
  ``keep`` answers from the last known states, ``assume_available`` says True for every
  target (also ones never heard of), ``assume_unavailable`` says False for every target.
  Features follow the targets that provide them; a feature no known target provides is
  available, except under ``assume_unavailable`` while stale.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, TypeAlias

from healthbus.protocol import BreakerState, Ramp, State, StateChanged, ramp_place, ramp_wait

BusLossPolicy: TypeAlias = Literal["keep", "assume_available", "assume_unavailable"]
BUS_LOSS_POLICIES: Final[tuple[BusLossPolicy, ...]] = ("keep", "assume_available", "assume_unavailable")

#: The states in which callers should use a dependency.
AVAILABLE_STATES: Final[frozenset[State]] = frozenset({"healthy", "degraded"})


@dataclass(frozen=True, slots=True)
class TargetState:
    """The current verdict for one target, as this subscriber knows it.

    The fields mirror :class:`~healthbus.protocol.StateChanged` (docs/contract.md); ``stale`` is
    True when the bus has been unreachable for longer than ``stale_after`` and this may
    no longer be the truth.
    """

    target: str
    state: State
    breaker: BreakerState
    seq: int
    at: datetime
    retry_at: datetime | None
    reason: str
    features: tuple[str, ...] = ()
    failures: int = 0
    attempt: int = 0
    flapping: bool = False
    stale: bool = False
    ramp: Ramp | None = None
    """The re-admission ramp in progress, as the event announced it (None: none)."""

    @property
    def available(self) -> bool:
        """True for ``healthy`` and ``degraded`` (the bus-loss policy is not applied here)."""
        return self.state in AVAILABLE_STATES

    @classmethod
    def from_event(cls, event: StateChanged, *, stale: bool = False) -> TargetState:
        """The state a StateChanged describes."""
        return cls(
            target=event.target,
            state=event.state,
            breaker=event.breaker,
            seq=event.seq,
            at=event.at,
            retry_at=event.retry_at,
            reason=event.reason,
            features=tuple(event.features),
            failures=event.failures,
            attempt=event.attempt,
            flapping=event.flapping,
            stale=stale,
            ramp=event.ramp,
        )


@dataclass(frozen=True, slots=True)
class BusStatus:
    """How the subscriber's link to the bus is doing.

    ``connected``: the state stream is being followed live (connected and caught up).
    ``stale``: the bus-loss policy is in force. ``lost_for``: seconds since the link was
    lost (None while connected). ``reason``: why the state is not followed (e.g. NATS
    unreachable, the stream missing, a permission refused; None while connected).
    """

    connected: bool
    stale: bool
    lost_for: float | None
    policy: BusLossPolicy
    reason: str | None = None


def validate_policy(policy: str) -> BusLossPolicy:
    """``policy`` if it is a bus-loss policy, else ValueError naming the choices."""
    for known in BUS_LOSS_POLICIES:
        if policy == known:
            return known
    raise ValueError(f"invalid on_bus_loss {policy!r}: expected one of {', '.join(BUS_LOSS_POLICIES)}")


class StateTable:
    """Current states plus the precomputed answers; see the module docstring for the rules."""

    __slots__ = (
        "_admitted",
        "available",
        "default_available",
        "default_feature",
        "features_ok",
        "instance",
        "lost_since",
        "policy",
        "providers",
        "reason",
        "stale",
        "stale_after",
        "states",
        "waiting",
    )

    def __init__(self, *, stale_after: float = 30.0, policy: BusLossPolicy = "keep", instance: str = "") -> None:
        """``instance``: this instance's id, its place in re-admission ramps."""
        if stale_after < 0:
            raise ValueError(f"invalid stale_after {stale_after!r}: expected seconds >= 0")
        self.stale_after = float(stale_after)
        self.policy = validate_policy(policy)
        self.states: dict[str, TargetState] = {}
        self.available: dict[str, bool] = {}
        self.features_ok: dict[str, bool] = {}
        self.providers: dict[str, set[str]] = {}
        self.default_available = False
        self.default_feature = True
        self.lost_since: float | None = None
        self.reason: str | None = None
        self.stale = False
        self.instance = instance
        self.waiting: dict[str, tuple[datetime, float]] = {}
        """Targets in a ramp that has not reached this instance yet: the ramp's start and
        the monotonic moment this instance is admitted (kept per ramp once computed)."""
        self._admitted: dict[str, datetime] = {}

    # ------------------------------------------------------------ events

    def apply(
        self, event: StateChanged, *, mono: float | None = None, wall: datetime | None = None
    ) -> TargetState | None:
        """Take ``event`` in; the new state, or None when it was old or a duplicate.

        ``mono`` and ``wall`` are the current monotonic and wall-clock times (needed for
        an event with a ramp; without them this instance is admitted at once).
        """
        old = self.states.get(event.target)
        if old is not None and event.seq <= old.seq:
            return None
        self._place(event, mono, wall)
        if event.retired:
            # Removed from the configuration: forgotten (is_available answers as for a target
            # never heard of); the state returned tells callbacks once.
            if old is None:
                return None
            del self.states[event.target]
            self.available.pop(event.target, None)
            self.waiting.pop(event.target, None)
            self._admitted.pop(event.target, None)
            for feature in old.features:
                self.providers.get(feature, set()).discard(event.target)
                self._update_feature(feature)
            return TargetState.from_event(event, stale=self.stale)
        new = TargetState.from_event(event, stale=self.stale)
        self.states[event.target] = new
        self.available[event.target] = self._answer(new)
        if not new.features and (old is None or not old.features):
            return new  # no feature to update (the usual case)
        touched = set(new.features)
        if old is not None and old.features != new.features:
            touched.update(old.features)
            for feature in old.features:
                if feature not in new.features:
                    self.providers.get(feature, set()).discard(event.target)
        for feature in new.features:
            self.providers.setdefault(feature, set()).add(event.target)
        for feature in touched:
            self._update_feature(feature)
        return new

    def _place(self, event: StateChanged, mono: float | None, wall: datetime | None) -> None:
        """Where this instance stands in ``event``'s ramp (see the module rules)."""
        target, ramp = event.target, event.ramp
        if ramp is None or event.breaker != "closed" or mono is None or wall is None:
            self.waiting.pop(target, None)
            self._admitted.pop(target, None)
            return
        started = ramp.started_at
        if self._admitted.get(target) == started:
            return  # admitted in this ramp already: stays so
        known = self.waiting.get(target)
        if known is not None and known[0] == started:
            return  # its moment in this ramp is computed once
        late = min(ramp.duration_s, max(0.0, (wall - started).total_seconds()))
        remaining = ramp_wait(ramp, ramp_place(self.instance, target)) - late
        if remaining > 0:
            self.waiting[target] = (started, mono + remaining)
            self._admitted.pop(target, None)
        else:
            self.waiting.pop(target, None)
            self._admitted[target] = started

    def admitted(self, target: str, mono: float) -> bool:
        """Read-only: ``target`` is waiting in a ramp, its moment has come by ``mono`` and its
        state is one to use (what ``available`` will say once :meth:`admit_due` ran)."""
        entry = self.waiting.get(target)
        if entry is None:
            # Admitted meanwhile (or the ramp replaced): ``available`` was written first.
            return self.available.get(target, False)
        state = self.states.get(target)
        return entry[1] <= mono and state is not None and self._answer(state, waiting=False)

    def next_admission(self) -> float | None:
        """The earliest monotonic moment a waiting target is admitted (None: none waits)."""
        return min((at for _, at in self.waiting.values()), default=None)

    def admit_due(self, mono: float) -> bool:
        """Admit every waiting target whose moment came by ``mono``; True if any was.
        Called only by the thread that applies events."""
        due = [(target, started) for target, (started, at) in self.waiting.items() if at <= mono]
        for target, started in due:
            self._admitted[target] = started
            state = self.states.get(target)
            if state is not None:
                # Written before the target leaves ``waiting`` (its features too): a reader
                # in another thread that finds it gone re-reads these answers (admitted),
                # never a stale False.
                self.available[target] = self._answer(state, waiting=False)
                for feature in state.features:
                    self._update_feature(feature)
            del self.waiting[target]
        return bool(due)

    # ------------------------------------------------------------ the bus

    def mark_lost(self, now: float, *, immediately: bool = False, reason: str | None = None) -> bool:
        """The bus is unreachable since ``now`` (kept if already lost); True if the status changed.

        ``reason`` (kept until restored when None) says why.
        """
        changed = self.lost_since is None
        if changed:
            self.lost_since = now
        if reason is not None and reason != self.reason:
            self.reason = reason
            changed = True
        if immediately:
            return self._set_stale(True) or changed
        return self.tick(now) or changed

    def mark_restored(self) -> bool:
        """The state stream is followed live again; True if the status changed (was lost or stale)."""
        was_lost = self.lost_since is not None
        self.lost_since = None
        self.reason = None
        return self._set_stale(False) or was_lost

    def tick(self, now: float) -> bool:
        """Re-evaluate staleness at ``now``; True if it flipped."""
        if self.lost_since is None or self.stale:
            return False
        if now - self.lost_since >= self.stale_after:
            return self._set_stale(True)
        return False

    def status(self, now: float) -> BusStatus:
        """The :class:`BusStatus` at ``now``."""
        lost_for = None if self.lost_since is None else max(0.0, now - self.lost_since)
        return BusStatus(
            connected=self.lost_since is None,
            stale=self.stale,
            lost_for=lost_for,
            policy=self.policy,
            reason=self.reason,
        )

    # ------------------------------------------------------------ internals

    def _answer(self, state: TargetState, *, waiting: bool = True) -> bool:
        """Whether to use ``state``'s target now (``waiting=False``: as if its moment in a ramp came)."""
        if self.stale and self.policy != "keep":
            return self.policy == "assume_available"
        return state.state in AVAILABLE_STATES and not (waiting and state.target in self.waiting)

    def _update_feature(self, feature: str) -> None:
        targets = self.providers.get(feature)
        if not targets:
            self.providers.pop(feature, None)
            self.features_ok.pop(feature, None)
            return
        available = self.available
        self.features_ok[feature] = all(available.get(t, False) for t in targets)

    def _set_stale(self, stale: bool) -> bool:
        if stale == self.stale:
            return False
        self.stale = stale
        policy_active = stale and self.policy != "keep"
        self.default_available = policy_active and self.policy == "assume_available"
        self.default_feature = not (policy_active and self.policy == "assume_unavailable")
        for name, state in list(self.states.items()):
            updated = dataclasses.replace(state, stale=stale)
            self.states[name] = updated
            self.available[name] = self._answer(updated)
        for feature in list(self.providers):
            self._update_feature(feature)
        return True
