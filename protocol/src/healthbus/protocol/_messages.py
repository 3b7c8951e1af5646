"""The wire messages (contract: docs/contract.md).

Every message is a msgspec Struct encoded as UTF-8 JSON with a version field ``v``.
Timestamps are timezone-aware ``datetime`` values on the Python side and RFC 3339 UTC
strings on the wire. Decoding validates types, enums and the target-name rule; a
message that fails any of them raises :class:`ProtocolError` and is never half-used.

Unknown fields are ignored on decode, so newer senders can add fields without breaking
older receivers (the contract grows only by adding).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, Literal, TypeAlias, TypeVar

import msgspec

from healthbus.protocol._subjects import TARGET_PATTERN

PROTOCOL_VERSION: Final = 1

#: Largest message, in bytes, any healthbus component accepts. Larger ones are dropped
#: unread: they can only be mistakes or abuse, and decoding them costs memory.
MAX_MESSAGE_BYTES: Final = 64 * 1024

Outcome: TypeAlias = Literal["pass", "warn", "fail"]
ErrorKind: TypeAlias = Literal[
    "timeout", "refused", "dns", "auth", "tls", "protocol", "unhealthy", "no_new_connections", "other"
]
State: TypeAlias = Literal["unknown", "healthy", "degraded", "unavailable", "recovering"]
BreakerState: TypeAlias = Literal["closed", "open", "half_open", "forced_open", "disabled"]
DetailValue: TypeAlias = str | int | float | bool

OUTCOMES: Final[tuple[Outcome, ...]] = ("pass", "warn", "fail")
ERROR_KINDS: Final[tuple[ErrorKind, ...]] = (
    "timeout",
    "refused",
    "dns",
    "auth",
    "tls",
    "protocol",
    "unhealthy",
    "no_new_connections",
    "other",
)
STATES: Final[tuple[State, ...]] = ("unknown", "healthy", "degraded", "unavailable", "recovering")
BREAKER_STATES: Final[tuple[BreakerState, ...]] = (
    "closed",
    "open",
    "half_open",
    "forced_open",
    "disabled",
)
#: Breaker states that hold a target: nobody checks it before the event's ``retry_at``
#: (probe workers wait, the coordinator sends no confirmation round).
HOLDING_BREAKERS: Final[frozenset[BreakerState]] = frozenset({"open", "forced_open"})

TargetName = Annotated[str, msgspec.Meta(pattern=TARGET_PATTERN)]
# A probe id is free text chosen by the operator (default host name + pid); bound it.
ProbeId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
Version = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class ProtocolError(ValueError):
    """A message that is not valid healthbus wire format. The text says why."""


# gc=False on the wire structs: they hold strings, numbers, datetimes and containers of
# those, so they are in no reference cycle; a coordinator decodes tens of thousands of
# ProbeResults a second and keeps every target's last StateChanged with its Evidence, and
# each object the garbage collector tracks costs 16 bytes and counts towards a collection.


class ProbeResult(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """One check of one target from one vantage point (``<prefix>.probe.<target>``)."""

    target: TargetName
    probe: ProbeId
    outcome: Outcome
    latency_ms: Annotated[float, msgspec.Meta(ge=0)]
    observed_at: Timestamp
    error_kind: ErrorKind | None = None
    error: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    details: dict[str, DetailValue] = msgspec.field(default_factory=dict)
    v: Version = PROTOCOL_VERSION


class Evidence(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """The latest result of one vantage point that led to a decision."""

    outcome: Outcome
    error_kind: ErrorKind | None
    at: Timestamp


class Ramp(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A re-admission in progress (extension): what every subscriber needs to compute its
    own place in it (docs/contract.md, "The re-admission ramp").

    The admitted share of the fleet grows linearly from ``from_share`` at ``started_at``
    to 1 at ``started_at + duration_s``; an instance whose place (a hash of its instance
    id and the target, :func:`healthbus.protocol.ramp_place`) is below the share is
    admitted, and stays admitted.
    """

    started_at: Timestamp
    """When the breaker closed (the coordinator's clock)."""
    duration_s: Annotated[float, msgspec.Meta(gt=0)]
    from_share: Annotated[float, msgspec.Meta(ge=0, le=1)]
    readmission: Annotated[int, msgspec.Meta(ge=1)] = 1
    """Which re-admission of this outage this is (1: the first; more after failed ones)."""


