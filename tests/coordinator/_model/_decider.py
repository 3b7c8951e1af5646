"""A plain, slow model of the coordinator's rules (docs/coordinator.md, rules 1-6).

It is a second statement of the rules, not a copy of the core: no streak counters, no
cached verdicts, no timer heap. Each target keeps what happened, as lists:

* every accepted result, with the time it was received and the breaker phase it met;
* the breaker's phases (closed, open, half-open, forced open, disabled), each with the
  moment it began and what was announced with it (``retry_at``, the re-admission ramp);
* every verdict recorded for flap detection, with the flapping status after it;
* the events announced.

Everything the rules talk about is derived from those lists whenever it is needed, by
scanning them: a vantage point's verdict (hysteresis, the silence that starts a new run,
verdicts that lapse), liveness, trial marks, the probation, whether results have been
expected long enough for ``unknown``, the flap share. Deciding a target is one plain
function of its phase and those facts (:func:`decide`).

Time moves in the steps the driver takes: a timer tick decides a target only when one of
the instants derived from its history (a point going stale, a verdict lapsing, results
expected for ``stale_after``, ``retry_at``, the probation's end) or a reload fell in the
step. Where the docs were silent the model does what the core does, and the docs now say
so; where the core differed from the docs (a maintenance window's end kept an outage's
failed re-admissions; a late refresh named a forgotten point), the core was fixed.

Reasons are not modelled (a short label says which rule decided instead): the exact
reason texts are pinned by the pure example tests. Not modelled either: ``restore``,
``align`` (the standby's takeover), the cap of 64 vantage points.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from healthbus.coordinator._core import ControlError, Now, Rejected, backoff_delay
from healthbus.protocol import (
    BreakerState,
    ErrorKind,
    Evidence,
    FlapSettings,
    Outcome,
    ProbeResult,
    Ramp,
    State,
    StateChanged,
    TargetConfig,
)

#: The probation lasts the ramp, and at least this long (docs: "the ramp, and at least 2 s").
PROBATION_AT_LEAST = 2.0
#: A vantage point not heard from for this many ``stale_after`` is forgotten (docs, "Fixed limits").
FORGOTTEN_AFTER = 10

Verdict = Literal["failing", "passing", "warn", "pending"]
Mark = Literal["passed", "failed", "none"]


@dataclass(frozen=True)
class Heard:
    """One accepted result: when it arrived (coordinator clock) and the phase it met."""

    probe: str
    recv: float
    observed: datetime
    outcome: Outcome
    kind: ErrorKind | None
    phase: int
    # the thresholds in force when it arrived: a reload applies to the next results
    failure_threshold: int
    success_threshold: int
    stale_after: float  # a silence this long before it started a new run


@dataclass(frozen=True)
class Phase:
    """One stretch of the breaker in one state, from ``since`` on."""

    breaker: BreakerState
    since: float
    since_wall: datetime
    # open (and a maintenance window): when trials start / the window ends
    retry_at: float | None = None
    retry_at_wall: datetime | None = None
    # open, closed: failed re-admissions of this outage so far; open: the last backoff delay
    failed: int = 0
    last_delay: float | None = None
    # closed after a re-admission: which one it is (the ramp is announced from `since`)
    readmission: int = 0
    ramp_at: float = 0.0
    ramp: Ramp | None = None  # closed: the ramp announced with the re-admission (its settings then)
    origin: str = ""  # why it began, where that matters: "reset", "maintenance ended"


@dataclass
class Announced:
    """What an event said that the model needs again."""

    state: State
    breaker: BreakerState
    attempt: int
    flapping: bool
    retry_at: datetime | None
    failures: int
    seq: int
    mono: float
    changed_wall: datetime  # when the state was really decided (refreshes keep it)


@dataclass
class Decision:
    """The outcome of :func:`decide`: a label saying which rule, and what follows."""

    label: str
    state: State | None = None  # None: keep the announced state
    record: State | None = None  # the verdict recorded for flap detection (None: nothing)
    phase: Literal["same", "open", "close", "reopen"] = "same"


@dataclass
class Facts:
    """What the rules look at, derived from the history at one instant."""

    live: int
    failing: int
    warn: int
    reachable: int
    passed_trials: int
    failed_trials: int
    long_silent: bool  # nobody live and results expected for stale_after
    trials_open: bool  # open breaker at or after retry_at
    on_probation: bool
    reports: int


def quorum_of(quorum: object, n: int) -> int:
    """Rule 2's table."""
    if quorum == "majority":
        return n // 2 + 1
    if quorum == "any":
        return 1
    if quorum == "all":
        return n
    assert isinstance(quorum, int)
    return min(quorum, n)


