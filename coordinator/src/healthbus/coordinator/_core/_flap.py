"""Flap detection, as Nagios and Sensu do it.

The detector keeps the last ``window`` verdicts of a target and computes the weighted
share of state changes among them: the oldest change weighs 0.8, the newest 1.2, linearly
in between, and the sum is divided by ``window - 1`` (the most changes there can be), so
a verdict that changes every time scores 1.0.

Invariants:

* flapping starts when the share rises above ``high``;
* flapping ends only when the share falls below ``low`` *and* the window is full of
  verdicts taken since flapping began (so a restart, which starts with an empty
  history, cannot end flapping by forgetting);
* between ``low`` and ``high`` the status does not change (hysteresis).

Representation (memory: one detector per target, so it must be small): only the
*changes* matter, so the window is kept as an int whose bit ``a`` says whether the pair
of verdicts ``a`` steps before the newest differed, plus the newest verdict and how many
verdicts the window holds. That is equivalent to the last ``window`` verdicts for every
question asked here; weights are computed when the share is needed.
"""

from __future__ import annotations

from healthbus.protocol import FlapSettings, State


class FlapDetector:
    """Weighted state-change history of one target."""

    __slots__ = ("_changes", "_count", "_last", "_since_start", "flapping", "settings")

    def __init__(self, settings: FlapSettings, *, flapping: bool = False) -> None:
        self.settings = settings
        self._changes = 0  # bit a: the verdicts a and a+1 steps before the newest differ
        self._count = 0  # verdicts in the window, up to settings.window
        self._last: State | None = None  # the newest verdict
        self._since_start = 0  # verdicts recorded since flapping began
        self.flapping = flapping

    def share(self) -> float:
        """Weighted share of state changes in the window, 0.0 to 1.0."""
        bits = self._changes
        if not bits:
            return 0.0
        window = self.settings.window
        total = 0.0
        # Oldest pair first (the order of the sum is part of the float result). The
        # newest pair weighs 1.2 even while the window is not full yet.
        for a in range(bits.bit_length() - 1, -1, -1):
            if bits >> a & 1:
                total += 0.8 + 0.4 * (window - 2 - a) / (window - 2)
        return total / (window - 1)

    def record(self, state: State) -> bool:
        """Add a verdict; return True when the flapping status changed."""
        settings = self.settings
        window = settings.window
        bits = self._changes
        full = self._count == window
        if full and not bits and not self.flapping and self._last == state:
            return False  # steady: appending the same verdict changes nothing (hot path)
        # Shift in the new pair (none for the first verdict); the oldest pair falls out.
        if self._count:
            bits = (bits << 1 | (self._last != state)) & ((1 << (window - 1)) - 1)
            self._changes = bits
        if not full:
            self._count += 1
        self._last = state
        # Each change weighs 0.8 to 1.2, so changes*0.8/(window-1) <= share <=
        # changes*1.2/(window-1): the exact (costlier) share is needed only in between.
        changes = bits.bit_count()
        span = window - 1
        if self.flapping:
            self._since_start += 1
            if self._since_start >= window and changes * 0.8 / span < settings.low and self.share() < settings.low:
                self.flapping = False
                return True
        elif changes * 1.2 / span > settings.high and self.share() > settings.high:
            self.flapping = True
            self._since_start = 0
            return True
        return False

    def clear(self) -> None:
        """Forget the history and stop flapping (operator reset)."""
        self._changes = 0
        self._count = 0
        self._last = None
        self._since_start = 0
        self.flapping = False
