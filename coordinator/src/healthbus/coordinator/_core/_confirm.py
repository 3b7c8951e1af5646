"""Failure reports to confirmation rounds: pure bookkeeping, time passed in.

The rule: reports never decide a state. A report for a configured target may only start
a *confirmation round* (the probe workers that check the target check it now), and
only one round per target per ``window`` however many reports arrive; the round's
results are decided by the usual quorum and hysteresis rules.

A report is, in this order:

- ``flood``: the same instance reported the same target less than ``flood_gap`` ago
  (clients send at most one per target per second): dropped and counted;
- ``held``: the target must not be checked now (an open breaker before ``retry_at``, or
  disabled): counted, no round, no extra check;
- ``round``: no round for the target within ``window``: start one now;
- ``coalesced``: a round started within ``window`` covers it.

Memory is bounded: at most ``max_pairs`` (target, instance) pairs are remembered for the
flood rule (the oldest are forgotten first) and at most ``max_instances`` distinct
instances per target are counted (the count stops growing there).
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

ReportVerdict: TypeAlias = Literal["round", "coalesced", "held", "flood"]

#: Default confirmation window (seconds): one round per target per window.
CONFIRM_WINDOW: Final = 1.0
#: Reports from one instance for one target closer than this (seconds) are a flood.
FLOOD_GAP: Final = 0.5
MAX_PAIRS: Final = 100_000
MAX_INSTANCES: Final = 10_000


class ConfirmPlanner:
    """Decides what each failure report leads to and counts it (module rules)."""

    def __init__(
        self,
        *,
        window: float = CONFIRM_WINDOW,
        flood_gap: float = FLOOD_GAP,
        max_pairs: int = MAX_PAIRS,
        max_instances: int = MAX_INSTANCES,
    ) -> None:
        if window < 0 or flood_gap < 0:
            raise ValueError("confirmation window and flood gap must be >= 0 seconds")
        self.window = window
        self.flood_gap = flood_gap
        self.max_pairs = max_pairs
        self.max_instances = max_instances
        self._last_pair: dict[tuple[str, str], float] = {}
        self._last_round: dict[str, float] = {}
        self._instances: dict[str, set[str]] = {}
        self.reports: dict[str, int] = {}
        """Reports accepted (not a flood), per target."""
        self.rounds: dict[str, int] = {}
        """Confirmation rounds started, per target."""
        self.outcomes: dict[tuple[str, ReportVerdict], int] = {}
        """Reports per (target, verdict)."""
        self._pending: dict[str, int] = {}

    def on_report(self, target: str, instance: str, mono: float, *, held: bool) -> ReportVerdict:
        """The verdict on one report of a configured ``target`` from ``instance`` at ``mono``."""
        pair = (target, instance)
        last = self._last_pair.get(pair)
        if last is not None and mono - last < self.flood_gap:
            verdict: ReportVerdict = "flood"
        else:
            if last is None and len(self._last_pair) >= self.max_pairs:
                self._last_pair.pop(next(iter(self._last_pair)))
            self._last_pair.pop(pair, None)  # re-insert: the dict stays oldest-first
            self._last_pair[pair] = mono
            self.reports[target] = self.reports.get(target, 0) + 1
            self._pending[target] = self._pending.get(target, 0) + 1
            seen = self._instances.setdefault(target, set())
            if len(seen) < self.max_instances:
                seen.add(instance)
            started = self._last_round.get(target)
            if held:
                verdict = "held"
            elif started is not None and mono - started < self.window:
                verdict = "coalesced"
            else:
                verdict = "round"
                self._last_round[target] = mono
                self.rounds[target] = self.rounds.get(target, 0) + 1
        key = (target, verdict)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        return verdict

    def take_pending(self, target: str) -> int:
        """Reports of ``target`` since the last round (for the round's request); resets them."""
        return self._pending.pop(target, 0)

    def instances(self, target: str) -> int:
        """Distinct instances that reported ``target`` (at most ``max_instances``)."""
        return len(self._instances.get(target, ()))

    def round_number(self, target: str) -> int:
        """How many rounds ``target`` has had (the last round's number)."""
        return self.rounds.get(target, 0)

    def forget(self, target: str) -> None:
        """``target`` left the configuration: drop what is known about it."""
        self._last_round.pop(target, None)
        self._instances.pop(target, None)
        self._pending.pop(target, None)
        self.reports.pop(target, None)
        self.rounds.pop(target, None)
        for key in [k for k in self.outcomes if k[0] == target]:
            del self.outcomes[key]
        for pair in [p for p in self._last_pair if p[0] == target]:
            del self._last_pair[pair]
