"""Group state from member states: pure (no I/O, no clock; times are passed in).

Rules (docs/coordinator.md, "Groups"):

* A member is **in** while its own state is ``healthy`` or ``degraded``, out otherwise.
* The group is ``healthy`` while at least ``min_healthy`` members are in, ``degraded``
  with fewer, ``unavailable`` with none.
* A ``GroupChanged`` is due when the group's state changes, when a member's state (and so
  possibly in/out) changes, or when a member's recent latency moved by more than
  :data:`LATENCY_SHIFT` of what was last published (and by at least
  :data:`LATENCY_MIN_MS`), but latency alone re-announces a group at most once per
  :data:`LATENCY_EVERY_S`. Nothing else makes one.
* A picture decided while the previous one was never sent (the publisher had not tried it
  yet) takes its place *and its number*: it keeps that one's ``seq`` and ``previous``
  (:func:`supersede`), so the ``seq`` on the wire grows by exactly one per message. One
  that was tried may have been stored (an ack lost), so its ``seq`` is spent.
* Recent latency is a moving average (:data:`LATENCY_ALPHA`) of the ``latency_ms`` of a
  member's passing and warn results; failures do not count (a refused connect is fast).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Final

import msgspec

from healthbus.protocol import GroupChanged, GroupConfig, GroupMember, ProbeResult, State, group_state

LATENCY_ALPHA: Final = 0.3
LATENCY_SHIFT: Final = 0.25
LATENCY_MIN_MS: Final = 1.0
LATENCY_EVERY_S: Final = 5.0
_IN: Final[frozenset[State]] = frozenset({"healthy", "degraded"})


class Latencies:
    """Each target's recent latency (ms), one float per target that has members' results."""

    __slots__ = ("ms", "watched")

    def __init__(self, watched: Iterable[str] = ()) -> None:
        self.watched = frozenset(watched)
        self.ms: dict[str, float] = {}

    def observe(self, result: ProbeResult) -> bool:
        """Take a result in; True when it was a group member's passing or warn one."""
        if result.outcome == "fail" or result.target not in self.watched:
            return False
        old = self.ms.get(result.target)
        new = result.latency_ms if old is None else old + LATENCY_ALPHA * (result.latency_ms - old)
        self.ms[result.target] = new
        return True


def _moved(new: float | None, old: float | None) -> bool:
    if new is None:
        return False
    if old is None:
        return True
    return abs(new - old) > max(LATENCY_MIN_MS, LATENCY_SHIFT * old)


def group_event(
    group: GroupConfig,
    states: Mapping[str, State],
    latency_ms: Mapping[str, float],
    last: GroupChanged | None,
    at: datetime,
    *,
    mono: float,
    last_mono: float | None,
) -> GroupChanged | None:
    """The next GroupChanged of ``group``, or None when none is due (see the module rules).

    ``states``: every member's current state (missing: ``unknown``); ``last``: the group's
    last message (None: none yet); ``mono``/``last_mono``: now and when ``last`` was made
    by this coordinator (None: not by it), on the monotonic clock.
    """
    members = []
    for name in group.members:
        state = states.get(name, "unknown")
        latency = latency_ms.get(name)
        members.append(
            GroupMember(
                target=name,
                state=state,
                available=state in _IN,
                latency_ms=None if latency is None else round(latency, 3),
                weight=group.weights.get(name, 1),
            )
        )
    count = sum(1 for m in members if m.available)
    state = group_state(count, group.min_healthy)
    if last is not None:
        before = {m.target: m for m in last.members}
        structural = (
            last.state != state
            or last.policy != group.policy
            or last.min_healthy != group.min_healthy
            or last.panic_threshold != group.panic_threshold
            or last.primary != group.primary
            or last.reads_on_primary != group.reads_on_primary
            or [m.target for m in last.members] != group.members
            or any(
                before[m.target].state != m.state or before[m.target].weight != m.weight
                for m in members
                if m.target in before
            )
        )
        if not structural:
            if not any(_moved(m.latency_ms, before[m.target].latency_ms) for m in members if m.target in before):
                return None
            if last_mono is not None and mono - last_mono < LATENCY_EVERY_S:
                return None
    out = [m.target for m in members if not m.available]
    reason = f"{count}/{len(members)} members in (min_healthy {group.min_healthy})"
    if out:
        reason += f"; out: {', '.join(out)}"
    return GroupChanged(
        group=group.name,
        seq=1 if last is None else last.seq + 1,
        at=at,
        previous="unknown" if last is None else last.state,
        state=state,
        policy=group.policy,
        members=members,
        available=count,
        min_healthy=group.min_healthy,
        panic_threshold=group.panic_threshold,
        primary=group.primary,
        reads_on_primary=group.reads_on_primary,
        reason=reason,
    )


def supersede(event: GroupChanged, unsent: GroupChanged | None) -> GroupChanged:
    """``event`` in place of ``unsent``, a picture of the same group never sent: with its ``seq``
    and ``previous`` (the wire then still counts one per message). ``unsent`` None: ``event``."""
    if unsent is None:
        return event
    return msgspec.structs.replace(event, seq=unsent.seq, previous=unsent.previous)
