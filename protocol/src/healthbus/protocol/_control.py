"""Operator control messages on ``<prefix>.ctl.<command>`` (request/reply).

Commands: ``force-open`` (the target is announced unavailable until reset),
``maintenance`` (the same for ``duration_s`` seconds: a planned outage that ends by
itself; the events carry its end as ``retry_at``, so probe workers hold off until then),
``disable`` (the coordinator stops deciding; the target is announced unknown), ``reset``
(clear overrides and backoff, decide afresh), ``status`` (read-only: the coordinator's
current StateChanged for the target) and ``reload`` (no target, the body is ignored: the
coordinator re-reads its configuration file and tells the standbys and probe workers to
re-read theirs). The request names the target and, for the audit log, a reason; the reply
says whether the command was applied and carries the StateChanged it produced (or, for
``status`` and no-op commands, the current one).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeAlias

import msgspec

from healthbus.protocol._messages import (
    PROTOCOL_VERSION,
    StateChanged,
    TargetName,
    Version,
    decode_with,
)

ControlCommand: TypeAlias = Literal["force-open", "disable", "reset", "status", "maintenance", "reload"]
CONTROL_COMMANDS: Final[tuple[ControlCommand, ...]] = (
    "force-open",
    "disable",
    "reset",
    "status",
    "maintenance",
    "reload",
)
#: The longest maintenance window a request may ask for (seconds): a year.
MAX_MAINTENANCE_S: Final = 366 * 86400.0


class ControlRequest(msgspec.Struct, kw_only=True, frozen=True):
    """Body of a request on ``<prefix>.ctl.<command>``."""

    target: TargetName
    reason: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    duration_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_MAINTENANCE_S)] | None = None
    """``maintenance`` only: how long the window lasts, in seconds (extension)."""
    v: Version = PROTOCOL_VERSION


class ControlReply(msgspec.Struct, kw_only=True, frozen=True):
    """The coordinator's answer. ``ok`` False comes with ``error`` saying why."""

    ok: bool
    error: str | None = None
    event: StateChanged | None = None
    """The StateChanged the command produced, else the target's current one (if any)."""
    v: Version = PROTOCOL_VERSION


_request_decoder = msgspec.json.Decoder(ControlRequest)
_reply_decoder = msgspec.json.Decoder(ControlReply)


def decode_control_request(data: bytes | memoryview) -> ControlRequest:
    """Decode and validate a ControlRequest; ProtocolError says what is wrong."""
    return decode_with(_request_decoder, data, "ControlRequest")


def decode_control_reply(data: bytes | memoryview) -> ControlReply:
    """Decode and validate a ControlReply; ProtocolError says what is wrong."""
    return decode_with(_reply_decoder, data, "ControlReply")
