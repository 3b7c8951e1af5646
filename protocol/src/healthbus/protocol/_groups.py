"""Groups of targets on the wire: ``GroupChanged`` (docs/contract.md §4a, extension).

A group is several instances (targets) of one dependency (``[[groups]]`` in the
configuration). The coordinator publishes a ``GroupChanged`` on ``<prefix>.group.<group>``
(JetStream, the state stream) when the group's state changes, when a member comes in or
goes out, and when a member's recent latency moved markedly. Each message is the whole
picture (definition, every member, latencies), so a reader needs only the last one.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeAlias

import msgspec

from healthbus.protocol._config import GroupPolicy
from healthbus.protocol._messages import (
    PROTOCOL_VERSION,
    NonNegative,
    State,
    TargetName,
    Timestamp,
    Version,
    _check_subject,
    decode_with,
)

GroupState: TypeAlias = Literal["unknown", "healthy", "degraded", "unavailable"]
GROUP_STATES: Final[tuple[GroupState, ...]] = ("unknown", "healthy", "degraded", "unavailable")
Share = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


def group_state(available: int, min_healthy: int) -> GroupState:
    """``healthy`` with at least ``min_healthy`` members in, ``degraded`` below, ``unavailable`` at 0."""
    if available <= 0:
        return "unavailable"
    return "healthy" if available >= min_healthy else "degraded"


class GroupMember(msgspec.Struct, kw_only=True, frozen=True):
    """One member of a group as the coordinator sees it."""

    target: TargetName
    state: State
    """The member's own state (its last StateChanged)."""
    available: bool
    """In (``healthy`` or ``degraded``) or out."""
    latency_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None
    """Recent check latency (moving average of passing checks); None before the first."""
    weight: Annotated[int, msgspec.Meta(ge=1)] = 1


class GroupChanged(msgspec.Struct, kw_only=True, frozen=True):
    """A group's state and members (``<prefix>.group.<group>``, JetStream).

    ``seq`` is per group, starts at 1 and grows by one per message; a reader keeps the
    message with the highest ``seq``.
    """

    group: TargetName
    seq: Annotated[int, msgspec.Meta(ge=1)]
    at: Timestamp
    previous: GroupState
    state: GroupState
    policy: GroupPolicy
    members: list[GroupMember]
    available: NonNegative
    """How many members are in."""
    min_healthy: Annotated[int, msgspec.Meta(ge=1)] = 1
    panic_threshold: Share = 0.0
    primary: TargetName | None = None
    reads_on_primary: bool = False
    reason: str = ""
    v: Version = PROTOCOL_VERSION

    @property
    def msg_id(self) -> str:
        """The ``Nats-Msg-Id`` header value: ``group:<group>:<seq>``."""
        return f"group:{self.group}:{self.seq}"


_group_decoder = msgspec.json.Decoder(GroupChanged)


def decode_group_changed(data: bytes | memoryview, *, subject_group: str | None = None) -> GroupChanged:
    """Decode and validate a GroupChanged; ``subject_group`` must match its ``group``."""
    event = decode_with(_group_decoder, data, "GroupChanged")
    _check_subject("GroupChanged", event.group, subject_group)
    return event