def closed_rule(cfg: TargetConfig, f: Facts, *, trial_passed: bool = False) -> tuple[str, State | None]:
    """Rule 2 for a closed breaker: which state (None: keep it)."""
    n = f.live
    q = quorum_of(cfg.quorum, n)
    d = min(cfg.degraded_quorum, n)
    if n and f.failing >= q:
        return "failing quorum", "unavailable"
    if n and f.failing + f.warn >= d:
        return "degraded quorum", "degraded"
    if n and f.reachable >= n - q + 1:
        return "enough reachable", "healthy"
    if trial_passed:
        return "trial passed", "healthy"
    return "no opinion", None


def decide(phase: Phase, cfg: TargetConfig, f: Facts, *, timer: bool) -> Decision:
    """Whole-target evaluation: the breaker's phase and the facts → what happens."""
    n = f.live
    q = quorum_of(cfg.quorum, n)
    if phase.breaker in ("forced_open", "disabled"):
        return Decision("overridden")
    if phase.breaker == "open":
        if not f.trials_open:
            return Decision("evidence only")
        if timer:  # only a trial (a result) re-admits; silence closes nothing
            return Decision("still open")
        if n and f.passed_trials >= n - q + 1:
            label, state = closed_rule(cfg, f, trial_passed=True)
            return Decision("re-admitted: " + label, state, state, "close")
        return Decision("still open")
    if phase.breaker == "half_open":
        if n and f.passed_trials >= n - q + 1:
            label, state = closed_rule(cfg, f, trial_passed=True)
            return Decision("half-open trial passed: " + label, state, state, "close")
        if n and f.failed_trials >= q:
            return Decision("half-open trial failed", "unavailable", "unavailable", "open")
        if f.long_silent:  # the trial's own wait, not an answer: no verdict recorded
            return Decision("half-open silence", "unknown")
        if n:
            return Decision("trial pending", "recovering")
        return Decision("trial pending, nobody live")
    # closed
    if f.on_probation and f.reports >= cfg.ramp.reopen_reports:
        return Decision("fleet reports during probation", "unavailable", "unavailable", "reopen")
    if f.long_silent:
        return Decision("silence", "unknown", "unknown")
    label, state = closed_rule(cfg, f)
    if state == "unavailable":
        return Decision(label, state, state, "reopen" if f.on_probation else "open")
    return Decision(label, state, state)


