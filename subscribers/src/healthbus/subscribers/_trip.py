"""The local fast-trip shared by the adapters: act on a failure seen here before the bus knows.

When a call fails locally with a connection-level error, the adapter stops using the
dependency for ``cooldown`` seconds, or until the bus publishes a *newer* verdict that
says it is available (a verdict with a higher seq than the one known at the trip), so
one process does not keep hitting a dead dependency while the coordinator is deciding.

Each trip also sends a failure report through the health client (if it takes reports:
``report_failure``), so the coordinator has the probe workers check the dependency now
instead of at their next scheduled check. Reporting never fails or blocks the call.
"""

from __future__ import annotations

from healthbus.protocol.clock import Clock
from healthbus.subscribers._report import report_quietly
from healthbus.subscribers._view import HealthView, clock_of


class LocalTrip:
    """A per-adapter cool-down after a local connection failure (see the module docstring)."""

    __slots__ = ("_clock", "_health", "_seq", "_until", "cooldown", "target", "trips")

    def __init__(self, health: HealthView, target: str, cooldown: float, clock: Clock | None = None) -> None:
        if cooldown < 0:
            raise ValueError(f"invalid local cool-down {cooldown!r}: expected seconds >= 0")
        self._health = health
        self.target = target
        self.cooldown = cooldown
        self._clock = clock_of(health, clock, "LocalTrip(clock=...)")
        self._until = 0.0
        self._seq = 0
        self.trips = 0

    def usable(self) -> bool:
        """True when the bus says available and no local trip is in force."""
        if not self._health.is_available(self.target):
            return False
        if self._until:
            state = self._health.state(self.target)
            newer_verdict = state is not None and state.seq > self._seq
            if self._clock.monotonic() < self._until and not newer_verdict:
                return False
            self._until = 0.0
        return True

    @property
    def active(self) -> bool:
        """True while a local trip is in force (whatever the bus says)."""
        return bool(self._until) and self._clock.monotonic() < self._until

    def trip(self, kind: str = "other", error: BaseException | str | None = None, *, report: bool = True) -> None:
        """A connection-level failure (of ``kind``) just happened here: report it (unless ``report`` is False:
        a local limit such as a full pool), stay away for the cool-down."""
        if report:
            report_quietly(self._health, self.target, kind, error)
        if self.cooldown <= 0:
            return
        self.trips += 1
        state = self._health.state(self.target)
        self._seq = state.seq if state is not None else 0
        self._until = self._clock.monotonic() + self.cooldown
