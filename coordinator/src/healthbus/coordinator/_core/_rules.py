"""The decider's rules as data, split by breaker phase: what each input does in each phase,
and what an evaluation of the evidence decides (the first row whose condition holds).

:class:`~._decider.Decider` keeps the evidence (vantage points, streaks, verdicts,
timers) and drives these tables, as h11 drives its HTTP state machine (the table in its
``_state.py``) from its connection: an input looks up the *step* it takes in the
target's phase (:data:`STEPS`); a step that evaluates counts the evidence into
:class:`Facts` and applies the first row of the phase's decision table
(:data:`DECISIONS`) that holds; a phase's timers are the deadlines listed for it
(:data:`DEADLINES`). Nothing here reads a clock or keeps state. docs/coordinator.md
("The rules as a table") shows the same tables, and a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, Literal, NamedTuple, TypeAlias

from healthbus.protocol import BreakerState

#: A breaker phase: ``closed``, ``half_open``, ``open``, ``forced_open`` or ``disabled``.
Phase: TypeAlias = BreakerState
#: What can happen to a target: a probe result, a timer, a service instance's failure
#: report, or an operator command.
Input: TypeAlias = Literal["result", "timer", "report", "force-open", "maintenance", "disable", "reset", "status"]
#: What an input does (the decider has one handler per step and input).
Step: TypeAlias = Literal[
    "decide",
    "trial",
    "readmission trial",
    "evidence",
    "nothing",
    "ramp report",
    "force open",
    "open-ended",
    "maintenance",
    "disable",
    "half-open",
    "restart trial",
    "decide afresh",
    "window end",
]

_OVERRIDES: Final[Mapping[Input, Step]] = {
    "force-open": "force open",
    "maintenance": "maintenance",
    "disable": "disable",
    "status": "nothing",
}

#: The step each input takes in each phase. Every result is recorded as evidence first
#: (streaks, verdicts, liveness) whatever the step; ``evidence`` means nothing more.
#:
#: * ``decide``: apply the phase's decision table (a closed breaker's result whose
#:   vantage point kept its verdict and liveness decides nothing new: the fast path);
#: * ``trial``: the result is also a half-open trial (a point's trial passes after
#:   ``success_threshold`` reachable results, fails on a ``fail``), then ``decide``;
#: * ``readmission trial``: from ``retry_at`` on, the result is a trial that one reachable
#:   result passes, then ``decide``; before ``retry_at``, evidence only;
#: * ``ramp report``: counted toward ``ramp.reopen_reports`` during a re-admission's
#:   probation (which re-opens the breaker, backed off); ignored outside it;
#: * ``force open`` / ``maintenance`` / ``disable``: the operator's override
#:   (``forced_open``/``unavailable``; with ``retry_at`` at the window's end;
#:   ``disabled``/``unknown``); ``open-ended``: a maintenance window becomes an
#:   open-ended force-open (one already open-ended stays as it is);
#: * ``half-open``: never straight to closed: trial checks allowed now;
#: * ``restart trial``: the trial starts again (its marks and wait forgotten);
#: * ``decide afresh``: the closed table at once, without the silence's grace;
#: * ``window end``: at ``retry_at``, a maintenance window ends like a reset (half-open).
#:
#: A reset also forgets the backoff and the flap history; every override (and a reset of
#: an open, forced-open, disabled or half-open breaker) ends a re-admission's ramp.
STEPS: Final[Mapping[Phase, Mapping[Input, Step]]] = {
    "closed": {
        "result": "decide",
        "timer": "decide",
        "report": "ramp report",
        "reset": "decide afresh",
        **_OVERRIDES,
    },
    "half_open": {
        "result": "trial",
        "timer": "decide",
        "report": "nothing",
        "reset": "restart trial",
        **_OVERRIDES,
    },
    "open": {
        "result": "readmission trial",
        # From retry_at on results are trials: the moment itself changes nothing.
        "timer": "nothing",
        "report": "nothing",
        "reset": "half-open",
        **_OVERRIDES,
    },
    "forced_open": {
        "result": "evidence",
        "timer": "window end",
        "report": "nothing",
        "reset": "half-open",
        **_OVERRIDES,
        "force-open": "open-ended",
    },
    "disabled": {
        "result": "evidence",
        "timer": "nothing",
        "report": "nothing",
        "reset": "half-open",
        **_OVERRIDES,
        "disable": "nothing",
    },
}


class Facts(NamedTuple):
    """What an evaluation counts of one target's evidence at one moment.

    ``live`` vantage points were heard within ``stale_after``; of them ``failing``,
    ``warn`` and ``passing`` have that verdict while it counts; ``trial_fail`` and
    ``trial_ok`` have that trial mark (a failed one while its ``fail`` is younger than
    ``stale_after``); ``failures`` is the longest live ``fail`` streak (for the events,
    not the decision). ``quorum`` (``q``) failing open the breaker and ``degraded``
    (``d``) failing or warn degrade it, for ``live`` (with none live they mean nothing:
    every table asks ``live`` first). ``waiting``: no point is live and
    silence proves nothing yet (within ``stale_after`` of the moment results became
    expected, or of the trial's start; never for an operator's reset). ``just_closed``: a
    passed trial closed the breaker, and no closed state was decided since.
    ``shown_unknown``: ``unknown`` is the state last announced.
    """

    live: int
    failing: int
    warn: int
    passing: int
    trial_fail: int
    trial_ok: int
    failures: int
    quorum: int
    degraded: int
    waiting: bool
    just_closed: bool
    shown_unknown: bool


#: What an evaluation decides: ``keep`` the state, ``unknown``, ``degraded`` or
#: ``healthy`` (closed); ``open`` the breaker; ``close`` it (a re-admission, then decided
#: by the closed table); ``recovering`` (a half-open trial heard from again).
Decision: TypeAlias = Literal["keep", "unknown", "open", "degraded", "healthy", "close", "recovering"]


class Row(NamedTuple):
    """One rule of a decision table: ``then`` when ``holds(facts)``; ``when`` says it in words."""

    when: str
    holds: Callable[[Facts], bool]
    then: Decision


def _always(_: Facts) -> bool:
    return True


def _reachable(f: Facts) -> bool:
    """Enough reachable (passing or warn) points to call the target up: ``n - q + 1``, so
    that the rest cannot make a failing quorum."""
    return f.passing + f.warn >= f.live - f.quorum + 1


def _trials_passed(f: Facts) -> bool:
    """``n - q + 1`` passed trials (the rest cannot make a failing quorum)."""
    return f.live > 0 and f.trial_ok >= f.live - f.quorum + 1


#: Per phase, the evaluation's rows in order; the first that holds decides. A phase
#: without a table (``forced_open``, ``disabled``) decides nothing: its state is the
#: operator's. ``open`` is evaluated only by a readmission trial (from ``retry_at`` on).
DECISIONS: Final[Mapping[Phase, tuple[Row, ...]]] = {
    "closed": (
        Row("no live vantage point, within the grace", lambda f: f.live == 0 and f.waiting, "keep"),
        Row("no live vantage point", lambda f: f.live == 0, "unknown"),
        Row("q failing", lambda f: f.failing >= f.quorum, "open"),
        Row("d failing or warn", lambda f: f.failing + f.warn >= f.degraded, "degraded"),
        Row("n - q + 1 passing or warn", _reachable, "healthy"),
        Row("just closed by a passed trial", lambda f: f.just_closed, "healthy"),
        Row("otherwise (pending points give no opinion)", _always, "keep"),
    ),
    "half_open": (
        Row("no live vantage point, within the grace", lambda f: f.live == 0 and f.waiting, "keep"),
        Row("no live vantage point, unknown already", lambda f: f.live == 0 and f.shown_unknown, "keep"),
        Row("no live vantage point", lambda f: f.live == 0, "unknown"),
        Row("q failed trials", lambda f: f.trial_fail >= f.quorum, "open"),
        Row("n - q + 1 passed trials", _trials_passed, "close"),
        Row("heard from again after unknown", lambda f: f.shown_unknown, "recovering"),
        Row("otherwise", _always, "keep"),
    ),
    "open": (
        Row("n - q + 1 passed trials", _trials_passed, "close"),
        Row("otherwise (a failed trial announces nothing)", _always, "keep"),
    ),
}


def decide(phase: Phase, facts: Facts) -> Decision:
    """The first row of ``phase``'s table that holds for ``facts`` (every table ends with
    a row that always holds)."""
    return next(row.then for row in DECISIONS[phase] if row.holds(facts))


#: A kind of timer: ``forget`` (the longest-silent vantage point is forgotten,
#: ``FORGET_AFTER_STALE`` × ``stale_after`` after it was last heard); ``liveness`` (the next
#: live point goes stale, its verdict or failed trial lapses; with none live, the end of the
#: silence's grace unless already unknown); ``window end`` (``retry_at`` of a maintenance
#: window).
Deadline: TypeAlias = Literal["forget", "liveness", "window end"]

#: The timers each phase runs (plus the refresh, in every phase). An open breaker runs none
#: at ``retry_at``: from then on its results are trials, and nothing happens without one.
DEADLINES: Final[Mapping[Phase, tuple[Deadline, ...]]] = {
    "closed": ("forget", "liveness"),
    "half_open": ("forget", "liveness"),
    "open": ("forget",),
    "forced_open": ("forget", "window end"),
    "disabled": ("forget",),
}