@dataclass
class TargetModel:
    """Everything that happened to one target."""

    cfg: TargetConfig
    heard: list[Heard] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    flap_log: list[tuple[State | None, bool]] = field(default_factory=list)  # (verdict, flapping after); None: cleared
    events: list[Announced] = field(default_factory=list)
    # failure reports received during a probation: (instance, seen at, the ramp then announced)
    reports: list[tuple[str, datetime, Ramp]] = field(default_factory=list)
    seq_base: int = 0  # the seq of the last event of an earlier life (retired and configured again)
    looked: float = float("-inf")  # the last instant it was decided (time moves in steps)
    log: list[str] = field(default_factory=list)  # "looked" (decided), "reloaded" (new settings)

    # ------------------------------------------------------------------ history queries

    @property
    def stale(self) -> float:
        return self.cfg.effective_stale_after

    @property
    def phase(self) -> Phase:
        return self.phases[-1]

    def results_of(self, probe: str) -> list[Heard]:
        return [h for h in self.heard if h.probe == probe]

    def forget(self, now: float) -> None:
        """Drop the results of points silent for more than 10 x stale_after: forgotten."""
        keep = set(self.probes(now))
        self.heard = [h for h in self.heard if h.probe in keep]

    def probes(self, now: float) -> list[str]:
        """Remembered vantage points, in the order first heard."""
        seen: dict[str, float] = {}
        for h in self.heard:
            seen[h.probe] = h.recv
        return [p for p, last in seen.items() if now <= last + FORGOTTEN_AFTER * self.stale]

    def current_run(self, probe: str) -> list[Heard]:
        """The point's results since its last silence of stale_after or more."""
        run: list[Heard] = []
        for h in self.results_of(probe):
            if run and h.recv >= run[-1].recv + h.stale_after:
                run = []
            run.append(h)
        return run

    def is_live(self, probe: str, now: float) -> bool:
        mine = self.results_of(probe)
        return bool(mine) and now < mine[-1].recv + self.stale

    def verdict(self, probe: str, now: float) -> Verdict:
        """Rule 1, replayed over the point's current run (lapses applied as time passes)."""
        v: Verdict = "pending"
        seen: list[Heard] = []
        for h in self.current_run(probe):
            ft, st = h.failure_threshold, h.success_threshold
            v = self._lapsed(v, seen, h.recv)
            seen.append(h)
            tail_fail = _trailing(seen, {"fail"})
            tail_ok = _trailing(seen, {"pass", "warn"})
            tail_pass = _trailing(seen, {"pass"})
            tail_warn = _trailing(seen, {"warn"})
            if tail_fail >= ft:
                v = "failing"
            elif h.outcome != "fail" and self._is_open_trial(h):
                v = "passing" if h.outcome == "pass" else "warn"
            elif tail_pass >= st:
                v = "passing"
            elif tail_warn >= st or (tail_ok >= st and v in ("failing", "pending")):
                v = "warn"
        return self._lapsed(v, seen, now)

    def _lapsed(self, v: Verdict, seen: list[Heard], t: float) -> Verdict:
        agreeing = {"failing": {"fail"}, "passing": {"pass"}, "warn": {"pass", "warn"}}.get(v)
        if agreeing is None:
            return v
        latest = max((h.recv for h in seen if h.outcome in agreeing), default=None)
        if latest is None or t >= latest + self.stale:
            return "pending"
        return v

    def _is_open_trial(self, h: Heard) -> bool:
        ph = self.phases[h.phase]
        return ph.breaker == "open" and ph.retry_at is not None and h.recv >= ph.retry_at

    def trial_mark(self, probe: str, now: float) -> Mark:
        """The point's trial in the current phase (open from retry_at on, or half-open)."""
        here = len(self.phases) - 1
        run = [h for h in self.current_run(probe) if h.phase == here]
        ph = self.phase
        if ph.breaker == "open":
            trials = [h for h in run if self._is_open_trial(h)]
            if not trials:
                return "none"
            last = trials[-1]
            if last.outcome != "fail":
                return "passed"
            return "failed" if now < last.recv + self.stale else "none"
        if ph.breaker == "half_open":
            mark: Mark = "none"
            for i, h in enumerate(run):
                if h.outcome == "fail":
                    mark = "failed"
                elif _trailing(run[: i + 1], {"pass", "warn"}) >= h.success_threshold:
                    mark = "passed"
            if mark == "failed":
                fails = [h.recv for h in run if h.outcome == "fail"]
                if now >= fails[-1] + self.stale:
                    return "none"
            return mark
        return "none"

    def deadlines(self) -> list[float]:
        """The instants at which time alone can change a decision (derived, not kept)."""
        out: list[float] = []
        for p in {h.probe for h in self.heard}:
            mine = self.results_of(p)
            for kinds in ({"fail"}, {"pass"}, {"pass", "warn"}, {"pass", "warn", "fail"}):
                latest = [h.recv for h in mine if h.outcome in kinds]
                if latest:
                    out.append(latest[-1] + self.stale)
        ph = self.phase
        out.append(ph.since + self.stale)
        if ph.retry_at is not None:
            out.append(ph.retry_at)
        if ph.breaker == "closed" and ph.ramp is not None:
            out.append(ph.ramp_at + max(ph.ramp.duration_s, PROBATION_AT_LEAST))
        return out

    def on_probation(self, now: float) -> bool:
        ph = self.phase
        if ph.breaker != "closed" or ph.ramp is None:
            return False
        return now < ph.ramp_at + max(ph.ramp.duration_s, PROBATION_AT_LEAST)

    def facts(self, now: float) -> Facts:
        live = [p for p in self.probes(now) if self.is_live(p, now)]
        verdicts = [self.verdict(p, now) for p in live]
        marks = [self.trial_mark(p, now) for p in live]
        ph = self.phase
        reporters = {i for i, seen, ramp in self.reports if ramp is ph.ramp and seen >= ramp.started_at}
        return Facts(
            live=len(live),
            failing=verdicts.count("failing"),
            warn=verdicts.count("warn"),
            reachable=verdicts.count("passing") + verdicts.count("warn"),
            passed_trials=marks.count("passed"),
            failed_trials=marks.count("failed"),
            long_silent=not live and now >= ph.since + self.stale,
            trials_open=ph.breaker == "open" and ph.retry_at is not None and now >= ph.retry_at,
            on_probation=self.on_probation(now),
            reports=len(reporters) if self.on_probation(now) else 0,
        )

    def failures(self, now: float) -> int:
        live = [p for p in self.probes(now) if self.is_live(p, now)]
        return max((_trailing(self.current_run(p), {"fail"}) for p in live), default=0)

    def evidence(self, now: float) -> dict[str, Evidence]:
        out: dict[str, Evidence] = {}
        for p in self.probes(now):
            last = self.results_of(p)[-1]
            out[p] = Evidence(outcome=last.outcome, error_kind=last.kind, at=last.observed)
        return out

    # ------------------------------------------------------------------ flap detection

    def flap_window(self) -> list[State]:
        since_clear: list[State] = []
        for v, _ in self.flap_log:
            since_clear = [] if v is None else [*since_clear, v]
        return since_clear[-self.cfg.flap.window :]

    def flapping(self) -> bool:
        return bool(self.flap_log) and self.flap_log[-1][1]

    def record(self, verdict: State) -> None:
        """Rule 5: add a verdict; the flapping status after it follows from the log."""
        settings: FlapSettings = self.cfg.flap
        was = self.flapping()
        self.flap_log.append((verdict, was))
        if not settings.enabled:
            self.flap_log[-1] = (verdict, False)
            return
        s = flap_share(self.flap_window(), settings.window)
        if not was:
            now_flapping = s > settings.high
        else:
            # verdicts recorded since flapping began (the one that started it not counted)
            since = 0
            for v, flapping in reversed(self.flap_log[:-1]):
                if v is None or not flapping:
                    break
                since += 1
            now_flapping = not (since >= settings.window and s < settings.low)
        self.flap_log[-1] = (verdict, now_flapping)

    def clear_flaps(self) -> None:
        self.flap_log.append((None, False))


