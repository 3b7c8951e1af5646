"""The coordinator's decision core: pure, deterministic, no I/O, no clock, no global random.

A :class:`Decider` holds the state of every configured target. Its methods take the
current time explicitly (:class:`Now`: monotonic seconds for deadlines and liveness, a
wall-clock datetime for what goes on the wire) and return the StateChanged events to
publish, as data. The async service around it only receives, calls, and publishes.

The rules are data in :mod:`._rules`, split by breaker phase: the step each input takes,
the decision table each evaluation applies (first matching row), the timers each phase
runs. This module keeps the evidence, resolves those tables to its handlers once
(:meth:`Decider._drive_tables`) and carries the decisions out (events, reasons, backoff,
ramp). The same rules in words (docs/coordinator.md explains them for users):

* Vantage point (probe id) hysteresis: ``failure_threshold`` consecutive ``fail``
  results make it *failing*; ``success_threshold`` consecutive ``pass`` make it
  *passing*, ``success_threshold`` consecutive ``warn`` (or a mixed pass/warn run leaving
  failing) make it *warn*. Until then it is *pending* (no opinion).
* Evidence older than ``stale_after`` is not evidence: a vantage point heard again after
  a silence of ``stale_after`` or more starts from that result (streaks, verdict and
  trial mark forgotten); a verdict, and a failed trial, count only while the latest
  result agreeing with them is younger than ``stale_after``. So a ``pass`` never opens
  the breaker, and after such a silence only new results decide.
* "Within ``stale_after``" is one expression everywhere, the deadline the timers are
  scheduled at: what was heard (or supported, or begun) at ``x`` counts while ``now < x +
  stale_after`` and has lapsed from ``now >= x + stale_after`` on. (Computed as ``now - x``
  against ``stale_after`` instead, float rounding can disagree with the sum at the
  boundary: a timer run exactly at its deadline would find nothing lapsed yet.)
* Live vantage points: heard from within ``stale_after`` (by the coordinator's clock).
  With ``n`` live, the quorum ``q`` is ``n//2+1`` (majority), 1 (any), ``n`` (all) or
  ``min(k, n)`` (a number): ``q`` failing open the breaker. ``n - q + 1`` reachable
  (passing or warn) are enough to call the target up, since the rest cannot make a
  failing quorum.
* Closed breaker: ``q`` failing → open (``unavailable``). Otherwise, with ``d =
  min(degraded_quorum, n)``: ``d`` or more failing or warn (together) → ``degraded``;
  fewer are ignored: enough reachable → ``healthy`` (the reason still names the ignored
  points, "below degraded_quorum"); otherwise the state is kept (pending points give no
  opinion). ``degraded_quorum`` 1 (the default): any failing or warn point degrades.
* The breaker closing after a passed trial is decided by the same closed-breaker rule; a
  passed trial is itself enough reachable points, so when the verdicts alone would keep
  the state (some lapsed or pending) there is no closed state to keep: ``healthy``.
* No live vantage point for ``stale_after`` while results are expected → ``unknown``.
  Results are expected from start/restore/reset/close on, and from the half-open moment
  on; not while the breaker is open (it announces nothing but its re-admission).
* Open breaker, fresh outage: ``attempt`` 1, ``retry_at = opened_at + trial_interval``.
  Results before ``retry_at`` are evidence only; from ``retry_at`` on every result is a
  trial (the workers check every ``trial_interval``): a vantage point's trial fails on a
  ``fail`` and passes on one reachable result (which makes the point passing or warn).
  ``q`` failed trials change nothing and emit nothing; ``n - q + 1`` passed trials close
  the breaker: a *re-admission*, decided by the closed-breaker rule, with a ramp
  (``ramp.duration`` > 0) announced in the event and in every event while it lasts.
* During the probation (the ramp, and at least ``PROBATION_MIN_S``),
  ``ramp.reopen_reports`` distinct instances' failure reports seen at or after its start
  (:meth:`Decider.on_report`), or a failing quorum, re-open the breaker: a failed
  re-admission, ``attempt = failed + 1`` and ``retry_at = now + max(trial_interval,
  backoff(failed))``. A probation that ends without that ends the outage: a later
  opening is fresh again. Nothing else closes an open breaker.
* Half-open (after an operator reset or a maintenance window's end): trials as before,
  a vantage point's trial passes after ``success_threshold`` reachable results; ``q``
  failed trials open the breaker (fresh), ``n - q + 1`` passed ones close it (with a ramp).
* Operator: ``force-open`` → ``forced_open``/``unavailable`` until reset; ``maintenance``
  for a duration → ``forced_open``/``unavailable`` with ``retry_at`` at the window's end
  (probe workers hold off until then), ending by itself at ``retry_at`` like a reset
  (half-open: a trial), or earlier on reset; ``disable`` →
  ``disabled``/``unknown`` until reset (results are still recorded, not acted on);
  ``reset`` clears overrides, backoff and flap history: an open, forced-open or disabled
  breaker goes half-open at once (a trial, never straight to closed); a closed one is
  decided afresh; a half-open one restarts its trial.
* Flap detection (:mod:`._flap`): the verdict of every evaluation is recorded (not the
  breaker going half-open: its own schedule, not an answer of the dependency); while
  flapping, a target that would be ``healthy`` is held ``degraded``.
* Refresh: the state stream keeps history for a limited age and its last message per
  target *is* the current state, so an unchanged state is re-announced (a timer, no
  traffic needed) once ``refresh_after`` passed since the target's last event: same
  state, breaker, attempt, retry_at, failures and flapping, ``previous == state``,
  the next seq, a fresh ``at``, ``unchanged_since`` (when the state was really decided)
  and the reason of that decision. A restored
  target's last event counts from its ``at``, so an old one is refreshed at the first
  tick after the restore (never by the restore itself).

Reconfiguration (:meth:`Decider.reconfigure`, a live reload): an added target starts as
a new one (unknown, results expected from now); a changed target keeps its state and
takes its new settings from the next result or timer (a changed flap setting starts its
flap history afresh); a removed target that was ever announced gets one last event,
``retired`` (state ``unknown``, breaker ``closed``, the next seq), and is forgotten but
for its seq: configured again (by a reload, or a restart that restores the retired event)
it is a new target whose events continue that seq.

Event invariants: per target, ``seq`` starts at 1 and grows by exactly one per event
(restore seeds it from the last event published); ``previous`` equals the state of the
previous event; an event is emitted only when state, breaker, attempt or the flapping
flag change, or as a refresh (the only events with nothing changed, at least
``refresh_after`` after the event before); an unknown (no live data) target is never
announced healthy. A rejected input raises and leaves every state unchanged.
"""

from __future__ import annotations

import heapq
import math
import random
import sys
from collections.abc import Callable, Iterable, KeysView
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, NamedTuple, TypeAlias, get_args

import msgspec

from healthbus.protocol import (
    BackoffSettings,
    BreakerState,
    ErrorKind,
    Evidence,
    FlapSettings,
    Outcome,
    ProbeResult,
    Quorum,
    Ramp,
    RampSettings,
    State,
    StateChanged,
    TargetConfig,
    format_timestamp,
    refresh_origin,
)
from healthbus.protocol.clock import earliest

from ._backoff import backoff_delay
from ._flap import FlapDetector
from ._rules import DEADLINES, DECISIONS, STEPS, Deadline, Decision, Facts, decide

