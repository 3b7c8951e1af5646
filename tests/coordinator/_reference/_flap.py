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
"""

from __future__ import annotations

from collections import deque

from healthbus.protocol import FlapSettings, State


class FlapDetector:
    """Weighted state-change history of one target."""

    __slots__ = ("_changes", "_history", "_since_start", "flapping", "settings")

    def __init__(self, settings: FlapSettings, *, flapping: bool = False) -> None:
        self.settings = settings
        self._history: deque[State] = deque(maxlen=settings.window)
        self._changes = 0  # number of adjacent pairs in _history that differ
        self._since_start = 0  # verdicts recorded since flapping began
        self.flapping = flapping

    def share(self) -> float:
        """Weighted share of state changes in the window, 0.0 to 1.0."""
        if self._changes == 0:
            return 0.0
        window = self.settings.window
        hist = self._history
        total = 0.0
        # Align the newest pair with weight 1.2 even while the window is not full yet.
        offset = window - len(hist)
        for i in range(1, len(hist)):
            if hist[i] != hist[i - 1]:
                x = i - 1 + offset
                total += 0.8 + 0.4 * x / (window - 2)
        return total / (window - 1)

    def record(self, state: State) -> bool:
        """Add a verdict; return True when the flapping status changed."""
        hist = self._history
        full = len(hist) == hist.maxlen
        if full and not self._changes and not self.flapping and hist[-1] == state:
            return False  # steady: appending the same verdict changes nothing (hot path)
        if full and len(hist) > 1 and hist[0] != hist[1]:
            self._changes -= 1
        if hist and hist[-1] != state:
            self._changes += 1
        hist.append(state)
        # Each change weighs 0.8 to 1.2, so changes*0.8/(window-1) <= share <=
        # changes*1.2/(window-1): the exact (costlier) share is needed only in between.
        span = self.settings.window - 1
        if self.flapping:
            self._since_start += 1
            if (
                self._since_start >= self.settings.window
                and self._changes * 0.8 / span < self.settings.low
                and self.share() < self.settings.low
            ):
                self.flapping = False
                return True
        elif self._changes * 1.2 / span > self.settings.high and self.share() > self.settings.high:
            self.flapping = True
            self._since_start = 0
            return True
        return False

    def clear(self) -> None:
        """Forget the history and stop flapping (operator reset)."""
        self._history.clear()
        self._changes = 0
        self._since_start = 0
        self.flapping = False
