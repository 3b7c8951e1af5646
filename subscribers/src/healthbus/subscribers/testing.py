"""Test mode: an in-memory stand-in for HealthClient, driven by your unit tests.

::

    from healthbus.subscribers.testing import FakeHealthClient

    health = FakeHealthClient({"redis-main": "healthy"})
    cache = HealthyRedis(redis, health, target="redis-main")
    health.set_state("redis-main", "unavailable")   # callbacks run, is_available() is False
    ...
    health.set_state("redis-main", "healthy")

:func:`state_changed` builds a StateChanged as the coordinator would emit it, for tests
that feed events in themselves (``health.deliver(...)``, or a test state stream).

It has the same public surface as :class:`~healthbus.subscribers.HealthClient` (state,
is_available, feature_available, on_change, on_bus_change, changes, wait_for, drain, bus)
and answers with the same rules, because both keep their knowledge in the same table.
No NATS is involved. ``set_state`` builds a proper StateChanged (next seq, previous state,
a breaker matching the state unless given) and delivers it like one from the bus:
the state is updated first, then callbacks run. Async callbacks need a running event
loop; ``await health.drain()`` waits until they have run.

Re-admission ramps follow the real rules too: ``set_state(..., ramp=Ramp(...))`` (or a
delivered event with a ramp) admits this fake's ``instance`` from its own moment in the
ramp, on the fake's manual clock (``health.clock.skip(seconds)`` moves it on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Final

from healthbus.protocol import (
    BreakerState,
    Evidence,
    FailureReport,
    GroupChanged,
    GroupMember,
    GroupPolicy,
    Ramp,
    State,
    StateChanged,
    group_state,
    utcnow,
    validate_target,
)
from healthbus.protocol.testing import ManualClock
from healthbus.subscribers._report import FailureReporter
from healthbus.subscribers._state import BusLossPolicy, StateTable, validate_policy
from healthbus.subscribers._view import HealthViewBase

__all__ = ["FakeHealthClient", "state_changed"]

_BREAKER_FOR: Final[dict[str, BreakerState]] = {
    "unknown": "closed",
    "healthy": "closed",
    "degraded": "closed",
    "unavailable": "open",
    "recovering": "half_open",
}


def state_changed(
    target: str,
    seq: int,
    state: State,
    *,
    at: datetime | None = None,
    previous: State = "unknown",
    breaker: BreakerState | None = None,
    reason: str = "set by test",
    failures: int = 0,
    attempt: int = 0,
    retry_at: datetime | None = None,
    retry_in: float | None = None,
    features: Iterable[str] = (),
    evidence: Mapping[str, Evidence] | None = None,
    flapping: bool = False,
    unchanged_since: datetime | None = None,
    ramp: Ramp | None = None,
) -> StateChanged:
    """A StateChanged as the coordinator would emit it.

    ``at`` defaults to now; ``breaker`` follows ``state`` unless given (open when
    unavailable, half-open when recovering, else closed); ``retry_in`` (seconds after
    ``at``) is a shorthand for ``retry_at``. ``unchanged_since`` makes it a refresh (give
    ``previous=state`` too, as the coordinator does).
    """
    at = at or utcnow()
    if retry_in is not None:
        retry_at = at + timedelta(seconds=retry_in)
    return StateChanged(
        target=target,
        seq=seq,
        at=at,
        previous=previous,
        state=state,
        breaker=breaker or _BREAKER_FOR[state],
        reason=reason,
        failures=failures,
        attempt=attempt,
        retry_at=retry_at,
        features=list(features),
        evidence=dict(evidence or {}),
        flapping=flapping,
        unchanged_since=unchanged_since,
        ramp=ramp,
    )


class FakeHealthClient(HealthViewBase):
    """A HealthClient stand-in for tests: ``set_state("redis-main", "unavailable")``.

    ``states`` gives initial states (no callbacks are called for them); ``features``
    maps a target to the features it provides (used by ``set_state`` unless given there).
    ``on_bus_loss`` is the policy :meth:`set_bus_lost` applies.
    """

    def __init__(
        self,
        states: Mapping[str, State] | None = None,
        *,
        features: Mapping[str, Iterable[str]] | None = None,
        on_bus_loss: BusLossPolicy = "keep",
        instance: str = "fake",
    ) -> None:
        """``instance``: the id this fake reports under and places itself in ramps by."""
        self._manual_clock = ManualClock()
        table = StateTable(stale_after=0.0, policy=validate_policy(on_bus_loss), instance=instance)
        super().__init__(table, self._manual_clock)
        self._features: dict[str, list[str]] = {k: list(v) for k, v in (features or {}).items()}
        self.events: list[StateChanged] = []
        """Every StateChanged this fake has produced, in order."""
        self.reporter = FailureReporter("fake", instance=instance, clock=self._manual_clock)
        """HealthClient's rules: one report per target per second (``reporter.interval = 0`` records all)."""
        self.reports: list[FailureReport] = []
        """Every failure report this fake would have sent, in order (nothing goes anywhere)."""
        for target, state in (states or {}).items():
            self.set_state(target, state)  # nobody listens yet: no callback runs

    @property
    def clock(self) -> ManualClock:
        """The fake's clock: ``skip(seconds)`` moves it on (a ramp's moments come with it)."""
        return self._manual_clock

    def report_failure(self, target: str, kind: str = "other", error: BaseException | str | None = None) -> bool:
        """Record a failure report as :meth:`HealthClient.report_failure` would send it (same rules)."""
        report = self.reporter.build(target, kind, error)
        if report is None:
            return False
        self.reports.append(report)
        return True

    def set_state(
        self,
        target: str,
        state: State,
        *,
        breaker: BreakerState | None = None,
        retry_at: datetime | None = None,
        features: Iterable[str] | None = None,
        reason: str = "set by test",
        failures: int | None = None,
        attempt: int = 0,
        flapping: bool = False,
        ramp: Ramp | None = None,
    ) -> StateChanged:
        """Move ``target`` to ``state`` and deliver the StateChanged to everyone listening; returns it.

        ``ramp``: a re-admission ramp in progress (give ``started_at`` on :attr:`clock`'s time).
        """
        old = self._table.states.get(validate_target(target))
        if features is not None:
            self._features[target] = list(features)
        feature_list = self._features.get(target, list(old.features) if old is not None else [])
        if failures is None:
            failures = 0 if state in ("healthy", "degraded") else (old.failures + 1 if old is not None else 1)
        event = state_changed(
            target,
            (old.seq + 1) if old is not None else 1,
            state,
            previous=old.state if old is not None else "unknown",
            breaker=breaker,
            reason=reason,
            failures=failures,
            attempt=attempt,
            retry_at=retry_at,
            features=feature_list,
            flapping=flapping,
            ramp=ramp,
        )
        self.events.append(event)
        self._handle(event)
        return event

    def deliver(self, event: StateChanged) -> bool:
        """Deliver a ready-made StateChanged (as if from the bus); False if ignored by seq."""
        return self._handle(event) is not None

    def set_group(
        self,
        name: str,
        members: Iterable[str],
        *,
        policy: GroupPolicy = "round-robin",
        weights: Mapping[str, int] | None = None,
        latency_ms: Mapping[str, float] | None = None,
        min_healthy: int = 1,
        panic_threshold: float = 0.0,
        primary: str | None = None,
        reads_on_primary: bool = False,
    ) -> GroupChanged:
        """Define (or redefine) group ``name`` as the coordinator would announce it; returns the GroupChanged.

        Which members ``pick()`` uses follows their states here (``set_state``), as in
        HealthClient; ``latency_ms`` is each member's recent latency (``least-latency``).
        """
        names = [validate_target(m) for m in members]
        old = self._groups.groups.get(validate_target(name))
        states = {m: (s.state if (s := self._table.states.get(m)) is not None else "unknown") for m in names}
        listed = [
            GroupMember(
                target=m,
                state=states[m],
                available=states[m] in ("healthy", "degraded"),
                latency_ms=(latency_ms or {}).get(m),
                weight=(weights or {}).get(m, 1),
            )
            for m in names
        ]
        count = sum(1 for m in listed if m.available)
        event = GroupChanged(
            group=name,
            seq=(old.seq + 1) if old is not None else 1,
            at=self._manual_clock.now(),
            previous=old.state if old is not None else "unknown",
            state=group_state(count, min_healthy),
            policy=policy,
            members=listed,
            available=count,
            min_healthy=min_healthy,
            panic_threshold=panic_threshold,
            primary=primary,
            reads_on_primary=reads_on_primary,
            reason="set by test",
        )
        self._handle_group(event)
        return event

    def deliver_group(self, event: GroupChanged) -> bool:
        """Deliver a ready-made GroupChanged (as if from the bus); False if ignored by seq."""
        return self._handle_group(event)

    def set_bus_lost(self, lost: bool = True) -> None:
        """Simulate losing the bus (states go stale at once, the policy applies) or getting it back."""
        table = self._table
        flipped = table.mark_lost(self._manual_clock.monotonic(), immediately=True) if lost else table.mark_restored()
        if flipped:
            self._bus_changed()