#: Vantage points remembered per target; the stalest is forgotten beyond this, so a flood
#: of spoofed probe ids cannot grow memory.
MAX_VANTAGE_POINTS: Final = 64
#: A vantage point not heard from for this many ``stale_after`` is forgotten.
FORGET_AFTER_STALE: Final = 10.0

DropReason: TypeAlias = Literal["unknown_target", "stale_timestamp", "out_of_order", "too_many_probes"]
Verdict: TypeAlias = Literal["pass", "warn", "fail"]
ControlAction: TypeAlias = Literal["force-open", "disable", "reset", "status", "maintenance"]
_CONTROL_ACTIONS: Final[frozenset[str]] = frozenset(get_args(ControlAction))
#: Reason of the event announcing a target removed from the configuration.
RETIRED_REASON: Final = "retired: removed from the configuration"
#: Reason prefix of a maintenance window's first event.
MAINTENANCE_MARK: Final = "maintenance until "
#: A re-admission is on probation for its ramp and at least this long (seconds): the
#: fleet's failure reports take a moment to come in, longer than a short ramp lasts.
PROBATION_MIN_S: Final = 2.0


class Now(NamedTuple):
    """The current time, injected: ``mono`` (monotonic seconds) and ``wall`` (tz-aware)."""

    mono: float
    wall: datetime

    def wall_at(self, mono: float) -> datetime:
        """The wall-clock time of monotonic instant ``mono``."""
        return self.wall + timedelta(seconds=mono - self.mono)


def _refresh_origin(event: StateChanged) -> tuple[datetime, str]:
    """When the state of ``event`` was last really decided, and why (looks through refreshes)."""
    return refresh_origin(event) or (event.at, event.reason)


class Rejected(ValueError):
    """An input the core refuses; nothing was changed. ``reason`` is a metrics label."""

    def __init__(self, reason: DropReason, message: str) -> None:
        super().__init__(message)
        self.reason: DropReason = reason


class ControlError(ValueError):
    """An operator command that cannot be applied (unknown target or command)."""


def quorum_need(quorum: Quorum, live: int) -> int:
    """How many of ``live`` (>= 1) vantage points failing make the target down."""
    if quorum == "majority":
        return live // 2 + 1
    if quorum == "any":
        return 1
    if quorum == "all":
        return live
    return max(1, min(int(quorum), live))


def degraded_need(degraded_quorum: int, live: int) -> int:
    """How many of ``live`` (>= 1) vantage points failing or warn make a closed target degraded."""
    return max(1, min(degraded_quorum, live))


def _lapsed_since(mono: float, stale: float) -> float:
    """An instant ``x`` whose evidence has just lapsed at ``mono`` (``mono >= x + stale``):
    ``mono - stale``, or the float below it where rounding would put the sum after ``mono``."""
    since = mono - stale
    while since + stale > mono:
        since = math.nextafter(since, -math.inf)
    return since


class _Vantage(msgspec.Struct, gc=False, eq=False):
    """What one vantage point said about one target lately.

    Memory (several per target): the streaks of ``fail``, ``pass`` and ``warn`` results
    are one ``run`` of the latest ``outcome`` (the other two are 0 by definition). A
    struct not tracked by the garbage collector (it refers to strings, numbers and a
    datetime only: no cycle), compared by identity.
    """

    probe: str
    outcome: Outcome = "pass"
    error_kind: ErrorKind | None = None
    #: When the latest result was observed (its ``observed_at``): POSIX seconds when it
    #: was in UTC (every healthbus worker's), a float of 24 bytes instead of a datetime
    #: of 48 (one per vantage point per target); the datetime itself for another offset,
    #: so the evidence repeats it as sent. See :func:`_stamp`.
    observed_at: float | datetime | None = None
    heard: float = 0.0
    fail_heard: float = 0.0  # when the latest ``fail`` result was received
    support: float = 0.0  # when the latest result agreeing with ``verdict`` was received
    run: int = 0  # consecutive results equal to ``outcome`` (0: none yet)
    oks: int = 0  # consecutive pass or warn results
    verdict: Verdict | None = None
    trial: Literal["ok", "fail"] | None = None
    trial_oks: int = 0

    def restart(self) -> None:
        """Forget the streaks, verdict and trial: heard again after a silence, the vantage
        point starts from what it says now (what it said before is no longer evidence)."""
        self.outcome = "pass"
        self.run = self.oks = self.trial_oks = 0
        self.verdict = self.trial = None

    def record(self, outcome: Outcome, failure_threshold: int, success_threshold: int) -> None:
        """Update the streaks and the hysteresis verdict with one result."""
        run = self.run = self.run + 1 if outcome == self.outcome else 1
        self.outcome = outcome
        if outcome == "fail":
            self.oks = 0
            if run >= failure_threshold:
                self.verdict = "fail"
            return
        self.oks += 1
        if outcome == "pass" and run >= success_threshold:
            self.verdict = "pass"
        elif (outcome == "warn" and run >= success_threshold) or (
            self.oks >= success_threshold and self.verdict in (None, "fail")
        ):
            self.verdict = "warn"

    def counts(self, mono: float, stale: float) -> Verdict | None:
        """The verdict, while a result agreeing with it is younger than ``stale``."""
        return self.verdict if mono < self.support + stale else None

    @property
    def fails(self) -> int:
        """Consecutive ``fail`` results up to the latest."""
        return self.run if self.outcome == "fail" else 0

    def record_trial(self, outcome: Outcome, success_threshold: int) -> None:
        """Update the half-open trial mark with one result received while half-open."""
        if outcome == "fail":
            self.trial = "fail"
            self.trial_oks = 0
        else:
            self.trial_oks += 1
            if self.trial_oks >= success_threshold:
                self.trial = "ok"


def _stamp(at: datetime) -> float | datetime:
    """How a vantage point keeps ``at``: POSIX seconds if in UTC, else ``at`` itself.

    Exact both ways: a float near today's POSIX time resolves 2**-22 s (0.24 µs), so
    :func:`_wall` rounds it back to the same microsecond, and distinct microseconds stay
    distinct and in order."""
    return at.timestamp() if at.tzinfo is UTC else at


def _instant(kept: float | datetime) -> float:
    """POSIX seconds of a kept ``observed_at`` (for comparisons)."""
    return kept if kept.__class__ is float else kept.timestamp()  # type: ignore[union-attr]


def _wall(kept: float | datetime) -> datetime:
    """The datetime of a kept ``observed_at``, as it was received (for the evidence)."""
    return kept if isinstance(kept, datetime) else datetime.fromtimestamp(kept, UTC)


class _Spec:
    """What the rules need of a target's settings (immutable once built).

    Memory: one per distinct set of values, shared by every target with equal settings
    (:func:`_intern_specs`), instead of every target keeping its whole TargetConfig.
    """

    __slots__ = (
        "backoff",
        "degraded_quorum",
        "failure_threshold",
        "features",
        "features_list",
        "flap",
        "quorum",
        "ramp",
        "stale_after",
        "success_threshold",
        "trial_interval",
    )

    def __init__(self, cfg: TargetConfig) -> None:
        self.failure_threshold = cfg.failure_threshold
        self.success_threshold = cfg.success_threshold
        self.quorum: Quorum = cfg.quorum
        self.degraded_quorum = cfg.degraded_quorum
        self.stale_after = cfg.effective_stale_after
        self.backoff: BackoffSettings = cfg.backoff
        self.flap: FlapSettings | None = cfg.flap if cfg.flap.enabled else None
        self.features = tuple(cfg.features)
        # One list shared by every event of every target with this spec (events are
        # frozen and nothing mutates their features): not a new list per event.
        self.features_list: list[str] = list(self.features)
        self.trial_interval = float(cfg.trial_interval)
        self.ramp: RampSettings = cfg.ramp


