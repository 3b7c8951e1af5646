"""The reference decider: the decision rules written plainly and slowly, kept as an oracle.

``test_core_reference.py`` feeds it and the real core (``healthbus.coordinator._core``)
the same random inputs and requires byte-identical events. The real core is tuned for
speed (shared settings, one run counter, a bit-mask flap history, a timer heap, a fast
path for results that change no verdict, reasons built only when emitted); this file
states the same rules the obvious way:

* a vantage point keeps three streaks (fail, pass, warn) and the receive time of its
  latest result of each outcome; whether its verdict still counts is asked of those
  times, every time (no cached deadlines);
* every result is evaluated in full (no fast path);
* every tick looks at every target (no timer heap): whatever a timer would do is done at
  the first tick at or after its moment;
* the flap history is a deque of verdicts.

A change of the rules changes this file too, on purpose: say the new rule here in the
plainest way, then make the fast core agree. The rules themselves are stated in
docs/coordinator.md and in the real core's module docstring. Restore and refresh are not
part of it (their own tests are in test_core_refresh.py and test_core_edges.py).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final, Literal, NamedTuple, TypeAlias

from healthbus.coordinator import ControlError, Rejected, backoff_delay  # the same errors as the real core
from healthbus.coordinator._core import PROBATION_MIN_S
from healthbus.protocol import (
    BreakerState,
    ErrorKind,
    Evidence,
    Outcome,
    ProbeResult,
    Quorum,
    Ramp,
    State,
    StateChanged,
    TargetConfig,
    format_timestamp,
)

from ._flap import FlapDetector

#: Vantage points remembered per target; the stalest is forgotten beyond this, so a flood
#: of spoofed probe ids cannot grow memory.
MAX_VANTAGE_POINTS: Final = 64
#: A vantage point not heard from for this many ``stale_after`` is forgotten.
FORGET_AFTER_STALE: Final = 10.0
RETIRED_REASON: Final = "retired: removed from the configuration"
MAINTENANCE_MARK: Final = "maintenance until "

Verdict: TypeAlias = Literal["pass", "warn", "fail"]
ControlAction: TypeAlias = Literal["force-open", "disable", "reset", "status", "maintenance"]


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

    def __init__(self, probe: str) -> None:
        self.probe = probe
        self.outcome: Outcome = "pass"
        self.error_kind: ErrorKind | None = None
        self.observed_at: datetime | None = None
        self.heard = 0.0
        self.start_afresh()

    def start_afresh(self) -> None:
        """No evidence at all: no streaks, no verdict, no trial mark."""
        self.fails = 0
        self.passes = 0
        self.warns = 0
        self.oks = 0  # pass or warn in a row
        self.verdict: Verdict | None = None
        # When the latest result of each outcome was received (None: none since the start).
        self.heard_outcome: dict[Outcome, float | None] = {"pass": None, "warn": None, "fail": None}
        self.trial: Literal["ok", "fail"] | None = None
        self.trial_oks = 0

    def live(self, mono: float, stale: float) -> bool:
        """Heard from within ``stale``: lapsed from the deadline ``heard + stale`` on."""
        return mono < self.heard + stale

    def _young(self, outcomes: tuple[Outcome, ...], mono: float, stale: float) -> bool:
        """A result of one of ``outcomes`` was received within ``stale``."""
        times = [self.heard_outcome[o] for o in outcomes]
        return any(when is not None and mono < when + stale for when in times)

    def current_verdict(self, mono: float, stale: float) -> Verdict | None:
        """The verdict, while the latest result agreeing with it is younger than ``stale``
        (a fail for failing, a pass for passing, a pass or warn for warn)."""
        if self.verdict == "fail" and self._young(("fail",), mono, stale):
            return "fail"
        if self.verdict == "pass" and self._young(("pass",), mono, stale):
            return "pass"
        if self.verdict == "warn" and self._young(("pass", "warn"), mono, stale):
            return "warn"
        return None

    def current_trial(self, mono: float, stale: float) -> Literal["ok", "fail"] | None:
        """The trial mark; a failed trial counts while its latest fail is younger than ``stale``."""
        if self.trial == "fail" and not self._young(("fail",), mono, stale):
            return None
        return self.trial

    def record(self, outcome: Outcome, mono: float, failure_threshold: int, success_threshold: int) -> None:
        """Update the streaks and the hysteresis verdict with one result received at ``mono``."""
        self.outcome = outcome
        self.heard_outcome[outcome] = mono
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

    def __init__(self, cfg: TargetConfig, now_mono: float) -> None:
        self.name = cfg.name
        self.configure(cfg)
        self.flap: FlapDetector | None = FlapDetector(cfg.flap) if cfg.flap.enabled else None
        self.seq = 0
        self.state: State = "unknown"  # as last announced
        self.raw: State = "unknown"  # as the rules give it, before the flapping hold
        self.breaker: BreakerState = "closed"
        self.flapping = False  # as last announced
        self.attempt = 0
        self.retry_at: float | None = None  # open: the trial; forced open: the end of a maintenance window
        self.prev_delay: float | None = None
        self.half_open_since = now_mono
        self.expect_since = now_mono
        self.override_reason = ""
        self.vps: dict[str, _Vantage] = {}  # insertion order: the order of evidence
        self.readmit = 0  # failed re-admissions of this outage
        self.ramp: Ramp | None = None  # the ramp of the last re-admission
        self.ramp_until: float | None = None  # and when it ends (monotonic)

    def configure(self, cfg: TargetConfig) -> None:
        self.settings = cfg
        self.failure_threshold = cfg.failure_threshold
        self.success_threshold = cfg.success_threshold
        self.quorum: Quorum = cfg.quorum
        self.degraded_quorum = cfg.degraded_quorum
        self.stale_after = cfg.effective_stale_after
        self.features = list(cfg.features)

    def live(self, mono: float) -> list[_Vantage]:
        return [vp for vp in self.vps.values() if vp.live(mono, self.stale_after)]


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
        self._targets: dict[str, _Target] = {cfg.name: _Target(cfg, now.mono) for cfg in targets}
        self._retired_seq: dict[str, int] = {}

    # ------------------------------------------------------------------ queries

    def __contains__(self, target: object) -> bool:
        return target in self._targets

    def state(self, target: str) -> tuple[State, BreakerState, int]:
        """``(state, breaker, seq)`` of ``target`` as last announced."""
        t = self._targets[target]
        return t.state, t.breaker, t.seq

    def vantage_points(self, target: str) -> int:
        """How many vantage points are remembered for ``target`` (bounded)."""
        return len(self._targets[target].vps)

    # ------------------------------------------------------------------ inputs

    def reconfigure(self, targets: Iterable[TargetConfig], now: Now) -> list[StateChanged]:
        """A new set of targets: added ones start as new, changed ones take the new settings
        from now on, removed ones that were ever announced get one ``retired`` event."""
        new = {cfg.name: cfg for cfg in targets}
        events: list[StateChanged] = []
        for name in list(self._targets):
            if name not in new:
                gone = self._targets.pop(name)
                if gone.seq:
                    gone.seq += 1
                    events.append(
                        StateChanged(
                            target=name,
                            seq=gone.seq,
                            at=now.wall,
                            previous=gone.state,
                            state="unknown",
                            breaker="closed",
                            reason=RETIRED_REASON,
                            features=list(gone.features),
                            retired=True,
                        )
                    )
                    self._retired_seq[name] = gone.seq
        for name, cfg in new.items():
            t = self._targets.get(name)
            if t is None:
                t = self._targets[name] = _Target(cfg, now.mono)
                t.seq = self._retired_seq.pop(name, 0)  # back after a retirement: its seq goes on
            else:
                if cfg.flap != t.settings.flap:
                    t.flap = FlapDetector(cfg.flap) if cfg.flap.enabled else None
                t.configure(cfg)
        return events

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
        elif vp.live(now.mono, stale):
            # A replayed or reordered result must not undo a newer one.
            if vp.observed_at is not None and result.observed_at < vp.observed_at:
                raise Rejected("out_of_order", f"older than the last result of probe {result.probe!r}")
        else:
            # Silent for stale_after or more: what it said before is no evidence any more.
            vp.start_afresh()
        events: list[StateChanged] = []
        # A verdict whose agreeing results are all older than stale_after has lapsed.
        vp.verdict = vp.current_verdict(now.mono, stale)
        vp.record(result.outcome, now.mono, t.failure_threshold, t.success_threshold)
        vp.error_kind = result.error_kind
        vp.observed_at = result.observed_at
        vp.heard = now.mono
        if t.breaker == "closed":
            self._evaluate_closed(t, now, events, record=True)
        elif t.breaker == "half_open":
            vp.record_trial(result.outcome, t.success_threshold)
            self._evaluate_half_open(t, now, events)
        elif t.breaker == "open" and t.retry_at is not None and now.mono >= t.retry_at:
            # Past retry_at every result is a trial; failed ones leave the breaker open; one
            # reachable result passes it.
            vp.record_trial(result.outcome, 1)
            if vp.trial == "ok":  # a passed trial makes it reachable (passing, or warn)
                vp.verdict = "pass" if result.outcome == "pass" else "warn"
            c = self._counts(t, now.mono)
            if c.live and c.trial_ok >= c.live - quorum_need(t.quorum, c.live) + 1:
                self._close(t, now, events, c)
        # open (before retry_at), forced_open, disabled: recorded as evidence only.
        return events

    def tick(self, now: Now) -> list[StateChanged]:
        """Look at every target: forget long-silent vantage points, then what time decides
        (retry_at → half-open, the end of a maintenance window, staleness)."""
        events: list[StateChanged] = []
        for t in self._targets.values():
            keep = t.stale_after * FORGET_AFTER_STALE
            t.vps = {probe: vp for probe, vp in t.vps.items() if not vp.heard + keep < now.mono}
            if t.breaker == "forced_open":
                if t.retry_at is not None and now.mono >= t.retry_at:
                    # The maintenance window is over: as a reset, a trial.
                    self._clear_overrides(t)
                    self._half_open(t, now, events, why="maintenance ended: trial checks allowed now")
            elif t.breaker == "half_open":
                self._evaluate_half_open(t, now, events)
            elif t.breaker == "closed":
                self._evaluate_closed(t, now, events, record=False)
        return events

    def control(
        self, action: ControlAction, target: str, reason: str, now: Now, *, duration: float | None = None
    ) -> list[StateChanged]:
        """Apply an operator command; raises :class:`ControlError` for an unknown target
        (or a ``maintenance`` without a positive ``duration`` in seconds)."""
        t = self._targets.get(target)
        if t is None:
            raise ControlError(f"no target {target!r} in the configuration")
        # Checked before anything changes: a command that cannot be applied changes nothing.
        if action not in ("force-open", "disable", "reset", "status", "maintenance"):
            raise ControlError(f"unknown command {action!r}")
        if action == "maintenance" and (duration is None or not duration > 0):
            raise ControlError(f"maintenance needs a duration greater than 0 seconds, got {duration!r}")
        why = reason.strip() or "no reason given"
        events: list[StateChanged] = []
        if action == "status":
            return events
        if action != "reset" or t.breaker != "closed":
            t.ramp = t.ramp_until = None  # an override ends a ramp
        if action == "reset":
            t.readmit = 0
        if action == "maintenance":
            if duration is None or not duration > 0:
                raise ControlError(f"maintenance needs a duration greater than 0 seconds, got {duration!r}")
            end = now.wall + timedelta(seconds=duration)
            t.override_reason = f"{MAINTENANCE_MARK}{format_timestamp(end)}: {why}"
            t.attempt, t.prev_delay = 0, None
            t.retry_at = now.mono + duration
            self._emit(t, now, events, "unavailable", "forced_open", t.override_reason)
        elif action == "force-open":
            # Also over a maintenance window: it becomes open-ended.
            if t.breaker != "forced_open" or t.retry_at is not None:
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
            self._clear_overrides(t)
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
        return events

    # ------------------------------------------------------------------ internals

    def _clear_overrides(self, t: _Target) -> None:
        """What a reset clears: the override, the backoff and the flap history."""
        t.override_reason = ""
        t.attempt, t.retry_at, t.prev_delay = 0, None, None
        if t.flap is not None:
            t.flap.clear()

    def _add_vantage(self, t: _Target, probe: str, mono: float) -> _Vantage:
        if len(t.vps) >= self._max_vps:
            # Make room only by forgetting a silent vantage point: evicting a live one
            # would let a flood of spoofed probe ids push the real workers out.
            stalest = min(t.vps.values(), key=lambda v: v.heard)
            if stalest.live(mono, t.stale_after):
                raise Rejected("too_many_probes", f"target {t.name!r} already has {len(t.vps)} live probes")
            del t.vps[stalest.probe]
        vp = _Vantage(probe)
        t.vps[probe] = vp
        return vp

    def _counts(self, t: _Target, mono: float) -> _Counts:
        live = t.live(mono)
        verdicts = [vp.current_verdict(mono, t.stale_after) for vp in live]
        trials = [vp.current_trial(mono, t.stale_after) for vp in live]
        return _Counts(
            live=len(live),
            failing=verdicts.count("fail"),
            warn=verdicts.count("warn"),
            passing=verdicts.count("pass"),
            trial_fail=trials.count("fail"),
            trial_ok=trials.count("ok"),
            failures=max((vp.fails for vp in live), default=0),
        )

    def _kinds(self, counted: list[_Vantage], which: Literal["fail", "warn"]) -> str:
        """`` (...)`` for a reason: the error kinds the counted vantage points' latest
        results carried (only those), how many of them carried none, and (for failing
        points and failed trials) how many now answer again; "" when there is nothing to say."""
        if which == "warn":
            latest = [vp for vp in counted if vp.outcome == "warn"]
            again = 0
        else:
            latest = [vp for vp in counted if vp.outcome == "fail"]
            again = len(counted) - len(latest)
        kinds = sorted({vp.error_kind for vp in latest if vp.error_kind is not None})
        missing = sum(1 for vp in latest if vp.error_kind is None)
        parts = []
        if kinds:
            parts.append(", ".join(kinds))
            if missing:
                parts.append(f"{missing} without error kind")
        if again:
            parts.append(f"{again} passing again")
        return f" ({'; '.join(parts)})" if parts else ""

    def _failing(self, t: _Target, mono: float) -> list[_Vantage]:
        return [vp for vp in t.live(mono) if vp.current_verdict(mono, t.stale_after) == "fail"]

    def _warn(self, t: _Target, mono: float) -> list[_Vantage]:
        return [vp for vp in t.live(mono) if vp.current_verdict(mono, t.stale_after) == "warn"]

    def _trial_failed(self, t: _Target, mono: float) -> list[_Vantage]:
        return [vp for vp in t.live(mono) if vp.current_trial(mono, t.stale_after) == "fail"]

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
            grace = now.mono < t.expect_since + t.stale_after and not why
            self._set_raw(t, now, events, t.raw if grace else "unknown", prefix + self._no_data_reason(t), record)
            return
        q = quorum_need(t.quorum, c.live)
        if c.failing >= q:
            kinds = self._kinds(self._failing(t, now.mono), "fail")
            self._open(t, now, events, f"{prefix}{c.failing}/{c.live} probes failing{kinds}", c.failures)
            return
        # degraded_quorum, capped at the live points (never below 1): that many failing or
        # warn together make the target degraded; fewer are ignored.
        impaired = c.failing + c.warn
        degraded_need = max(1, min(t.degraded_quorum, c.live))
        enough_reachable = c.passing + c.warn >= c.live - q + 1
        raw: State
        if impaired >= degraded_need:
            raw = "degraded"
        elif enough_reachable:
            raw = "healthy"
        elif t.raw == "recovering":
            # The breaker was just closed by a passed trial: the trial was enough reachable
            # points, and there is no closed state to keep.
            raw = "healthy"
        else:
            raw = t.raw  # pending vantage points give no opinion yet
        self._set_raw(t, now, events, raw, prefix + self._closed_reason(t, now, c, raw), record)

    def _closed_reason(self, t: _Target, now: Now, c: _Counts, raw: State) -> str:
        parts: list[str] = []
        if c.failing:
            parts.append(f"{c.failing}/{c.live} probes failing{self._kinds(self._failing(t, now.mono), 'fail')}")
        if c.warn:
            parts.append(f"{c.warn}/{c.live} probes warn{self._kinds(self._warn(t, now.mono), 'warn')}")
        if not parts:
            if raw == "unknown":
                return f"waiting for results: {c.live - c.passing}/{c.live} probes have no verdict yet"
            return f"{c.passing}/{c.live} probes passing"
        reason = "; ".join(parts)
        impaired = c.failing + c.warn
        degraded_need = max(1, min(t.degraded_quorum, c.live))
        if impaired < degraded_need:
            if c.failing and c.warn:
                reason += f"; together {impaired}/{c.live}"
            reason += f", below degraded_quorum {degraded_need}: ignored"
        return reason

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

    def _announce_closed(self, t: _Target, now: Now, events: list[StateChanged], reason: str) -> None:
        flapping = t.flap is not None and t.flap.flapping
        shown: State = "degraded" if flapping and t.raw == "healthy" else t.raw
        if shown == t.state and t.breaker == "closed" and flapping == t.flapping:
            return
        if flapping and t.flap is not None:
            reason = f"flapping ({t.flap.share():.0%} state changes lately), held degraded: {reason}"
        elif t.flapping and not flapping:
            reason = f"stopped flapping: {reason}"
        self._emit(t, now, events, shown, "closed", reason)

    def _in_ramp(self, t: _Target, mono: float) -> bool:
        return t.ramp_until is not None and mono < t.ramp_until

    def _open(self, t: _Target, now: Now, events: list[StateChanged], why: str, failures: int) -> None:
        trial_interval = float(t.settings.trial_interval)
        if self._in_ramp(t, now.mono):  # a failed re-admission: backed off
            t.readmit += 1
            delay = max(trial_interval, backoff_delay(t.settings.backoff, t.readmit, self._rng, t.prev_delay))
            t.prev_delay = delay
        else:  # a fresh outage: trials from trial_interval on
            t.readmit = 0
            t.prev_delay = None
            delay = trial_interval
        t.ramp = t.ramp_until = None
        t.attempt = t.readmit + 1
        t.retry_at = now.mono + delay
        t.raw = "unavailable"
        for vp in t.vps.values():
            vp.trial, vp.trial_oks = None, 0
        if t.flap is not None:
            t.flap.record("unavailable")
        reason = f"{why}; breaker open, trial in {delay:.1f}s (attempt {t.attempt})"
        self._emit(t, now, events, "unavailable", "open", reason, failures=failures)

    def _half_open(self, t: _Target, now: Now, events: list[StateChanged], why: str | None = None) -> None:
        t.retry_at = None
        t.half_open_since = now.mono
        t.raw = "recovering"
        for vp in t.vps.values():
            vp.trial, vp.trial_oks = None, 0
        # No verdict for flap detection: going half-open is the breaker's own schedule,
        # not an answer of the dependency.
        reason = why or f"retry time reached: trial checks allowed (attempt {t.attempt})"
        self._emit(t, now, events, "recovering", "half_open", reason)

    def _evaluate_half_open(self, t: _Target, now: Now, events: list[StateChanged]) -> None:
        c = self._counts(t, now.mono)
        if c.live == 0:
            if now.mono >= t.half_open_since + t.stale_after and t.state != "unknown":
                self._emit(t, now, events, "unknown", "half_open", f"trial: {self._no_data_reason(t)}")
            return
        q = quorum_need(t.quorum, c.live)
        if c.trial_fail >= q:
            kinds = self._kinds(self._trial_failed(t, now.mono), "fail")
            self._open(t, now, events, f"trial failed on {c.trial_fail}/{c.live} probes{kinds}", c.failures)
            return
        if c.trial_ok >= c.live - q + 1:
            self._close(t, now, events, c)
            return
        if t.state == "unknown":
            self._emit(t, now, events, "recovering", "half_open", "trial: probes heard from again")

    def _close(self, t: _Target, now: Now, events: list[StateChanged], c: _Counts) -> None:
        t.breaker = "closed"
        t.raw = "recovering"
        t.attempt, t.retry_at = 0, None
        t.expect_since = now.mono
        ramp = t.settings.ramp
        if ramp.duration > 0 and ramp.start < 1:
            t.ramp = Ramp(
                started_at=now.wall,
                duration_s=float(ramp.duration),
                from_share=ramp.start,
                readmission=t.readmit + 1,
            )
            t.ramp_until = now.mono + max(float(ramp.duration), PROBATION_MIN_S)  # the probation
        else:
            t.ramp = t.ramp_until = None
            t.readmit, t.prev_delay = 0, None
        self._evaluate_closed(
            t, now, events, record=True, why=f"trial passed on {c.trial_ok}/{c.live} probes, breaker closed"
        )

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
            failures = max((vp.fails for vp in t.live(now.mono)), default=0)
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
            retry_at=now.wall_at(t.retry_at) if t.retry_at is not None and breaker in ("open", "forced_open") else None,
            features=list(t.features),
            evidence={
                vp.probe: Evidence(outcome=vp.outcome, error_kind=vp.error_kind, at=vp.observed_at)
                for vp in t.vps.values()
                if vp.observed_at is not None
            },
            flapping=flapping,
            ramp=t.ramp if breaker == "closed" and self._in_ramp(t, now.mono) else None,
        )
        t.state = state
        t.breaker = breaker
        t.flapping = flapping
        events.append(event)