class StateChanged(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A coordinator verdict for one target (``<prefix>.state.<target>``, JetStream).

    ``seq`` is per target, starts at 1 and grows by exactly one per event, across
    coordinator restarts and failovers.
    """

    target: TargetName
    seq: Annotated[int, msgspec.Meta(ge=1)]
    at: Timestamp
    previous: State
    state: State
    breaker: BreakerState
    reason: str
    failures: NonNegative = 0
    attempt: NonNegative = 0
    retry_at: Timestamp | None = None
    features: list[str] = msgspec.field(default_factory=list)
    evidence: dict[str, Evidence] = msgspec.field(default_factory=dict)
    flapping: bool = False
    """True while flap detection holds the target (too many state changes lately)."""
    unchanged_since: Timestamp | None = None
    """Set on a refresh: the unchanged state, decided at this time, is re-announced so the
    stream keeps it (``reason`` repeats why it was decided). None on a real change."""
    ramp: Ramp | None = None
    """Set while a re-admission ramp is in progress (breaker ``closed``, extension): see
    :class:`Ramp`. None otherwise: every instance is admitted."""
    retired: bool = False
    """True on the one event announcing that the target left the configuration (extension):
    readers drop it from their current states; a coordinator never decides it again."""
    coordinator: str | None = None
    """Who stored it (extension): the id of the coordinator that published it (its lease
    holder id, ``<host>-<pid>`` by default). None from coordinators before this field."""
    term: NonNegative | None = None
    """Under which lease (extension): the revision of the leader lease key when that
    coordinator took it, which grows with every takeover; 0 without election. None from
    coordinators before this field."""
    v: Version = PROTOCOL_VERSION

    @property
    def msg_id(self) -> str:
        """The ``Nats-Msg-Id`` header value that makes re-publishing idempotent."""
        return f"{self.target}:{self.seq}"


_M = TypeVar("_M", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()
_probe_decoder = msgspec.json.Decoder(ProbeResult)
_state_decoder = msgspec.json.Decoder(StateChanged)


def encode(message: msgspec.Struct) -> bytes:
    """Encode a wire message (ProbeResult, StateChanged, control messages) to JSON bytes."""
    return _encoder.encode(message)


def decode_with(decoder: msgspec.json.Decoder[_M], data: bytes | memoryview, name: str) -> _M:
    """Decode ``data`` with ``decoder``: size-checked, every failure a :class:`ProtocolError`.

    The one decoding path of every wire message (``name`` says which, in the error).
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"invalid {name}: {exc}") from None


def _check_subject(name: str, target: str, subject_target: str | None) -> None:
    if subject_target is not None and target != subject_target:
        raise ProtocolError(f"invalid {name}: target {target!r} does not match subject token {subject_target!r}")


def decode_probe_result(data: bytes | memoryview, *, subject_target: str | None = None) -> ProbeResult:
    """Decode and validate a ProbeResult.

    ``subject_target`` is the target token of the subject the message arrived on; a
    message whose ``target`` differs is rejected (it would let one target's results be
    filed under another).
    """
    result = decode_with(_probe_decoder, data, "ProbeResult")
    _check_subject("ProbeResult", result.target, subject_target)
    return result


def decode_state_changed(data: bytes | memoryview, *, subject_target: str | None = None) -> StateChanged:
    """Decode and validate a StateChanged (see :func:`decode_probe_result`)."""
    event = decode_with(_state_decoder, data, "StateChanged")
    _check_subject("StateChanged", event.target, subject_target)
    return event


def utcnow() -> datetime:
    """The current wall-clock time, timezone-aware UTC (for timestamps on the wire)."""
    return datetime.now(UTC)


def format_timestamp(ts: datetime) -> str:
    """RFC 3339 UTC text of a timestamp, as it appears on the wire."""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp; naive input is taken as UTC."""
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}") from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def is_refresh(event: StateChanged) -> bool:
    """Whether ``event`` re-announces an unchanged state (a refresh: ``unchanged_since``
    set) rather than a change."""
    return event.unchanged_since is not None


def refresh_origin(event: StateChanged) -> tuple[datetime, str] | None:
    """For a refresh, when its state was really decided (``unchanged_since``) and why
    (``reason``); None for a real change."""
    if event.unchanged_since is None:
        return None
    return event.unchanged_since, event.reason