def _intern_specs(targets: Iterable[TargetConfig]) -> list[tuple[str, _Spec]]:
    """``(name, spec)`` per target; targets whose relevant settings are equal share one spec."""
    specs: dict[tuple[object, ...], _Spec] = {}
    out: list[tuple[str, _Spec]] = []
    for cfg in targets:
        key = (
            cfg.failure_threshold,
            cfg.success_threshold,
            # "1" and 1 differ as quorums; the type keeps them apart in the key
            type(cfg.quorum),
            cfg.quorum,
            cfg.degraded_quorum,
            cfg.effective_stale_after,
            cfg.backoff,
            cfg.flap if cfg.flap.enabled else None,
            tuple(cfg.features),
            float(cfg.trial_interval),
            cfg.ramp,
        )
        spec = specs.get(key)
        if spec is None:
            spec = specs[key] = _Spec(cfg)
        out.append((cfg.name, spec))
    return out


class _Target(msgspec.Struct, gc=False, eq=False):
    """The decision state of one target (mutable; owned by the Decider).

    Memory (one per target): settings live in the shared :class:`_Spec`; vantage points
    are a small tuple (a handful, looked up by a linear scan) rather than a dict. A
    struct not tracked by the garbage collector: nothing it refers to refers back to it.
    Built by :meth:`new`.
    """

    name: str
    spec: _Spec
    flap: FlapDetector | None
    half_open_since: float
    expect_since: float
    announced: float  # monotonic time of the last event (announced or restored)
    seq: int = 0
    state: State = "unknown"  # as last announced
    raw: State = "unknown"  # as the rules give it, before the flapping hold
    resettle: bool = False  # settings changed: the next result or timer decides in full
    breaker: BreakerState = "closed"
    flapping: bool = False  # as last announced
    attempt: int = 0
    retry_at: float | None = None
    prev_delay: float | None = None
    vps: tuple[_Vantage, ...] = ()  # insertion order: the order of evidence
    last: StateChanged | None = None
    scheduled: float | None = None
    changed_at: datetime | None = None  # wall time of the last real change
    changed_reason: str = ""  # and its reason (what a refresh repeats)
    readmit: int = 0  # re-admissions of this outage that failed (the backoff's attempt)
    ramp: Ramp | None = None  # the re-admission ramp announced, while in probation
    ramp_until: float | None = None  # monotonic end of that ramp (its probation)
    ramp_reports: dict[str, str] | None = None  # instance → error kind, reported during it

    @classmethod
    def new(cls, name: str, spec: _Spec, now_mono: float) -> _Target:
        """A target not heard of yet: unknown, results expected from ``now_mono`` on."""
        flap = FlapDetector(spec.flap) if spec.flap is not None else None
        return cls(name, spec, flap, now_mono, now_mono, now_mono)


def _ignored(c: Facts, need: int) -> str:
    """``, below degraded_quorum d: ignored`` when the failing and warn points of ``c``
    are fewer than ``need`` (naming their sum when there are both), else ""."""
    impaired = c.failing + c.warn
    if impaired >= need:
        return ""
    together = f"; together {impaired}/{c.live}" if c.failing and c.warn else ""
    return f"{together}, below degraded_quorum {need}: ignored"


#: The state a closed breaker's decision settles on (``keep``: the one it has).
_SETTLED: Final[dict[Decision, State]] = {"unknown": "unknown", "degraded": "degraded", "healthy": "healthy"}


def _forget_deadline(t: _Target, mono: float) -> float | None:
    """The moment the longest-silent vantage point is forgotten."""
    oldest = min((vp.heard for vp in t.vps), default=None)
    return None if oldest is None else oldest + t.spec.stale_after * FORGET_AFTER_STALE


def _liveness_deadline(t: _Target, mono: float) -> float | None:
    """The moment the next live vantage point goes stale (or its verdict or failed trial
    lapses); with none live, the end of the grace period (unless already unknown)."""
    stale = t.spec.stale_after
    live_end: float | None = None
    for vp in t.vps:
        # It goes stale, its verdict lapses, or its failed trial lapses.
        for end in (
            vp.heard + stale,
            vp.support + stale if vp.verdict is not None else 0.0,
            vp.fail_heard + stale if vp.trial == "fail" else 0.0,
        ):
            if end > mono and (live_end is None or end < live_end):
                live_end = end
    if live_end is not None:
        return live_end
    if t.state != "unknown":
        since = t.half_open_since if t.breaker == "half_open" else t.expect_since
        return since + stale
    return None


def _remembered(t: _Target, last: StateChanged, wall: datetime) -> dict[str, Evidence]:
    """The evidence of ``last`` (``t`` remembering no vantage point: restored, or silent)
    without the points older than the forget horizon (``FORGET_AFTER_STALE`` ×
    ``stale_after``) at ``wall``: a refresh never names a forgotten point."""
    horizon = timedelta(seconds=t.spec.stale_after * FORGET_AFTER_STALE)
    return {probe: e for probe, e in last.evidence.items() if wall - e.at <= horizon}


def _window_end_deadline(t: _Target, mono: float) -> float | None:
    """The end of a maintenance window (``retry_at`` of a forced-open breaker), or None."""
    return t.retry_at


