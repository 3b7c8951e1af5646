"""What a subscriber knows of groups, and the plans ``pick()`` answers from (pure).

No I/O, no clock, no asyncio. A group's definition, members' latencies and the
coordinator's view come from its last :class:`~healthbus.protocol.GroupChanged`; whether
each member is usable *here* comes from this instance's own availability answers (the
state table: bus-loss policy and re-admission ramps included), so ``pick()`` and
``is_available()`` never disagree.

Invariants:

- A plan is rebuilt whenever anything it depends on changes (a GroupChanged, a member's
  StateChanged, the bus going stale or fresh, a member admitted by its ramp), so
  ``pick()`` is a dict lookup and an index into a precomputed rotation.
- Plans are swapped whole (never edited in place): a reader in another thread sees the
  old plan or the new one. A rebuilt plan starts one member further on than the last
  one did, so rebuilds (every pick while a member is in a ramp) still rotate.
- No usable member: no plan (``pick()`` raises). Fewer usable than
  ``panic_threshold`` × members: the rotation spreads over **every** member (panic),
  whatever the policy, weights kept.
- Policies over the usable members, in member order: ``primary-first`` the first one;
  ``round-robin`` each in turn; ``weighted`` smooth weighted round-robin (each member
  its weight's share, interleaved); ``least-latency`` the members within
  :data:`LATENCY_BAND` of the fastest recent latency, in turn (none known yet: all).
- Reads (``read_only``): the same, without the group's ``primary`` unless
  ``reads_on_primary``; with no primary configured, reads and writes share one plan.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from healthbus.protocol import GroupChanged

#: least-latency shares the load among members at most this much slower than the fastest.
LATENCY_BAND: Final = 1.25
#: Longest rotation a weighted plan builds (weights are scaled down beyond it).
MAX_ROTATION: Final = 1000


@dataclass(frozen=True, slots=True)
class Plan:
    """One precomputed answer: ``next()`` gives the members of ``rotation`` in turn."""

    rotation: tuple[str, ...]
    panic: bool
    usable: tuple[str, ...]
    ramp: bool
    """A member was waiting for its moment in a ramp when built: re-check on pick."""
    next: Callable[[], str]
    """``itertools.cycle(rotation).__next__``, started where the group's last plan was."""


def _smooth_weighted(names: Sequence[str], weights: Sequence[int]) -> tuple[str, ...]:
    """nginx's smooth weighted round-robin over one full cycle."""
    total = sum(weights)
    if total > MAX_ROTATION:
        scale = MAX_ROTATION / total
        weights = [max(1, round(w * scale)) for w in weights]
        total = sum(weights)
    current = [0] * len(names)
    out = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(names)), key=lambda i: current[i])
        current[best] -= total
        out.append(names[best])
    return tuple(out)


def build_plan(
    event: GroupChanged,
    usable_here: Callable[[str], bool],
    waiting: Iterable[str],
    *,
    reads: bool,
    offset: int = 0,
) -> Plan | None:
    """The plan of ``event``'s group given which members are usable here; None: none is."""
    members = [m for m in event.members if not (reads and m.target == event.primary and not event.reads_on_primary)]
    if not members:
        return None
    usable = [m for m in members if usable_here(m.target)]
    if not usable:
        return None
    waiting_set = set(waiting)
    ramp = any(m.target in waiting_set for m in members)
    panic = len(usable) < event.panic_threshold * len(members)
    candidates = members if panic else usable
    policy = event.policy
    if policy == "weighted":
        rotation = _smooth_weighted([m.target for m in candidates], [m.weight for m in candidates])
    elif panic or policy == "round-robin":
        rotation = tuple(m.target for m in candidates)
    elif policy == "primary-first":
        rotation = (candidates[0].target,)
    else:  # least-latency
        known = [m.latency_ms for m in candidates if m.latency_ms is not None]
        if known:
            limit = min(known) * LATENCY_BAND
            rotation = tuple(m.target for m in candidates if m.latency_ms is not None and m.latency_ms <= limit)
        else:
            rotation = tuple(m.target for m in candidates)
    k = offset % len(rotation)
    return Plan(
        rotation=rotation,
        panic=panic,
        usable=tuple(m.target for m in usable),
        ramp=ramp,
        next=itertools.cycle(rotation[k:] + rotation[:k]).__next__,
    )


class GroupTable:
    """Every group's last GroupChanged and its two plans (all work, reads)."""

    __slots__ = ("counters", "groups", "of_member", "plans", "read_plans")

    def __init__(self) -> None:
        self.groups: dict[str, GroupChanged] = {}
        self.plans: dict[str, Plan | None] = {}
        self.read_plans: dict[str, Plan | None] = {}
        self.of_member: dict[str, set[str]] = {}
        self.counters: dict[tuple[str, bool], Iterator[int]] = {}

    def apply(self, event: GroupChanged, usable_here: Callable[[str], bool], waiting: Iterable[str]) -> bool:
        """Take ``event`` in (newer ``seq`` only); True if it was."""
        old = self.groups.get(event.group)
        if old is not None and event.seq <= old.seq:
            return False
        if old is not None:
            for m in old.members:
                self.of_member.get(m.target, set()).discard(event.group)
        for m in event.members:
            self.of_member.setdefault(m.target, set()).add(event.group)
        self.groups[event.group] = event
        self.rebuild((event.group,), usable_here, waiting)
        return True

    def rebuild(self, names: Iterable[str], usable_here: Callable[[str], bool], waiting: Iterable[str]) -> None:
        """Recompute the plans of the groups called ``names``."""
        waiting = tuple(waiting)
        for name in names:
            event = self.groups.get(name)
            if event is None:
                continue
            counter = self.counters.setdefault((name, False), itertools.count())
            self.plans[name] = build_plan(event, usable_here, waiting, reads=False, offset=next(counter))
            if event.primary is None:
                self.read_plans[name] = self.plans[name]
                continue
            counter = self.counters.setdefault((name, True), itertools.count())
            self.read_plans[name] = build_plan(event, usable_here, waiting, reads=True, offset=next(counter))

    def member_changed(self, target: str, usable_here: Callable[[str], bool], waiting: Iterable[str]) -> None:
        """``target``'s availability here may have changed."""
        groups = self.of_member.get(target)
        if groups:
            self.rebuild(tuple(groups), usable_here, waiting)

    def why_not(self, name: str, *, reads: bool) -> str:
        """Why ``pick(name)`` has nothing to give, in words."""
        event = self.groups.get(name)
        if event is None:
            return f"no group {name!r} is known (not configured, or its GroupChanged not received yet)"
        what = "replica (member other than the primary)" if reads and event.primary else "member"
        return f"no {what} of group {name!r} is usable ({event.state}, {event.available}/{len(event.members)} in)"
