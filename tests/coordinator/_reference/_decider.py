"""The reference decider: the decision core as first written, plain and slow, kept as an oracle.

This is the core before any performance work (a TargetConfig and three streaks per
vantage point, a deque of verdicts for flap detection, reasons built on every
evaluation), plus the behaviour changes made since that affect results, ticks and
operator commands: a reset of a half-open breaker announces attempt 0; evidence older
than stale_after is not evidence (a point back from a silence forgets what it said, a
verdict or failed trial lapses once the results agreeing with it are older); a reason
names only the error kinds results carried; going half-open is no flap verdict.
``test_core_reference.py`` feeds it and the real core the same random inputs and
requires byte-identical events. It knows nothing of restore fixes or refreshes, so the
property test uses neither. A change of the rules changes this file too, on purpose:
say the new rule here in the plainest way, then make the fast core agree.

The rules themselves are stated in docs/coordinator.md and in the real core's docstring.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final, Literal, NamedTuple, TypeAlias

from healthbus.coordinator import ControlError, Rejected, backoff_delay  # the same errors as the real core
from healthbus.protocol import (
    BreakerState,
    ErrorKind,
    Evidence,
    Outcome,
    ProbeResult,
    Quorum,
    State,
    StateChanged,
    TargetConfig,
)

from ._flap import FlapDetector

#: Vantage points remembered per target; the stalest is forgotten beyond this, so a flood
#: of spoofed probe ids cannot grow memory.
MAX_VANTAGE_POINTS: Final = 64
#: A vantage point not heard from for this many ``stale_after`` is forgotten.
FORGET_AFTER_STALE: Final = 10.0

DropReason: TypeAlias = Literal["unknown_target", "stale_timestamp", "out_of_order", "too_many_probes"]
Verdict: TypeAlias = Literal["pass", "warn", "fail"]
ControlAction: TypeAlias = Literal["force-open", "disable", "reset", "status"]


class Now(NamedTuple):
    """The current time, injected: ``mono`` (monotonic seconds) and ``wall`` (tz-aware)."""

    mono: float
    wall: datetime

    def wall_at(self, mono: float) -> datetime:
        """The wall-clock time of monotonic instant ``mono``."""
        return self.wall + timedelta(seconds=mono - self.mono)


def quorum_need(quorum: Quorum, live: int) -> int:
    """How many of ``live`` (>= 1) vantage points failing make the target down."""
    if quorum == "majority":
        return live // 2 + 1
    if quorum == "any":
        return 1
    if quorum == "all":
        return live
    return max(1, min(int(quorum), live))


class _Vantage:
    """What one vantage point said about one target lately."""

    __slots__ = (
        "agreed_at",
        "error_kind",
        "failed_at",
        "fails",
        "heard",
        "observed_at",
        "oks",
        "outcome",
        "passes",
        "probe",
        "trial",
        "trial_oks",
        "verdict",
        "warns",
    )

    def __init__(self, probe: str) -> None:
        self.probe = probe
        self.outcome: Outcome = "pass"
        self.error_kind: ErrorKind | None = None
        self.observed_at: datetime | None = None
        self.heard = 0.0
        self.agreed_at = 0.0  # when a result agreeing with the verdict was last received
        self.failed_at = 0.0  # when a fail was last received
        self.fails = 0
        self.passes = 0
        self.warns = 0
        self.oks = 0
        self.verdict: Verdict | None = None
        self.trial: Literal["ok", "fail"] | None = None
        self.trial_oks = 0

    def forget(self) -> None:
        """Back after a silence: nothing said before counts any more."""
        self.outcome = "pass"
        self.fails = self.passes = self.warns = self.oks = self.trial_oks = 0
        self.verdict = None
        self.trial = None

    def verdict_at(self, mono: float, stale: float) -> Verdict | None:
        """The verdict, or None when no result agreeing with it came within ``stale``."""
        return self.verdict if mono - self.agreed_at < stale else None

    def trial_failed_at(self, mono: float, stale: float) -> bool:
        """A failed trial whose fail came within ``stale``."""
        return self.trial == "fail" and mono - self.failed_at < stale

    def record(self, outcome: Outcome, failure_threshold: int, success_threshold: int) -> None:
        """Update the streaks and the hysteresis verdict with one result."""
        self.outcome = outcome
        if outcome == "fail":
            self.fails += 1
            self.oks = self.passes = self.warns = 0
            if self.fails >= failure_threshold:
                self.verdict = "fail"
            return
        self.fails = 0
        self.oks += 1
        if outcome == "pass":
            self.passes += 1
            self.warns = 0
        else:
            self.warns += 1
            self.passes = 0
        if self.passes >= success_threshold:
            self.verdict = "pass"
        elif self.warns >= success_threshold or (self.oks >= success_threshold and self.verdict in (None, "fail")):
            self.verdict = "warn"

    def record_trial(self, outcome: Outcome, success_threshold: int) -> None:
        """Update the half-open trial mark with one result received while half-open."""
        if outcome == "fail":
            self.trial = "fail"
            self.trial_oks = 0
        else:
            self.trial_oks += 1
            if self.trial_oks >= success_threshold:
                self.trial = "ok"


class _Target:
    """The decision state of one target (mutable; owned by the Decider)."""

    __slots__ = (
        "attempt",
        "breaker",
        "expect_since",
        "failure_threshold",
        "features",
        "flap",
        "flapping",
        "half_open_since",
        "last",
        "name",
        "override_reason",
        "prev_delay",
        "quorum",
        "raw",
        "retry_at",
        "scheduled",
        "seq",
        "settings",
        "stale_after",
        "state",
        "success_threshold",
        "vps",
    )

    def __init__(self, cfg: TargetConfig, now_mono: float) -> None:
        self.name = cfg.name
        self.settings = cfg
        self.failure_threshold = cfg.failure_threshold
        self.success_threshold = cfg.success_threshold
        self.quorum: Quorum = cfg.quorum
        self.stale_after = cfg.effective_stale_after
        self.features = list(cfg.features)
        self.flap: FlapDetector | None = FlapDetector(cfg.flap) if cfg.flap.enabled else None
        self.seq = 0
        self.state: State = "unknown"  # as last announced
        self.raw: State = "unknown"  # as the rules give it, before the flapping hold
        self.breaker: BreakerState = "closed"
        self.flapping = False  # as last announced
        self.attempt = 0
        self.retry_at: float | None = None
        self.prev_delay: float | None = None
        self.half_open_since = now_mono
        self.expect_since = now_mono
        self.override_reason = ""
        self.vps: dict[str, _Vantage] = {}
        self.last: StateChanged | None = None
        self.scheduled: float | None = None


class _Counts(NamedTuple):
    live: int
    failing: int
    warn: int
    passing: int
    trial_fail: int
    trial_ok: int
    failures: int


class Decider:
    """Per-target breaker, quorum, hysteresis, staleness and flap state of a whole fleet.

    Every method takes ``now`` and returns the events to publish, oldest first. The
    Decider never reads a clock and draws jitter only from ``rng``.
    """

    def __init__(
        self,
        targets: Iterable[TargetConfig],
        *,
        rng: random.Random,
        now: Now,
        max_vantage_points: int = MAX_VANTAGE_POINTS,
    ) -> None:
        self._rng = rng
        self._max_vps = max(1, max_vantage_points)
        self._targets: dict[str, _Target] = {}
        self._heap: list[tuple[float, str]] = []
        for cfg in targets:
            t = _Target(cfg, now.mono)
            self._targets[cfg.name] = t
            self._schedule(t, self._deadline(t, now.mono))

    # ------------------------------------------------------------------ queries

    def __contains__(self, target: object) -> bool:
        return target in self._targets

    @property
    def targets(self) -> list[str]:
        """Every configured target's name."""
        return list(self._targets)

    def current(self, target: str) -> StateChanged | None:
        """The last event announced (or restored) for ``target``; KeyError if unknown."""
        return self._targets[target].last

    def state(self, target: str) -> tuple[State, BreakerState, int]:
        """``(state, breaker, seq)`` of ``target`` as last announced."""
        t = self._targets[target]
        return t.state, t.breaker, t.seq

    def vantage_points(self, target: str) -> int:
        """How many vantage points are remembered for ``target`` (bounded)."""
        return len(self._targets[target].vps)

    def next_deadline(self) -> float | None:
        """The earliest monotonic time at which :meth:`tick` may have work (or None)."""
        return self._heap[0][0] if self._heap else None

    # ------------------------------------------------------------------ inputs

    def restore(self, event: StateChanged, now: Now) -> bool:
        """Seed a target from the last event published for it; emits nothing.

        The next event gets ``event.seq + 1`` and ``previous == event.state``. Returns
        False (and changes nothing) for a target not configured, or an event not newer
        than what is already known.
        """
        t = self._targets.get(event.target)
        if t is None or event.seq <= t.seq:
            return False
        t.seq = event.seq
        t.state = t.raw = event.state
        t.breaker = event.breaker
        t.attempt = event.attempt
        t.flapping = event.flapping
        if t.flap is not None:
            t.flap.clear()
            t.flap.flapping = event.flapping
        t.retry_at = None
        t.prev_delay = None
        if event.retry_at is not None and event.breaker == "open":
            t.retry_at = now.mono + (event.retry_at - now.wall).total_seconds()
            t.prev_delay = max(0.0, (event.retry_at - event.at).total_seconds())
        elif event.breaker == "open":  # an open breaker must have a time to retry
            t.retry_at = now.mono
        t.half_open_since = t.expect_since = now.mono
        t.override_reason = event.reason if event.breaker in ("forced_open", "disabled") else ""
        t.last = event
        self._schedule(t, self._deadline(t, now.mono))
        return True

    def on_result(self, result: ProbeResult, now: Now) -> list[StateChanged]:
        """Take one ProbeResult; raises :class:`Rejected` (changing nothing) to drop it."""
        t = self._targets.get(result.target)
        if t is None:
            raise Rejected("unknown_target", f"no target {result.target!r} in the configuration")
        stale = t.stale_after
        skew = (result.observed_at - now.wall).total_seconds()
        if skew > stale or -skew > stale:
            when = "in the future" if skew > 0 else "old"
            raise Rejected("stale_timestamp", f"observed_at is {abs(skew):.1f}s {when} (stale_after {stale:g}s)")
        vp = t.vps.get(result.probe)
        if vp is None:
            vp = self._add_vantage(t, result.probe, now.mono)
            was_live = False
        else:
            was_live = now.mono - vp.heard < stale
            # A replayed or reordered result must not undo a newer one; once the point
            # went silent, a restarted worker whose clock stepped back starts afresh.
            if was_live and vp.observed_at is not None and result.observed_at < vp.observed_at:
                raise Rejected("out_of_order", f"older than the last result of probe {result.probe!r}")
            if not was_live:
                vp.forget()  # evidence older than stale_after is not evidence
        events: list[StateChanged] = []
        if t.breaker == "open" and t.retry_at is not None and now.mono >= t.retry_at:
            self._half_open(t, now, events)  # the timer is due: this result is a trial
        old_verdict = vp.verdict_at(now.mono, stale)
        vp.verdict = old_verdict  # a lapsed verdict is no verdict
        vp.record(result.outcome, t.failure_threshold, t.success_threshold)
        if vp.verdict == result.outcome or (vp.verdict == "warn" and result.outcome != "fail"):
            vp.agreed_at = now.mono
        if result.outcome == "fail":
            vp.failed_at = now.mono
        vp.error_kind = result.error_kind
        vp.observed_at = result.observed_at
        vp.heard = now.mono
        scheduled = t.scheduled
        if scheduled is None or scheduled > now.mono + stale:
            # This vantage point goes stale then; the pending entry may be later (e.g.
            # the moment long-silent points are forgotten).
            self._schedule(t, now.mono + stale)
        breaker = t.breaker
        if breaker == "closed":
            if was_live and vp.verdict == old_verdict:
                # Fast path: same live set, same verdicts, so the same raw state.
                if t.flap is not None and t.flap.record(t.raw):
                    self._announce_closed(t, now, events)
                return events
            self._evaluate_closed(t, now, events, record=True)
        elif breaker == "half_open":
            vp.record_trial(result.outcome, t.success_threshold)
            self._evaluate_half_open(t, now, events)
        # open (before retry_at), forced_open, disabled: recorded as evidence only.
        return events

    def tick(self, now: Now) -> list[StateChanged]:
        """Run the timers due by ``now``: retry_at (→ half-open) and staleness."""
        events: list[StateChanged] = []
        heap = self._heap
        while heap and heap[0][0] <= now.mono:
            when, name = heapq.heappop(heap)
            t = self._targets[name]
            if t.scheduled != when:
                continue  # superseded by an earlier entry
            t.scheduled = None
            self._due(t, now, events)
            nxt = self._deadline(t, now.mono)
            if nxt is not None:
                # Never re-arm for "now" again inside this tick: that could spin.
                self._schedule(t, max(nxt, now.mono + 1e-6))
        return events

    def control(self, action: ControlAction, target: str, reason: str, now: Now) -> list[StateChanged]:
        """Apply an operator command; raises :class:`ControlError` for an unknown target."""
        t = self._targets.get(target)
        if t is None:
            raise ControlError(f"no target {target!r} in the configuration")
        why = reason.strip() or "no reason given"
        events: list[StateChanged] = []
        if action == "status":
            return events
        if action == "force-open":
            if t.breaker != "forced_open":
                t.override_reason = f"forced open by operator: {why}"
                t.attempt, t.retry_at, t.prev_delay = 0, None, None
                self._emit(t, now, events, "unavailable", "forced_open", t.override_reason)
        elif action == "disable":
            if t.breaker != "disabled":
                t.override_reason = f"disabled by operator: {why}"
                t.attempt, t.retry_at, t.prev_delay = 0, None, None
                self._emit(t, now, events, "unknown", "disabled", t.override_reason)
        elif action == "reset":
            attempt_before = t.attempt
            t.override_reason = ""
            t.attempt, t.retry_at, t.prev_delay = 0, None, None
            if t.flap is not None:
                t.flap.clear()
            if t.breaker in ("open", "forced_open", "disabled"):
                # Never straight to closed: the breaker proves itself with a trial. (A
                # disabled target may have been open when it was disabled.)
                self._half_open(t, now, events, why=f"reset by operator: {why}; trial checks allowed now")
            elif t.breaker == "half_open":
                t.half_open_since = now.mono
                for vp in t.vps.values():
                    vp.trial, vp.trial_oks = None, 0
                self._evaluate_half_open(t, now, events)
                if not events and attempt_before:
                    # attempt went back to 0: announce it, or the stream (and a restore
                    # from it) would keep the old attempt.
                    self._emit(t, now, events, t.state, "half_open", f"reset by operator: {why}; trial restarted")
            else:
                t.expect_since = now.mono
                self._evaluate_closed(t, now, events, record=False, why=f"reset by operator: {why}")
        else:
            raise ControlError(f"unknown command {action!r}")
        self._schedule(t, self._deadline(t, now.mono))
        return events

    def restart_grace(self, now: Now) -> None:
        """Results could not arrive until ``now`` (bus outage): silence so far proves nothing.

        Every closed or half-open target gets a fresh ``stale_after`` before it can turn
        unknown for lack of results. Emits nothing.
        """
        for t in self._targets.values():
            t.expect_since = now.mono
            if t.breaker == "half_open":
                t.half_open_since = now.mono
            self._schedule(t, self._deadline(t, now.mono))

    # ------------------------------------------------------------------ internals

    def _add_vantage(self, t: _Target, probe: str, mono: float) -> _Vantage:
        if len(t.vps) >= self._max_vps:
            # Make room only by forgetting a silent vantage point: evicting a live one
            # would let a flood of spoofed probe ids push the real workers out.
            stalest = min(t.vps.values(), key=lambda v: v.heard)
            if mono - stalest.heard < t.stale_after:
                raise Rejected("too_many_probes", f"target {t.name!r} already has {len(t.vps)} live probes")
            del t.vps[stalest.probe]
        vp = _Vantage(probe)
        t.vps[probe] = vp
        return vp

    def _schedule(self, t: _Target, when: float | None) -> None:
        if when is None:
            return
        if t.scheduled is None or when < t.scheduled:
            t.scheduled = when
            heapq.heappush(self._heap, (when, t.name))

    def _deadline(self, t: _Target, mono: float) -> float | None:
        """Earliest time a timer could change ``t`` (never later than the true one).

        Open: ``retry_at``. Closed or half-open: the moment the next live vantage point
        goes stale; with none live, the end of the grace period (unless already
        unknown) or the moment the oldest silent vantage point is forgotten.
        """
        breaker = t.breaker
        if breaker == "open":
            return t.retry_at
        if breaker not in ("closed", "half_open"):
            return None
        stale = t.stale_after
        live_end: float | None = None
        oldest: float | None = None
        for vp in t.vps.values():
            ends = [vp.heard + stale]
            if vp.verdict is not None:
                ends.append(vp.agreed_at + stale)  # the verdict lapses
            if vp.trial == "fail":
                ends.append(vp.failed_at + stale)  # the failed trial lapses
            for end in ends:
                if end > mono and (live_end is None or end < live_end):
                    live_end = end
            if oldest is None or vp.heard < oldest:
                oldest = vp.heard
        if live_end is not None:
            return live_end
        best = None if oldest is None else oldest + stale * FORGET_AFTER_STALE
        if t.state != "unknown":
            since = t.half_open_since if breaker == "half_open" else t.expect_since
            grace_end = since + stale
            best = grace_end if best is None else min(best, grace_end)
        return best

    def _due(self, t: _Target, now: Now, events: list[StateChanged]) -> None:
        forget = now.mono - t.stale_after * FORGET_AFTER_STALE
        for probe in [p for p, vp in t.vps.items() if vp.heard < forget]:
            del t.vps[probe]
        if t.breaker == "open":
            if t.retry_at is not None and now.mono >= t.retry_at:
                self._half_open(t, now, events)
        elif t.breaker == "half_open":
            self._evaluate_half_open(t, now, events)
        elif t.breaker == "closed":
            self._evaluate_closed(t, now, events, record=False)

    def _counts(self, t: _Target, mono: float) -> _Counts:
        stale = t.stale_after
        live = failing = warn = passing = trial_fail = trial_ok = failures = 0
        for vp in t.vps.values():
            if mono - vp.heard >= stale:
                continue
            live += 1
            verdict = vp.verdict_at(mono, stale)
            if verdict == "fail":
                failing += 1
            elif verdict == "warn":
                warn += 1
            elif verdict == "pass":
                passing += 1
            if vp.trial_failed_at(mono, stale):
                trial_fail += 1
            elif vp.trial == "ok":
                trial_ok += 1
            if vp.fails > failures:
                failures = vp.fails
        return _Counts(live, failing, warn, passing, trial_fail, trial_ok, failures)

    def _kinds(self, t: _Target, mono: float, which: Literal["fail", "warn", "trial"]) -> str:
        """ " (kinds; N without error kind; N passing again)" of the counted points, or ""."""
        stale = t.stale_after
        counted = [
            vp
            for vp in t.vps.values()
            if mono - vp.heard < stale
            and (vp.trial_failed_at(mono, stale) if which == "trial" else vp.verdict_at(mono, stale) == which)
        ]
        outcome = "warn" if which == "warn" else "fail"
        now_so = [vp for vp in counted if vp.outcome == outcome]
        kinds = {vp.error_kind for vp in now_so if vp.error_kind is not None}
        without = sum(1 for vp in now_so if vp.error_kind is None)
        again = 0 if which == "warn" else len(counted) - len(now_so)
        parts = [", ".join(sorted(kinds))] if kinds else []
        if kinds and without:
            parts.append(f"{without} without error kind")
        if again:
            parts.append(f"{again} passing again")
        return f" ({'; '.join(parts)})" if parts else ""

    def _evaluate_closed(
        self,
        t: _Target,
        now: Now,
        events: list[StateChanged],
        *,
        record: bool,
        why: str = "",
    ) -> None:
        c = self._counts(t, now.mono)
        prefix = f"{why}; " if why else ""
        if c.live == 0:
            # Within stale_after of the moment results became expected (start, restore,
            # reset, close) silence proves nothing yet; after it, the target is unknown.
            # An operator reset (why) decides afresh: no live data is unknown at once.
            grace = now.mono - t.expect_since < t.stale_after and not why
            self._set_raw(t, now, events, t.raw if grace else "unknown", prefix + self._no_data_reason(t), record)
            return
        q = quorum_need(t.quorum, c.live)
        if c.failing >= q:
            self._open(
                t,
                now,
                events,
                f"{prefix}{c.failing}/{c.live} probes failing{self._kinds(t, now.mono, 'fail')}",
                c.failures,
            )
            return
        reachable = c.passing + c.warn
        if reachable >= c.live - q + 1 or c.failing or c.warn:
            raw: State = "degraded" if (c.failing or c.warn) else "healthy"
        else:
            raw = t.raw  # pending vantage points give no opinion yet
        self._set_raw(t, now, events, raw, prefix + self._closed_reason(t, now, c, raw), record)

    def _closed_reason(self, t: _Target, now: Now, c: _Counts, raw: State) -> str:
        parts: list[str] = []
        if c.failing:
            parts.append(f"{c.failing}/{c.live} probes failing{self._kinds(t, now.mono, 'fail')}")
        if c.warn:
            parts.append(f"{c.warn}/{c.live} probes warn{self._kinds(t, now.mono, 'warn')}")
        if not parts:
            if raw == "unknown":
                return f"waiting for results: {c.live - c.passing}/{c.live} probes have no verdict yet"
            return f"{c.passing}/{c.live} probes passing"
        return "; ".join(parts)

    def _no_data_reason(self, t: _Target) -> str:
        if not t.vps:
            return "no result from any probe yet"
        return f"no result from any probe for {t.stale_after:g}s"

    def _set_raw(
        self,
        t: _Target,
        now: Now,
        events: list[StateChanged],
        raw: State,
        reason: str,
        record: bool,
    ) -> None:
        # A result is always a verdict for flap detection; a timer only when it changes
        # the verdict (ticks would otherwise dilute the history with repeats).
        if t.flap is not None and (record or raw != t.raw):
            t.flap.record(raw)
        t.raw = raw
        self._announce_closed(t, now, events, reason)

    def _announce_closed(self, t: _Target, now: Now, events: list[StateChanged], reason: str | None = None) -> None:
        flapping = t.flap is not None and t.flap.flapping
        shown: State = "degraded" if flapping and t.raw == "healthy" else t.raw
        if shown == t.state and t.breaker == "closed" and flapping == t.flapping:
            return
        if reason is None:
            c = self._counts(t, now.mono)
            reason = self._closed_reason(t, now, c, t.raw) if c.live else self._no_data_reason(t)
        if flapping and t.flap is not None:
            reason = f"flapping ({t.flap.share():.0%} state changes lately), held degraded: {reason}"
        elif t.flapping and not flapping:
            reason = f"stopped flapping: {reason}"
        self._emit(t, now, events, shown, "closed", reason)

    def _open(self, t: _Target, now: Now, events: list[StateChanged], why: str, failures: int) -> None:
        t.attempt += 1
        delay = backoff_delay(t.settings.backoff, t.attempt, self._rng, t.prev_delay)
        t.prev_delay = delay
        t.retry_at = now.mono + delay
        t.raw = "unavailable"
        for vp in t.vps.values():
            vp.trial, vp.trial_oks = None, 0
        if t.flap is not None:
            t.flap.record("unavailable")
        reason = f"{why}; breaker open, trial in {delay:.1f}s (attempt {t.attempt})"
        self._emit(t, now, events, "unavailable", "open", reason, failures=failures)
        self._schedule(t, t.retry_at)

    def _half_open(self, t: _Target, now: Now, events: list[StateChanged], why: str | None = None) -> None:
        t.retry_at = None
        t.half_open_since = now.mono
        t.raw = "recovering"
        for vp in t.vps.values():
            vp.trial, vp.trial_oks = None, 0
        # Going half-open is the breaker's own schedule, not an answer: no flap verdict.
        reason = why or f"retry time reached: trial checks allowed (attempt {t.attempt})"
        self._emit(t, now, events, "recovering", "half_open", reason)
        self._schedule(t, now.mono + t.stale_after)

    def _evaluate_half_open(self, t: _Target, now: Now, events: list[StateChanged]) -> None:
        c = self._counts(t, now.mono)
        if c.live == 0:
            if now.mono - t.half_open_since >= t.stale_after and t.state != "unknown":
                self._emit(t, now, events, "unknown", "half_open", f"trial: {self._no_data_reason(t)}")
            return
        q = quorum_need(t.quorum, c.live)
        if c.trial_fail >= q:
            self._open(
                t,
                now,
                events,
                f"trial failed on {c.trial_fail}/{c.live} probes{self._kinds(t, now.mono, 'trial')}",
                c.failures,
            )
            return
        if c.trial_ok >= c.live - q + 1:
            t.breaker = "closed"
            t.attempt, t.retry_at, t.prev_delay = 0, None, None
            t.expect_since = now.mono
            self._evaluate_closed(
                t, now, events, record=True, why=f"trial passed on {c.trial_ok}/{c.live} probes, breaker closed"
            )
            return
        if t.state == "unknown":
            self._emit(t, now, events, "recovering", "half_open", "trial: probes heard from again")

    def _emit(
        self,
        t: _Target,
        now: Now,
        events: list[StateChanged],
        state: State,
        breaker: BreakerState,
        reason: str,
        *,
        failures: int | None = None,
    ) -> None:
        flapping = t.flap is not None and t.flap.flapping and breaker == "closed"
        if failures is None:
            failures = max((vp.fails for vp in t.vps.values() if now.mono - vp.heard < t.stale_after), default=0)
        t.seq += 1
        event = StateChanged(
            target=t.name,
            seq=t.seq,
            at=now.wall,
            previous=t.state,
            state=state,
            breaker=breaker,
            reason=reason,
            failures=failures,
            attempt=t.attempt,
            retry_at=now.wall_at(t.retry_at) if t.retry_at is not None and breaker == "open" else None,
            features=list(t.features),
            evidence={
                vp.probe: Evidence(outcome=vp.outcome, error_kind=vp.error_kind, at=vp.observed_at)
                for vp in t.vps.values()
                if vp.observed_at is not None
            },
            flapping=flapping,
        )
        t.state = state
        t.breaker = breaker
        t.flapping = flapping
        t.last = event
        events.append(event)
