"""When each target is checked: pure logic, no I/O, time and randomness injected.

Rules (docs/probes.md says them for users):

* The first check of a target falls at a random point within its first ``interval``, so
  targets started together do not line up.
* After a check that started at ``t``, the next one is due at ``t + interval`` (or
  ``t + retry_interval`` after a ``fail``, to confirm a real outage quickly), each
  stretched by a random factor in ``[1 - jitter, 1 + jitter]``, and never before the
  check finished (checks of one target never overlap).
* While the coordinator's breaker for the target is open with ``retry_at`` in the future
  (a *hold*), the target is not checked; each check the cadence would have run is
  reported as a skip. As soon as the hold ends the target is checked at once (the
  half-open trial), whatever the cadence says.
* While the coordinator's breaker is open or half-open and no hold is in force (the
  target is being *trialled*), the next check is due ``trial_interval`` after the last
  one began, whatever its outcome: P workers cost P checks per ``trial_interval``, and a
  dependency that is back is seen within one ``trial_interval`` (and re-admitted after
  ``success_threshold`` of them), instead of after a full ``interval``.
* A hold lifted early (operator reset) makes the target due at once.
* A confirmation request (the coordinator, after failure reports from services) makes the
  target due at once, outside the cadence, unless a hold is in force: a hold is never cut
  short by a request (the breaker's backoff decides when the next check is, not the
  number of reports). A request that arrives while a check runs makes another check due
  as soon as that one ends. After the check the cadence goes on as usual (the next one
  ``retry_interval`` later if it failed).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Final, Literal

from healthbus.protocol import HOLDING_BREAKERS, Outcome, StateChanged

Action = Literal["check", "skip", "wait"]

#: Largest jitter fraction honoured: beyond it a "5s" interval could become 0s.
MAX_JITTER: Final = 0.5

#: Breaker states during which the worker trials the target every ``trial_interval``.
TRIAL_BREAKERS: Final = frozenset({"open", "half_open"})


class TargetSchedule:
    """The check cadence of one target (see the module rules)."""

    def __init__(
        self,
        *,
        interval: float,
        retry_interval: float,
        jitter: float,
        rng: random.Random,
        now: float,
        trial_interval: float | None = None,
    ) -> None:
        """``trial_interval``: the cadence while trialling (default: ``retry_interval``)."""
        trial = retry_interval if trial_interval is None else trial_interval
        if interval <= 0 or retry_interval <= 0 or trial <= 0:
            raise ValueError("interval, retry_interval and trial_interval must be greater than 0")
        self.interval = interval
        self.retry_interval = retry_interval
        self.trial_interval = trial
        self.trialling = False
        """The coordinator's breaker is open or half-open: check every ``trial_interval``."""
        self.jitter = min(max(jitter, 0.0), MAX_JITTER)
        self._rng = rng
        self.next_check = now + rng.uniform(0.0, interval)
        self.hold_until: float | None = None
        self.last_outcome: Outcome | None = None
        self.confirming = False
        """A confirmation request is waiting for its check."""

    def _stretch(self, period: float) -> float:
        return period * (1.0 + self._rng.uniform(-self.jitter, self.jitter))

    def poll(self, now: float) -> Action:
        """What to do at ``now``: ``check``, ``skip`` (held; counts one skipped check) or ``wait``."""
        if self.hold_until is not None:
            if now < self.hold_until:
                if now >= self.next_check:
                    # The cadence wanted a check: skip it and move the cadence on.
                    self.next_check += self._stretch(self.interval)
                    if self.next_check <= now:  # far behind (a long hold): restart the cadence from now
                        self.next_check = now + self._stretch(self.interval)
                    return "skip"
                return "wait"
            self.hold_until = None
            return "check"  # the trial: at once when the hold ends
        return "check" if now >= self.next_check else "wait"

    def wake_at(self) -> float:
        """When :meth:`poll` may next say something other than ``wait``."""
        if self.hold_until is not None:
            return min(self.next_check, self.hold_until)
        return self.next_check

    def record(self, outcome: Outcome, started: float, finished: float) -> None:
        """A check that began at ``started`` and ended at ``finished`` gave ``outcome``."""
        self.last_outcome = outcome
        if self.trialling:
            # Not stretched by jitter: the cadence is the bound on trial checks per second.
            period = self.trial_interval
            self.next_check = max(started + period, finished)
        else:
            period = self.retry_interval if outcome == "fail" else self.interval
            self.next_check = max(started + self._stretch(period), finished)
        if self.confirming:  # requested while this check ran: check again at once
            self.next_check = finished

    def confirm(self, now: float) -> bool:
        """A confirmation request at ``now``: due at once (True), or held (False: ignored)."""
        if self.hold_until is not None and now < self.hold_until:
            return False
        self.confirming = True
        self.next_check = min(self.next_check, now)
        return True

    def take_confirm(self) -> bool:
        """Whether the check starting now answers a confirmation request (and clear it)."""
        confirming, self.confirming = self.confirming, False
        return confirming

    def trial(self, trialling: bool, now: float) -> None:
        """Whether the target is being trialled (breaker open or half-open) from ``now`` on;
        starting makes the next check due within ``trial_interval``."""
        if trialling and not self.trialling:
            self.next_check = min(self.next_check, now + self.trial_interval)
        self.trialling = trialling

    def hold(self, until: float | None, now: float) -> None:
        """Hold off until ``until`` (None: no hold). Lifting a hold early makes the target due."""
        if until is not None and until > now:
            self.hold_until = until
            return
        if self.hold_until is not None:
            self.hold_until = None
            self.next_check = min(self.next_check, now)


def hold_until(event: StateChanged, *, wall_now: datetime, mono_now: float) -> float | None:
    """The monotonic time until which ``event`` says not to check, or None.

    A breaker ``open`` (or ``forced_open``) with ``retry_at`` in the future holds until
    ``retry_at``; anything else holds nothing. Wall time is converted once, here.
    """
    if event.breaker not in HOLDING_BREAKERS or event.retry_at is None:
        return None
    remaining = (event.retry_at - wall_now) / timedelta(seconds=1)
    if remaining <= 0:
        return None
    return mono_now + remaining