def flap_share(window: list[State], size: int) -> float:
    """Weighted share of changes: 0.8 for the oldest possible pair, 1.2 for the newest."""
    total = 0.0
    m = len(window)
    for j in range(1, m):  # oldest pair first
        if window[j] != window[j - 1]:
            steps_back = (m - 1) - j
            total += 0.8 + 0.4 * (size - 2 - steps_back) / (size - 2)
    return total / (size - 1)


def _trailing(results: list[Heard], outcomes: set[str]) -> int:
    n = 0
    for h in reversed(results):
        if h.outcome not in outcomes:
            break
        n += 1
    return n


class Model:
    """Drop-in for :class:`healthbus.coordinator.Decider` as the test driver uses it."""

    def __init__(
        self,
        targets: Iterable[TargetConfig],
        *,
        rng: random.Random,
        now: Now,
        refresh_after: float | None = None,
    ) -> None:
        self.rng = rng
        self.refresh_after = refresh_after
        self.targets: dict[str, TargetModel] = {}
        self.retired_seq: dict[str, int] = {}
        for cfg in targets:
            self._add(cfg, now)

    def _add(self, cfg: TargetConfig, now: Now) -> None:
        t = TargetModel(cfg, seq_base=self.retired_seq.pop(cfg.name, 0))
        t.phases.append(Phase("closed", now.mono, now.wall))
        self.targets[cfg.name] = t

    # ------------------------------------------------------------------ the API

    def state(self, target: str) -> tuple[State, BreakerState, int]:
        t = self.targets[target]
        if not t.events:
            return ("unknown", "closed", t.seq_base)
        e = t.events[-1]
        return (e.state, e.breaker, e.seq)

    def on_result(self, result: ProbeResult, now: Now) -> list[StateChanged]:
        t = self.targets.get(result.target)
        if t is None:
            raise Rejected("unknown_target", f"no target {result.target!r}")
        skew = abs((result.observed_at - now.wall).total_seconds())
        if skew > t.stale:
            raise Rejected("stale_timestamp", "observed_at too far from now")
        mine = t.results_of(result.probe)
        if mine and t.is_live(result.probe, now.mono) and result.observed_at < mine[-1].observed:
            raise Rejected("out_of_order", "older than the last result of that point")
        t.looked = now.mono
        t.log.append("looked")
        t.forget(now.mono)
        t.heard.append(
            Heard(
                result.probe,
                now.mono,
                result.observed_at,
                result.outcome,
                result.error_kind,
                len(t.phases) - 1,
                t.cfg.failure_threshold,
                t.cfg.success_threshold,
                t.stale,
            )
        )
        return self._evaluate(t, now, timer=False)

    def on_report(self, target: str, instance: str, kind: str, at: datetime, now: Now) -> list[StateChanged]:
        t = self.targets.get(target)
        if t is None:
            return []
        ramp = t.phase.ramp
        if ramp is None or not t.on_probation(now.mono):
            return []  # outside a probation a report decides nothing
        t.reports.append((instance, at, ramp))
        if t.facts(now.mono).reports < t.cfg.ramp.reopen_reports:
            return []  # a report is no result: it decides (and records) only a re-open
        return self._evaluate(t, now, timer=False, report=True)

    def tick(self, now: Now) -> list[StateChanged]:
        out: list[StateChanged] = []
        for t in self.targets.values():
            t.forget(now.mono)
            before = len(t.events)
            ph = t.phase
            if ph.breaker == "forced_open" and ph.retry_at is not None and now.mono >= ph.retry_at:
                # a maintenance window ends like a reset: half-open
                t.clear_flaps()
                t.phases.append(Phase("half_open", now.mono, now.wall, origin="maintenance ended"))
                out += self._announce(t, now, "recovering", "maintenance ended")
            due = [d for d in t.deadlines() if t.looked < d <= now.mono]
            # new settings are taken at the next timer (or result) after a reload
            due += [0.0] if "reloaded" in t.log and t.log[-1] == "reloaded" else []
            t.looked = now.mono
            t.log.append("looked")
            if due:
                out += self._evaluate(t, now, timer=True)
            if len(t.events) == before and t.events and self.refresh_after is not None:
                last = t.events[-1]
                if now.mono >= last.mono + self.refresh_after:
                    out += self._announce(t, now, last.state, "refresh", refresh=True)
        return out

    def control(
        self, action: str, target: str, reason: str, now: Now, *, duration: float | None = None
    ) -> list[StateChanged]:
        t = self.targets.get(target)
        if t is None:
            raise ControlError(f"unknown target {target!r}")
        if action not in ("force-open", "maintenance", "disable", "reset", "status"):
            raise ControlError(f"unknown command {action!r}")
        if action == "maintenance" and (duration is None or duration <= 0):
            raise ControlError("maintenance needs a duration")
        m, w = now.mono, now.wall
        t.forget(m)
        if action == "status":
            return []
        if action == "force-open":
            t.phases.append(Phase("forced_open", m, w))
            return self._announce(t, now, "unavailable", "forced open")
        if action == "maintenance":
            if duration is None or duration <= 0:
                raise ControlError("maintenance needs a duration")
            t.phases.append(Phase("forced_open", m, w, m + duration, w + timedelta(seconds=duration)))
            # every maintenance request announces its window, even an unchanged one
            return self._announce(t, now, "unavailable", "maintenance", always=True)
        if action == "disable":
            t.phases.append(Phase("disabled", m, w))
            return self._announce(t, now, "unknown", "disabled")
        if action == "reset":
            t.clear_flaps()
            if t.phase.breaker == "closed":
                ph = t.phase
                # decided afresh; the ramp goes on, its failed re-admissions are forgotten
                t.phases.append(
                    Phase("closed", m, w, readmission=ph.readmission, ramp_at=ph.ramp_at, ramp=ph.ramp, origin="reset")
                )
                out = self._evaluate(t, now, timer=False, record=False)
                if not out:
                    out = self._announce(t, now, self.state(target)[0], "reset")
                return out
            if t.phase.breaker == "half_open":  # the trial restarts; the state stays as it is
                t.phases.append(Phase("half_open", m, w, origin="reset"))
                return self._announce(t, now, self.state(target)[0], "reset")
            t.phases.append(Phase("half_open", m, w, origin="reset"))
            return self._announce(t, now, "recovering", "reset")
        raise ControlError(f"unknown command {action!r}")

    def reconfigure(self, targets: Iterable[TargetConfig], now: Now) -> list[StateChanged]:
        new = {c.name: c for c in targets}
        out: list[StateChanged] = []
        for name in list(self.targets):
            if name not in new:
                t = self.targets.pop(name)
                seq = t.events[-1].seq if t.events else t.seq_base
                if seq:  # announced, in this life or an earlier one
                    t.phases.append(Phase("closed", now.mono, now.wall))
                    out += self._announce(t, now, "unknown", "retired", retired=True)
                    seq = t.events[-1].seq
                if seq:
                    self.retired_seq[name] = seq
        for name, cfg in new.items():
            if name in self.targets:
                t = self.targets[name]
                if cfg.flap != t.cfg.flap:
                    t.clear_flaps()
                if cfg != t.cfg:
                    t.log.append("reloaded")
                t.cfg = cfg
            else:
                self._add(cfg, now)
        return out

    # ------------------------------------------------------------------ deciding

    def _evaluate(
        self, t: TargetModel, now: Now, *, timer: bool, record: bool = True, report: bool = False
    ) -> list[StateChanged]:
        facts = t.facts(now.mono)
        if not report:  # the reports are counted when one arrives, not again later
            facts.reports = 0
        d = decide(t.phase, t.cfg, facts, timer=timer)
        announced = self.state(t.cfg.name)[0]
        # the last verdict the rules gave (flap history cleared or not)
        given = [v for v, _ in t.flap_log if v is not None]
        last_verdict = given[-1] if given else announced
        if d.label == "no opinion":  # the verdict is kept: recorded again
            d.record = d.state = last_verdict
        if timer and d.phase == "same" and (d.state or announced) == last_verdict:
            # a timer records a verdict only when it changes one
            return self._announce(t, now, last_verdict, d.label)
        if record and d.record is not None and not (d.phase == "same" and t.phase.breaker == "open"):
            t.record(d.record)
        m, w = now.mono, now.wall
        ph = t.phase
        if d.phase == "open":
            t.phases.append(Phase("open", m, w, m + float(t.cfg.trial_interval), _plus(w, t.cfg.trial_interval)))
        elif d.phase == "reopen":
            failed = ph.failed + 1
            prev = self._previous_delay(t)
            delay = backoff_delay(t.cfg.backoff, failed, self.rng, prev)
            wait = max(float(t.cfg.trial_interval), delay)
            t.phases.append(Phase("open", m, w, m + wait, _plus(w, wait), failed=failed, last_delay=delay))
        elif d.phase == "close":
            readmission = (ph.failed + 1) if ph.breaker == "open" else 1
            ramp = None
            if t.cfg.ramp.duration > 0:
                ramp = Ramp(
                    started_at=w,
                    duration_s=float(t.cfg.ramp.duration),
                    from_share=t.cfg.ramp.start,
                    readmission=readmission,
                )
            t.phases.append(
                Phase("closed", m, w, readmission=readmission, ramp_at=m, ramp=ramp, failed=readmission - 1)
            )
        state = d.state if d.state is not None else announced
        return self._announce(t, now, state, d.label)

    def _previous_delay(self, t: TargetModel) -> float | None:
        """The backoff delay of the re-open before this re-admission (decorrelated jitter)."""
        for ph in reversed(t.phases):
            if ph.breaker == "open":
                return ph.last_delay
            if ph.breaker != "closed" or not ph.readmission or ph.origin == "reset":
                return None
        return None

    def _announce(
        self,
        t: TargetModel,
        now: Now,
        state: State,
        label: str,
        *,
        refresh: bool = False,
        retired: bool = False,
        always: bool = False,
    ) -> list[StateChanged]:
        ph = t.phase
        breaker = ph.breaker
        attempt = (ph.failed + 1) if breaker == "open" else 0
        if state == "healthy" and breaker == "closed" and t.flapping():
            state = "degraded"
        flapping = breaker == "closed" and t.flapping() and not retired
        prev = t.events[-1] if t.events else None
        retry_at = ph.retry_at_wall if breaker in ("open", "forced_open") else None
        last = (
            (prev.state, prev.breaker, prev.attempt, prev.flapping, prev.retry_at)
            if prev
            else ("unknown", "closed", 0, False, None)
        )
        if (state, breaker, attempt, flapping, retry_at) == last and not (refresh or retired or always):
            return []
        seq = (prev.seq if prev else t.seq_base) + 1
        changed = prev.changed_wall if (refresh and prev) else now.wall
        # a refresh repeats what was announced (failures too); a retired event names nothing
        failures = 0 if retired else prev.failures if (refresh and prev) else t.failures(now.mono)
        ramp = ph.ramp if t.on_probation(now.mono) and not retired else None
        event = StateChanged(
            target=t.cfg.name,
            seq=seq,
            at=now.wall,
            previous=prev.state if prev else "unknown",
            state=state,
            breaker=breaker,
            reason=label,
            failures=failures,
            attempt=attempt,
            retry_at=retry_at,
            features=list(t.cfg.features),
            evidence={} if retired else t.evidence(now.mono),
            flapping=flapping,
            unchanged_since=changed if refresh else None,
            ramp=ramp,
            retired=retired,
        )
        t.events.append(Announced(state, breaker, attempt, flapping, retry_at, failures, seq, now.mono, changed))
        return [event]


def _plus(wall: datetime, seconds: float) -> datetime:
    return wall + timedelta(seconds=float(seconds))