_DEADLINE_OF: Final[dict[Deadline, Callable[[_Target, float], float | None]]] = {
    "forget": _forget_deadline,
    "liveness": _liveness_deadline,
    "window end": _window_end_deadline,
}
_DEADLINES_IN: Final = {phase: tuple(_DEADLINE_OF[kind] for kind in kinds) for phase, kinds in DEADLINES.items()}


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
        refresh_after: float | None = None,
    ) -> None:
        """``refresh_after``: re-announce an unchanged state after this many seconds
        (None: never); the service passes ``[coordinator] refresh_after``."""
        if refresh_after is not None and not refresh_after > 0:
            raise ValueError(f"refresh_after must be greater than 0, got {refresh_after!r}")
        self._rng = rng
        self._max_vps = max(1, max_vantage_points)
        self._refresh_after = refresh_after
        self._retired_seq: dict[str, int] = {}
        self._drive_tables()
        self._build(_intern_specs(targets), now)

    def _drive_tables(self) -> None:
        """Resolve the rules tables (:mod:`._rules`) to this decider's handlers, once: per
        phase, the handler of the step each input takes, and per phase and decision, how
        it is carried out. A step or decision without a handler fails here (KeyError), at
        construction."""
        on_result = {
            "decide": self._result_decide,
            "trial": self._result_trial,
            "readmission trial": self._result_readmission_trial,
            "evidence": self._result_evidence,
        }
        on_timer = {"decide": self._timer_decide, "window end": self._window_end, "nothing": self._timer_nothing}
        on_report = {"ramp report": self._ramp_report, "nothing": None}
        on_control = {
            "force open": self._force_open,
            "open-ended": self._open_ended,
            "maintenance": self._maintenance,
            "disable": self._disable,
            "half-open": self._reset_half_open,
            "restart trial": self._restart_trial,
            "decide afresh": self._decide_afresh,
        }
        self._on_result_in = {phase: on_result[steps["result"]] for phase, steps in STEPS.items()}
        # on_result inlines the fast path of this step for a closed breaker.
        assert STEPS["closed"]["result"] == "decide"
        self._on_timer_in = {phase: on_timer[steps["timer"]] for phase, steps in STEPS.items()}
        self._on_report_in = {phase: on_report[steps["report"]] for phase, steps in STEPS.items()}
        # A command whose step is "nothing" has no handler: control() returns at once.
        self._on_control_in = {
            phase: {a: on_control[steps[a]] for a in get_args(ControlAction) if steps[a] != "nothing"}
            for phase, steps in STEPS.items()
        }
        outcomes = {
            "closed": {
                "keep": self._settle,
                "unknown": self._settle,
                "degraded": self._settle,
                "healthy": self._settle,
                "open": self._open_on_quorum,
            },
            "half_open": {
                "keep": self._keep,
                "unknown": self._trial_silent,
                "open": self._open_on_trial,
                "close": self._close_on_trial,
                "recovering": self._trial_heard_again,
            },
            "open": {"keep": self._keep, "close": self._close_on_trial},
        }
        self._carry_out = {
            (phase, row.then): outcomes[phase][row.then] for phase, rows in DECISIONS.items() for row in rows
        }

    def _build(self, specs: Iterable[tuple[str, _Spec]], now: Now) -> None:
        self._targets: dict[str, _Target] = {}
        self._heap: list[tuple[float, str]] = []
        for name, spec in specs:
            t = _Target.new(name, spec, now.mono)
            self._targets[name] = t
            self._schedule(t, self._deadline(t, now.mono))

    def reconfigure(self, targets: Iterable[TargetConfig], now: Now) -> list[StateChanged]:
        """Apply a new set of targets (a live reload); the ``retired`` events to publish.

        The same target dict is kept (``names`` views stay valid). Settings shared by value
        are re-interned across the whole new set.
        """
        specs = dict(_intern_specs(targets))
        events: list[StateChanged] = []
        for name in [n for n in self._targets if n not in specs]:
            gone = self._targets.pop(name)
            gone.scheduled = None  # its heap entries are skipped from now on
            if gone.seq:
                self._retire(gone, now, events)
                self._retired_seq[name] = gone.seq
        for name, spec in specs.items():
            found = self._targets.get(name)
            if found is None:
                t = self._targets[name] = _Target.new(name, spec, now.mono)
                # Back after a retirement in this run: its seq goes on (the stream de-duplicates by it).
                t.seq = self._retired_seq.pop(name, 0)
                self._schedule(t, self._deadline(t, now.mono))
            elif found.spec is not spec:
                if spec.flap != found.spec.flap:
                    found.flap = FlapDetector(spec.flap) if spec.flap is not None else None
                found.spec = spec
                # The new settings decide from the next result (no fast path) or timer (the next tick).
                found.resettle = True
                self._schedule(found, now.mono)
        return events

    def _retire(self, t: _Target, now: Now, events: list[StateChanged]) -> None:
        t.seq += 1
        events.append(
            StateChanged(
                target=t.name,
                seq=t.seq,
                at=now.wall,
                previous=t.state,
                state="unknown",
                breaker="closed",
                reason=RETIRED_REASON,
                features=t.spec.features_list,
                retired=True,
            )
        )

    # ------------------------------------------------------------------ queries

    def __contains__(self, target: object) -> bool:
        return target in self._targets

    @property
    def names(self) -> KeysView[str]:
        """Every configured target's name, as a live view (``name in names`` is O(1), no copy)."""
        return self._targets.keys()

    def current(self, target: str) -> StateChanged | None:
        """The last event announced (or restored) for ``target``; KeyError if unknown."""
        return self._targets[target].last

    def published(self, event: StateChanged) -> None:
        """``event`` went out as given (stamped with who decided it, under which lease):
        :meth:`current` answers it from now on, while it is the target's last event."""
        t = self._targets.get(event.target)
        if t is not None and t.last is not None and t.last.seq == event.seq:
            t.last = event

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
        if event.retired:
            # Configured again after it was retired: a new target that continues the seq.
            t.seq = event.seq
            t.state = t.raw = "unknown"
            t.announced = now.mono
            self._schedule(t, self._deadline(t, now.mono))
            return True
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
        t.readmit = max(0, event.attempt - 1) if event.breaker == "open" else 0
        t.ramp = t.ramp_until = t.ramp_reports = None
        ramp = event.ramp
        if ramp is not None and event.breaker == "closed":
            # A ramp in progress goes on until it was announced to end (capped at its length).
            probation = max(ramp.duration_s, PROBATION_MIN_S)
            remaining = probation - (now.wall - ramp.started_at).total_seconds()
            if remaining > 0:
                t.ramp, t.ramp_until, t.ramp_reports = ramp, now.mono + min(remaining, probation), {}
                t.readmit = ramp.readmission - 1
        if event.retry_at is not None and event.breaker == "open":
            # Capped at backoff.max: a coordinator whose wall clock is behind the one that
            # decided (a standby on another host) must not hold the breaker open longer
            # than any backoff allows.
            remaining = (event.retry_at - now.wall).total_seconds()
            t.retry_at = now.mono + min(remaining, float(t.spec.backoff.max))
            t.prev_delay = max(0.0, (event.retry_at - event.at).total_seconds())
        elif event.breaker == "open":  # an open breaker must have a time to retry
            t.retry_at = now.mono
        elif event.breaker == "forced_open" and event.retry_at is not None:
            # A maintenance window: it ends when it was announced to (at once if that passed).
            t.retry_at = now.mono + max(0.0, (event.retry_at - now.wall).total_seconds())
        t.half_open_since = t.expect_since = now.mono
        t.changed_at, t.changed_reason = _refresh_origin(event)
        t.last = event
        # Its age by the wall clock (a clock ahead of ours counts as new): an event older
        # than refresh_after is re-announced at the first tick, before retention drops it.
        t.announced = now.mono - max(0.0, (now.wall - event.at).total_seconds())
        if event.state == "degraded" and event.breaker == "closed" and not t.vps:
            self._seed_impaired(t, event, now.mono)
        self._schedule(t, self._deadline(t, now.mono))
        return True

    def align(self, event: StateChanged, now: Now) -> bool:
        """Make ``event`` (the last one stored for its target) what this target announced
        last, whatever this decider announced before, keeping the evidence it gathered
        (vantage points and their streaks); emits nothing. For a standby, whose decider
        built the evidence from the results it heard (see :mod:`._standby`). False for a
        target not configured.

        If that evidence has caught up with ``event``'s (every vantage point it names as
        live has been heard up to the result it names, or later), it may already prove
        more than ``event`` says: results the old leader received after deciding it. The
        target is then decided afresh at the next :meth:`tick` from ``now``, not left to
        the fast path until some verdict changes. Evidence that has not caught up is
        left as it is: the results still to come change verdicts and are decided then
        (deciding now, on less than the old leader had, could announce a state it
        never had). Trial marks are kept only if this decider's breaker was half-open
        too (the same trial); otherwise they are from an earlier trial and are cleared.
        Likewise the moment results became expected (for ``unknown`` on silence) is this
        decider's own if its breaker was closed, as the stored event's, else ``now``.
        """
        t = self._targets.get(event.target)
        if t is None:
            return False
        in_trial = t.breaker == "half_open"
        still_closed = t.breaker == event.breaker == "closed"
        expect_since = t.expect_since
        t.seq = 0
        t.scheduled = None  # this decider's own timers for it are void: restore sets them anew
        if not self.restore(event, now):
            return False
        if not in_trial:
            for vp in t.vps:
                vp.trial, vp.trial_oks = None, 0
        if still_closed:
            # Results have been expected since this decider's closed phase began, as they
            # were by the old leader: a silence before the stored event is one the old
            # leader heard too, not a fresh start's grace. (A half-open trial's wait is
            # counted from the stored event: the replay's trial may have begun earlier.)
            t.expect_since = expect_since
            self._schedule(t, self._deadline(t, now.mono))
        if self._caught_up(t, event):
            t.resettle = True
            self._schedule(t, now.mono)
        return True

    def _caught_up(self, t: _Target, event: StateChanged) -> bool:
        """This decider has heard every vantage point ``event`` names as live up to the
        result ``event`` names for it (or a later one)."""
        stale = t.spec.stale_after
        for probe, evidence in event.evidence.items():
            if (event.at - evidence.at).total_seconds() >= stale:
                continue  # stale when the event was decided: not part of its evidence
            vp = next((v for v in t.vps if v.probe == probe), None)
            if vp is None or vp.observed_at is None or _instant(vp.observed_at) < evidence.at.timestamp():
                return False
        return True

    def _seed_impaired(self, t: _Target, event: StateChanged, mono: float) -> None:
        """Remember the vantage points a restored ``degraded`` event names as fail or warn.

        Without them, the passing points re-prove themselves before the impaired one does
        and a restart announces a spurious ``healthy`` (then ``degraded`` again). The event
        does not say which of them had a confirmed verdict, so each is seeded as *warn*:
        they keep the target degraded (with ``degraded_quorum`` k, when k or more are
        seeded) but can never open the breaker, and success_threshold passes clear them
        as usual. Seeded points are not live until heard again.
        """
        seeded: list[_Vantage] = []
        for probe, evidence in event.evidence.items():
            if evidence.outcome == "pass" or len(seeded) >= self._max_vps:
                continue
            vp = _Vantage(sys.intern(probe))
            vp.outcome = evidence.outcome
            vp.run = 0  # heard by no result of ours yet: the seed is kept when it is heard
            vp.oks = 0 if evidence.outcome == "fail" else 1
            vp.verdict = "warn"
            vp.support = mono  # the seed lapses like any verdict, stale_after from now
            vp.error_kind = evidence.error_kind
            vp.observed_at = _stamp(evidence.at)
            vp.heard = _lapsed_since(mono, t.spec.stale_after)
            seeded.append(vp)
        t.vps = tuple(seeded)

    def on_result(self, result: ProbeResult, now: Now) -> list[StateChanged]:
        """Take one ProbeResult; raises :class:`Rejected` (changing nothing) to drop it."""
        # The per-result hot path: attributes read more than once are read once into
        # locals, and nothing (reason text, counts) is built unless a state can change.
        t = self._targets.get(result.target)
        if t is None:
            raise Rejected("unknown_target", f"no target {result.target!r} in the configuration")
        spec = t.spec
        stale = spec.stale_after
        mono = now.mono
        observed_at = result.observed_at
        skew = (observed_at - now.wall).total_seconds()
        if skew > stale or -skew > stale:
            when = "in the future" if skew > 0 else "old"
            raise Rejected("stale_timestamp", f"observed_at is {abs(skew):.1f}s {when} (stale_after {stale:g}s)")
        instant = observed_at.timestamp()
        probe = result.probe
        found: _Vantage | None = None
        for v in t.vps:
            if v.probe == probe:
                found = v
                break
        if found is None:
            vp = self._add_vantage(t, probe, mono)
            was_live = False
        else:
            vp = found
            was_live = mono < vp.heard + stale
            # A replayed or reordered result must not undo a newer one; once the point
            # went silent, a restarted worker whose clock stepped back starts afresh.
            prev = vp.observed_at
            if was_live and prev is not None and instant < _instant(prev):
                raise Rejected("out_of_order", f"older than the last result of probe {probe!r}")
            if not was_live and vp.run:
                # Silent for stale_after or more: what it said before is not evidence any
                # more, so it starts from this result (a seed from a restore, run 0, stays).
                vp.restart()
        events: list[StateChanged] = []
        breaker = t.breaker
        # The verdict as it counted until now (None once lapsed), so that a lapsed verdict
        # the result brings back is a change and gets evaluated.
        old_verdict = vp.counts(mono, stale)
        if old_verdict is None:
            vp.verdict = None  # the results behind it are older than stale_after: lapsed
        outcome = result.outcome
        if outcome == vp.outcome and vp.verdict == outcome:
            # The common case, inlined (same effect as record()): one more of a streak
            # whose verdict is already settled; a fail streak's ``oks`` is already 0.
            vp.run += 1
            if outcome != "fail":
                vp.oks += 1
        else:
            vp.record(outcome, spec.failure_threshold, spec.success_threshold)
        verdict = vp.verdict
        if verdict == outcome or (verdict == "warn" and outcome != "fail"):
            vp.support = mono
        vp.error_kind = result.error_kind
        if outcome == "fail":
            vp.fail_heard = mono
        vp.observed_at = instant if observed_at.tzinfo is UTC else observed_at  # as _stamp()
        vp.heard = mono
        scheduled = t.scheduled
        if scheduled is None or scheduled > mono + stale:
            # This vantage point goes stale then; the pending entry may be later (e.g.
            # the moment long-silent points are forgotten).
            self._schedule(t, mono + stale)
        if breaker == "closed" and was_live and vp.verdict == old_verdict and not t.resettle:
            # The closed "decide" step's fast path, inlined (the hot path): same live set,
            # same verdicts, same settings: the same raw state (its table reads nothing else).
            flap = t.flap
            if flap is not None and flap.record(t.raw):
                self._announce_closed(t, now, events)
            return events
        # The step a result takes in this phase (STEPS[phase]["result"]).
        self._on_result_in[breaker](t, vp, outcome, now, events)
        return events

    # The steps a result takes (see STEPS), after it was recorded as evidence.

    def _result_decide(self, t: _Target, vp: _Vantage, outcome: Outcome, now: Now, events: list[StateChanged]) -> None:
        self._evaluate(t, now, events, record=True)

    def _result_trial(self, t: _Target, vp: _Vantage, outcome: Outcome, now: Now, events: list[StateChanged]) -> None:
        vp.record_trial(outcome, t.spec.success_threshold)
        self._evaluate(t, now, events)

    def _result_readmission_trial(
        self, t: _Target, vp: _Vantage, outcome: Outcome, now: Now, events: list[StateChanged]
    ) -> None:
        if t.retry_at is None or now.mono < t.retry_at:
            return  # before retry_at: evidence only
        # Every result from retry_at on is a trial (the breaker stays open through failed
        # ones, no event). One reachable result is a passed trial: re-admitting is made
        # careful by the ramp and the fleet's reports during it, not by waiting for more looks.
        vp.record_trial(outcome, 1)
        if vp.trial == "ok":
            # The passed trial is the proof: the vantage point says reachable from now.
            vp.verdict = "pass" if outcome == "pass" else "warn"
            vp.support = now.mono
        self._evaluate(t, now, events)

    def _result_evidence(
        self, t: _Target, vp: _Vantage, outcome: Outcome, now: Now, events: list[StateChanged]
    ) -> None:
        """Recorded as evidence only (an operator's override holds the state)."""

    def on_report(self, target: str, instance: str, kind: str, at: datetime, now: Now) -> list[StateChanged]:
        """Take one failure report from a service instance (already counted and not a flood).

        Reports decide nothing, except during a re-admission ramp: ``ramp.reopen_reports``
        distinct instances reporting ``target`` failing (at or after the ramp's start, by
        their clocks) show that it fails under real traffic, and the breaker re-opens with
        the next re-admission backed off. Unknown targets and reports outside a ramp: no
        events.
        """
        t = self._targets.get(target)
        events: list[StateChanged] = []
        if t is not None and (step := self._on_report_in[t.breaker]) is not None:
            step(t, instance, kind, at, now, events)
        return events

    def _ramp_report(
        self, t: _Target, instance: str, kind: str, at: datetime, now: Now, events: list[StateChanged]
    ) -> None:
        """The report step: counted during a re-admission's probation; ``reopen_reports``
        distinct instances re-open the breaker, backed off."""
        if not self._in_ramp(t, now.mono):
            return
        ramp, reports = t.ramp, t.ramp_reports
        if ramp is None or reports is None or at < ramp.started_at:
            return  # seen before the re-admission: about the outage, not the ramp
        reports[instance] = kind
        if len(reports) < t.spec.ramp.reopen_reports:
            return
        kinds = ", ".join(sorted(set(reports.values())))
        c = self._counts(t, now.mono)
        why = f"re-admission {ramp.readmission} failed: {len(reports)} instances reported failures ({kinds})"
        self._open(t, now, events, why, c.failures)

    def tick(self, now: Now) -> list[StateChanged]:
        """Run the timers due by ``now``: retry_at (→ half-open), staleness and refresh."""
        events: list[StateChanged] = []
        heap = self._heap
        while heap and heap[0][0] <= now.mono:
            when, name = heapq.heappop(heap)
            t = self._targets.get(name)
            if t is None or t.scheduled != when:  # retired, or superseded by an earlier entry
                continue
            t.scheduled = None
            self._due(t, now, events)
            nxt = self._deadline(t, now.mono)
            if nxt is not None:
                # Never re-arm for "now" again inside this tick: that could spin.
                self._schedule(t, max(nxt, now.mono + 1e-6))
        return events

    def control(
        self, action: ControlAction, target: str, reason: str, now: Now, *, duration: float | None = None
    ) -> list[StateChanged]:
        """Apply an operator command; raises :class:`ControlError` (changing nothing) for an
        unknown target or command, or a ``maintenance`` without a positive ``duration`` in
        seconds."""
        t = self._targets.get(target)
        if t is None:
            raise ControlError(f"no target {target!r} in the configuration")
        if action not in _CONTROL_ACTIONS:
            raise ControlError(f"unknown command {action!r}")
        if action == "maintenance" and (duration is None or not duration > 0):
            raise ControlError(f"maintenance needs a duration greater than 0 seconds, got {duration!r}")
        why = reason.strip() or "no reason given"
        events: list[StateChanged] = []
        step = self._on_control_in[t.breaker].get(action)
        if step is None:  # STEPS: "nothing" (a status request, or the override in force)
            return events
        step(t, now, events, why, duration)
        self._schedule(t, self._deadline(t, now.mono))
        return events

    # The steps an operator command takes (see STEPS). Every override ends a ramp in
    # progress; a reset forgets the override, the backoff and the flap history.

    def _override(
        self,
        t: _Target,
        now: Now,
        events: list[StateChanged],
        breaker: Literal["forced_open", "disabled"],
        reason: str,
        retry_at: float | None = None,
    ) -> None:
        t.ramp = t.ramp_until = t.ramp_reports = None
        t.attempt, t.retry_at, t.prev_delay = 0, retry_at, None
        self._emit(t, now, events, "unavailable" if breaker == "forced_open" else "unknown", breaker, reason)

    def _force_open(self, t: _Target, now: Now, events: list[StateChanged], why: str, duration: float | None) -> None:
        self._override(t, now, events, "forced_open", f"forced open by operator: {why}")

    def _open_ended(self, t: _Target, now: Now, events: list[StateChanged], why: str, duration: float | None) -> None:
        if t.retry_at is not None:  # a maintenance window becomes open-ended
            self._force_open(t, now, events, why, duration)

    def _maintenance(self, t: _Target, now: Now, events: list[StateChanged], why: str, duration: float | None) -> None:
        assert duration is not None  # checked by control()
        end = now.wall + timedelta(seconds=duration)
        reason = f"{MAINTENANCE_MARK}{format_timestamp(end)}: {why}"
        self._override(t, now, events, "forced_open", reason, now.mono + duration)

    def _disable(self, t: _Target, now: Now, events: list[StateChanged], why: str, duration: float | None) -> None:
        self._override(t, now, events, "disabled", f"disabled by operator: {why}")

    def _reset(self, t: _Target) -> None:
        """What every reset forgets (a ramp is left be: only a closed breaker has one, and
        a reset of a closed breaker keeps it)."""
        t.readmit = 0
        t.attempt, t.retry_at, t.prev_delay = 0, None, None
        if t.flap is not None:
            t.flap.clear()

    def _reset_half_open(
        self, t: _Target, now: Now, events: list[StateChanged], why: str, duration: float | None
    ) -> None:
        # Never straight to closed: the breaker proves itself with a trial. (A disabled
        # target may have been open when it was disabled.)
        self._reset(t)
        self._half_open(t, now, events, why=f"reset by operator: {why}; trial checks allowed now")

    def _restart_trial(
        self, t: _Target, now: Now, events: list[StateChanged], why: str, duration: float | None
    ) -> None:
        attempt_before = t.attempt
        self._reset(t)
        t.half_open_since = now.mono
        for vp in t.vps:
            vp.trial, vp.trial_oks = None, 0
        self._evaluate(t, now, events)
        if not events and attempt_before:
            # attempt went back to 0: announce it, or the stream (and a restore from it)
            # would keep the old attempt.
            self._emit(t, now, events, t.state, "half_open", f"reset by operator: {why}; trial restarted")

    def _decide_afresh(
        self, t: _Target, now: Now, events: list[StateChanged], why: str, duration: float | None
    ) -> None:
        self._reset(t)
        t.expect_since = now.mono
        self._evaluate(t, now, events, why=f"reset by operator: {why}")

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
            stalest = min(t.vps, key=lambda v: v.heard)
            if mono < stalest.heard + t.spec.stale_after:
                raise Rejected("too_many_probes", f"target {t.name!r} already has {len(t.vps)} live probes")
            t.vps = tuple(v for v in t.vps if v is not stalest)
        # Interned: every target's vantage point of one worker shares its id string.
        vp = _Vantage(sys.intern(probe))
        t.vps = (*t.vps, vp)
        return vp

    def _schedule(self, t: _Target, when: float | None) -> None:
        if when is None:
            return
        if t.scheduled is None or when < t.scheduled:
            t.scheduled = when
            heapq.heappush(self._heap, (when, t.name))

    def _deadline(self, t: _Target, mono: float) -> float | None:
        """Earliest time a timer could change ``t`` (never later than the true one):
        the rules' deadline, or the refresh, whichever comes first."""
        when = self._rule_deadline(t, mono)
        if self._refresh_after is not None and t.seq and t.last is not None:
            refresh = t.announced + self._refresh_after
            when = refresh if when is None else min(when, refresh)
        return when

    def _rule_deadline(self, t: _Target, mono: float) -> float | None:
        """The earliest of the timers ``t``'s phase runs (DEADLINES)."""
        when: float | None = None
        for deadline in _DEADLINES_IN[t.breaker]:
            when = earliest(when, deadline(t, mono))
        return when

    def _due(self, t: _Target, now: Now, events: list[StateChanged]) -> None:
        # Compared as scheduled (heard + the forget period), so rounding never skips it.
        keep = t.spec.stale_after * FORGET_AFTER_STALE
        if any(vp.heard + keep < now.mono for vp in t.vps):
            t.vps = tuple(vp for vp in t.vps if not vp.heard + keep < now.mono)
        self._on_timer_in[t.breaker](t, now, events)
        refresh_after = self._refresh_after
        # Compared as it was scheduled (announced + refresh_after), so float rounding can
        # never make a due refresh look a hair early and skip it.
        if refresh_after is not None and t.seq and now.mono >= t.announced + refresh_after:
            self._refresh(t, now, events)

    def _refresh(self, t: _Target, now: Now, events: list[StateChanged]) -> None:
        """Re-announce ``t``'s unchanged state: only seq, at, reason and evidence are new."""
        last = t.last
        if last is None:  # seq > 0 always has a last event; nothing to repeat otherwise
            return
        since = t.changed_at or last.at
        t.seq += 1
        event = StateChanged(
            target=t.name,
            seq=t.seq,
            at=now.wall,
            previous=t.state,
            state=t.state,
            breaker=t.breaker,
            reason=t.changed_reason,
            failures=last.failures,
            attempt=t.attempt,
            # Repeated as announced: recomputing it from the monotonic deadline could move
            # it by a rounding microsecond, and a refresh changes nothing but seq and at.
            retry_at=last.retry_at if t.breaker in ("open", "forced_open") else None,
            features=t.spec.features_list,
            evidence=self._evidence(t) or _remembered(t, last, now.wall),
            flapping=t.flapping,
            unchanged_since=since,
            ramp=self._current_ramp(t, now.mono) if t.breaker == "closed" else None,
        )
        t.last = event
        events.append(event)
        self._announced(t, now.mono)

    def _evidence(self, t: _Target) -> dict[str, Evidence]:
        return {
            vp.probe: Evidence(outcome=vp.outcome, error_kind=vp.error_kind, at=_wall(vp.observed_at))
            for vp in t.vps
            if vp.observed_at is not None
        }

    def _counts(self, t: _Target, mono: float, waiting: bool = False) -> Facts:
        """What the decision tables read of ``t``'s evidence at ``mono`` (``waiting``: as
        the caller judged the silence's grace)."""
        spec = t.spec
        stale = spec.stale_after
        live = failing = warn = passing = trial_fail = trial_ok = failures = 0
        for vp in t.vps:
            if mono >= vp.heard + stale:
                continue
            live += 1
            verdict = vp.verdict if mono < vp.support + stale else None
            if verdict == "fail":
                failing += 1
            elif verdict == "warn":
                warn += 1
            elif verdict == "pass":
                passing += 1
            if vp.trial == "fail" and mono < vp.fail_heard + stale:
                trial_fail += 1
            elif vp.trial == "ok":
                trial_ok += 1
            if vp.outcome == "fail" and vp.run > failures:
                failures = vp.run
        return Facts(
            live,
            failing,
            warn,
            passing,
            trial_fail,
            trial_ok,
            failures,
            quorum_need(spec.quorum, live),
            degraded_need(spec.degraded_quorum, live),
            waiting,
            t.raw == "recovering",
            t.state == "unknown",
        )

    def _kinds(self, t: _Target, mono: float, which: Literal["fail", "warn", "trial"]) -> str:
        """`` (kind, ...)`` naming the error kinds of the counted vantage points' latest
        results, or "" when they carried none: a reason never names a kind no result
        carried. A failing point whose latest result passed is said to be passing again."""
        stale = t.spec.stale_after
        kinds: set[str] = set()
        missing = again = 0
        for vp in t.vps:
            if mono >= vp.heard + stale:
                continue
            if which == "trial":
                if vp.trial != "fail" or mono >= vp.fail_heard + stale:
                    continue
            elif vp.counts(mono, stale) != which:
                continue
            if which != "warn" and vp.outcome != "fail":
                again += 1
            elif which == "warn" and vp.outcome != "warn":
                continue
            elif vp.error_kind is None:
                missing += 1
            else:
                kinds.add(vp.error_kind)
        parts = [", ".join(sorted(kinds))] if kinds else []
        if missing and kinds:
            parts.append(f"{missing} without error kind")
        if again:
            parts.append(f"{again} passing again")
        return f" ({'; '.join(parts)})" if parts else ""

    # The steps a timer takes (see STEPS).

    def _timer_decide(self, t: _Target, now: Now, events: list[StateChanged]) -> None:
        self._evaluate(t, now, events)

    def _window_end(self, t: _Target, now: Now, events: list[StateChanged]) -> None:
        if t.retry_at is not None and now.mono >= t.retry_at:
            # The maintenance window is over: as a reset (the backoff and the failed
            # re-admissions forgotten too), a trial (never straight to closed).
            self._reset(t)
            self._half_open(t, now, events, why="maintenance ended: trial checks allowed now")

    def _timer_nothing(self, t: _Target, now: Now, events: list[StateChanged]) -> None:
        """Nothing is due in this phase but the common timers (forgetting, refresh)."""

    # ------------------------------------------------------------------ decisions

    def _evaluate(
        self, t: _Target, now: Now, events: list[StateChanged], *, record: bool = False, why: str = ""
    ) -> None:
        """Count ``t``'s evidence, decide by its phase's table (DECISIONS), and carry the
        decision out. ``record``: a result's evaluation (a verdict for flap detection);
        ``why``: an operator's reset (no grace for silence; named in the reason)."""
        phase = t.breaker
        spec = t.spec
        mono = now.mono
        if phase == "closed":
            t.resettle = False
            # Silence proves nothing within stale_after of the moment results became
            # expected (start, restore, reset, close); an operator's reset decides afresh.
            waiting = mono < t.expect_since + spec.stale_after and not why
        else:
            waiting = mono < t.half_open_since + spec.stale_after
        c = self._counts(t, mono, waiting)
        decision = decide(phase, c)
        self._carry_out[phase, decision](t, now, events, c, decision, record, why)

    # How a decision is carried out, per phase and decision. The same arguments for all:
    # the target, now, the events, the counts, the decision, record and why (as _evaluate).

    def _settle(
        self, t: _Target, now: Now, events: list[StateChanged], c: Facts, d: Decision, record: bool, why: str
    ) -> None:
        """A closed breaker's state: ``keep`` the one decided before (pending points give
        no opinion; silence within the grace), or the one decided."""
        prefix = f"{why}; " if why else ""
        raw = _SETTLED.get(d, t.raw)
        if c.live:
            # The reason is built only if an event is emitted (most evaluations change nothing).
            self._set_raw(t, now, events, raw, lambda: prefix + self._closed_reason(t, now, c, raw), record)
        else:
            self._set_raw(t, now, events, raw, lambda: prefix + self._no_data_reason(t), record)

    def _open_on_quorum(
        self, t: _Target, now: Now, events: list[StateChanged], c: Facts, d: Decision, record: bool, why: str
    ) -> None:
        prefix = f"{why}; " if why else ""
        kinds = self._kinds(t, now.mono, "fail")
        self._open(t, now, events, f"{prefix}{c.failing}/{c.live} probes failing{kinds}", c.failures)

    def _open_on_trial(
        self, t: _Target, now: Now, events: list[StateChanged], c: Facts, d: Decision, record: bool, why: str
    ) -> None:
        kinds = self._kinds(t, now.mono, "trial")
        self._open(t, now, events, f"trial failed on {c.trial_fail}/{c.live} probes{kinds}", c.failures)

    def _close_on_trial(
        self, t: _Target, now: Now, events: list[StateChanged], c: Facts, d: Decision, record: bool, why: str
    ) -> None:
        self._close(t, now, events, c)

    def _trial_silent(
        self, t: _Target, now: Now, events: list[StateChanged], c: Facts, d: Decision, record: bool, why: str
    ) -> None:
        self._emit(t, now, events, "unknown", "half_open", f"trial: {self._no_data_reason(t)}")

    def _trial_heard_again(
        self, t: _Target, now: Now, events: list[StateChanged], c: Facts, d: Decision, record: bool, why: str
    ) -> None:
        self._emit(t, now, events, "recovering", "half_open", "trial: probes heard from again")

    def _keep(
        self, t: _Target, now: Now, events: list[StateChanged], c: Facts, d: Decision, record: bool, why: str
    ) -> None:
        """Nothing changes (a half-open or open breaker's trial goes on)."""

    def _closed_reason(self, t: _Target, now: Now, c: Facts, raw: State) -> str:
        parts: list[str] = []
        if c.failing:
            parts.append(f"{c.failing}/{c.live} probes failing{self._kinds(t, now.mono, 'fail')}")
        if c.warn:
            parts.append(f"{c.warn}/{c.live} probes warn{self._kinds(t, now.mono, 'warn')}")
        if not parts:
            if raw == "unknown":
                return f"waiting for results: {c.live - c.passing}/{c.live} probes have no verdict yet"
            return f"{c.passing}/{c.live} probes passing"
        return "; ".join(parts) + _ignored(c, degraded_need(t.spec.degraded_quorum, c.live))

    def _no_data_reason(self, t: _Target) -> str:
        if not t.vps:
            return "no result from any probe yet"
        return f"no result from any probe for {t.spec.stale_after:g}s"

    def _set_raw(
        self,
        t: _Target,
        now: Now,
        events: list[StateChanged],
        raw: State,
        reason: Callable[[], str],
        record: bool,
    ) -> None:
        # A result is always a verdict for flap detection; a timer only when it changes
        # the verdict (ticks would otherwise dilute the history with repeats).
        if t.flap is not None and (record or raw != t.raw):
            t.flap.record(raw)
        t.raw = raw
        self._announce_closed(t, now, events, reason)

    def _announce_closed(
        self, t: _Target, now: Now, events: list[StateChanged], why: Callable[[], str] | None = None
    ) -> None:
        """Emit if the shown state, breaker or flapping flag changed; ``why()`` gives the
        reason (called only then), else it is built from the current counts."""
        flapping = t.flap is not None and t.flap.flapping
        shown: State = "degraded" if flapping and t.raw == "healthy" else t.raw
        if shown == t.state and t.breaker == "closed" and flapping == t.flapping:
            return
        if why is not None:
            reason = why()
        else:
            c = self._counts(t, now.mono)
            reason = self._closed_reason(t, now, c, t.raw) if c.live else self._no_data_reason(t)
        if flapping and t.flap is not None:
            reason = f"flapping ({t.flap.share():.0%} state changes lately), held degraded: {reason}"
        elif t.flapping and not flapping:
            reason = f"stopped flapping: {reason}"
        self._emit(t, now, events, shown, "closed", reason)

    def _open(self, t: _Target, now: Now, events: list[StateChanged], why: str, failures: int) -> None:
        """Open the breaker. A re-admission that fails during its ramp (by reports or by
        the probes) is backed off: attempt ``k + 1`` after ``k`` failed ones waits
        ``max(trial_interval, backoff(k))``. Any other opening is a fresh outage: attempt
        1, trial checks from ``trial_interval`` on."""
        spec = t.spec
        if self._in_ramp(t, now.mono):
            t.readmit += 1
            delay = max(spec.trial_interval, backoff_delay(spec.backoff, t.readmit, self._rng, t.prev_delay))
            t.prev_delay = delay
        else:
            t.readmit = 0
            t.prev_delay = None
            delay = spec.trial_interval
        t.ramp = t.ramp_until = t.ramp_reports = None
        t.attempt = t.readmit + 1
        t.retry_at = now.mono + delay
        t.raw = "unavailable"
        for vp in t.vps:
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
        for vp in t.vps:
            vp.trial, vp.trial_oks = None, 0
        # Not a verdict for flap detection: the breaker's own schedule, not an answer of the
        # dependency (a failed trial then records "unavailable" again: no change).
        reason = why or f"retry time reached: trial checks allowed (attempt {t.attempt})"
        self._emit(t, now, events, "recovering", "half_open", reason)
        self._schedule(t, now.mono + t.spec.stale_after)

    def _close(self, t: _Target, now: Now, events: list[StateChanged], c: Facts) -> None:
        """A passed trial closes the breaker: a re-admission, with its ramp (``ramp.duration``
        0: everyone at once, no probation). ``attempt`` goes back to 0 in the event; the
        failed re-admissions so far are remembered until the ramp ends."""
        t.breaker = "closed"
        t.raw = "recovering"  # just closed by a passed trial: no closed state to keep
        t.attempt, t.retry_at = 0, None
        t.expect_since = now.mono
        r = t.spec.ramp
        if r.duration > 0 and r.start < 1.0:
            duration = float(r.duration)
            t.ramp = Ramp(started_at=now.wall, duration_s=duration, from_share=r.start, readmission=t.readmit + 1)
            t.ramp_until = now.mono + max(duration, PROBATION_MIN_S)
            t.ramp_reports = {}
        else:
            t.ramp = t.ramp_until = t.ramp_reports = None
            t.readmit, t.prev_delay = 0, None
        self._evaluate(t, now, events, record=True, why=f"trial passed on {c.trial_ok}/{c.live} probes, breaker closed")
        # Closed now: its vantage points' staleness and lapses are deadlines again (an open
        # breaker scheduled none).
        self._schedule(t, self._deadline(t, now.mono))

    def _in_ramp(self, t: _Target, mono: float) -> bool:
        """``t``'s breaker was closed by a re-admission whose ramp has not ended yet."""
        return t.ramp_until is not None and mono < t.ramp_until

    def _current_ramp(self, t: _Target, mono: float) -> Ramp | None:
        """The ramp in progress (for the events), or None once it ended."""
        return t.ramp if self._in_ramp(t, mono) else None

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
            failures = max((vp.fails for vp in t.vps if now.mono < vp.heard + t.spec.stale_after), default=0)
        t.seq += 1
        event = StateChanged(
            target=t.name,
            seq=t.seq,
            at=now.wall,
            previous=t.state,
            state=state,
            breaker=breaker,
            # Interned: the same reason (e.g. "3/3 probes passing") recurs across targets.
            reason=sys.intern(reason),
            failures=failures,
            attempt=t.attempt,
            retry_at=now.wall_at(t.retry_at) if t.retry_at is not None and breaker in ("open", "forced_open") else None,
            features=t.spec.features_list,
            evidence=self._evidence(t),
            flapping=flapping,
            ramp=self._current_ramp(t, now.mono) if breaker == "closed" else None,
        )
        t.state = state
        t.breaker = breaker
        t.flapping = flapping
        t.last = event
        t.changed_at, t.changed_reason = now.wall, event.reason
        events.append(event)
        self._announced(t, now.mono)

    def _announced(self, t: _Target, mono: float) -> None:
        """``t`` just published an event: its refresh is due ``refresh_after`` from now."""
        t.announced = mono
        if self._refresh_after is not None:
            self._schedule(t, mono + self._refresh_after)
