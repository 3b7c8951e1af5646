"""StateDigest: every configured target's latest ``seq``, on ``<prefix>.digest`` (core NATS).

The active coordinator publishes one every ``[coordinator] digest_interval`` and at once
when its connection to NATS comes back (docs/contract.md §6c). A subscriber that
reconnects compares it with the seqs it knows and reads from the state stream only the
targets that changed meanwhile: one fan-out message instead of a request per instance.
A subscriber listens on the subject only while it catches up, so the digest costs the
server nothing while the fleet follows live.

A digest may also carry ``events``: the last StateChanged of the targets that changed most
recently (at most :data:`MAX_DIGEST_EVENTS`, each stored in the stream), so a subscriber
that missed only those applies them from the digest and reads nothing at all.

A digest that would not fit in one message (``MAX_MESSAGE_BYTES``: tens of thousands of
targets) is sent as ``parts`` messages, published one after the other, each with the same
``at`` and its ``part`` number and a disjoint share of the targets (:func:`split_digest`);
a reader merges them (:class:`DigestParts`) before it compares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated

import msgspec

from healthbus.protocol._messages import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    StateChanged,
    TargetName,
    Timestamp,
    Version,
    decode_with,
)

Seq = Annotated[int, msgspec.Meta(ge=1)]
PartNumber = Annotated[int, msgspec.Meta(ge=1)]

#: The most ``events`` one digest carries (the targets that changed last).
MAX_DIGEST_EVENTS = 16
#: The most bytes a digest's ``events`` take (the oldest are left out beyond it).
MAX_DIGEST_EVENT_BYTES = MAX_MESSAGE_BYTES // 4


class StateDigest(msgspec.Struct, kw_only=True, frozen=True):
    """The latest ``seq`` of every configured target, as the active coordinator sent them.

    ``seqs`` holds, per target, the highest ``seq`` the coordinator has sent to the state
    stream (stored, or on its way): an event with a higher ``seq`` is sent after this
    digest. Targets that are not configured (retired, or never decided) are absent.
    A digest too large for one message is split: ``parts`` messages with the same ``at``,
    numbered ``part`` 1..``parts``, whose ``seqs`` together are the whole digest.
    """

    at: Timestamp
    """When the coordinator sent it (every part of one digest carries the same)."""
    seqs: dict[TargetName, Seq]
    v: Version = PROTOCOL_VERSION
    part: PartNumber = 1
    """This message's number among the digest's parts (1 when it is not split)."""
    parts: PartNumber = 1
    """How many messages the digest was split into (1: this message is all of it)."""
    events: list[StateChanged] = msgspec.field(default_factory=list)
    """The last StateChanged of some targets (those that changed most recently, oldest
    first), each already stored in the state stream: a reader that lacks one applies it
    instead of reading it. Its ``seq`` may be below the target's in ``seqs`` (a newer one
    is on its way); targets not in ``seqs`` are left out. In part 1 of a split digest."""

    def __post_init__(self) -> None:
        if self.part > self.parts:
            raise ValueError(f"part {self.part} of {self.parts}: expected part <= parts")


_digest_decoder = msgspec.json.Decoder(StateDigest)

# Bytes an encoded StateDigest takes besides its seqs entries (v, at, part, parts, braces),
# with room to spare; each entry is measured exactly.
_ENVELOPE_BYTES = 160


def decode_state_digest(data: bytes | memoryview) -> StateDigest:
    """Decode and validate a StateDigest; ProtocolError says what is wrong."""
    return decode_with(_digest_decoder, data, "StateDigest")


def split_digest(
    at: datetime,
    seqs: Mapping[str, int],
    *,
    limit: int = MAX_MESSAGE_BYTES,
    events: Sequence[StateChanged] = (),
) -> list[StateDigest]:
    """``seqs`` as the StateDigest parts to publish, in order; each encodes to at most ``limit`` bytes.

    One part when it fits (the common case); else as few parts as the greedy packing of the
    targets in name order gives, all with the same ``at``. Targets whose seq is below 1
    (never decided) are left out, as in an unsplit digest. ``events`` (oldest first) go into
    part 1: the last :data:`MAX_DIGEST_EVENTS` of them whose target is in ``seqs``, within
    ``limit // 4`` bytes (the oldest left out first).
    """
    if limit < 2 * _ENVELOPE_BYTES:
        raise ValueError(f"invalid digest part limit {limit!r}: expected at least {2 * _ENVELOPE_BYTES} bytes")
    carried, carried_bytes = digest_events(seqs, events, limit=min(MAX_DIGEST_EVENT_BYTES, limit // 4))
    chunks: list[dict[str, int]] = [{}]
    size = _ENVELOPE_BYTES + carried_bytes
    for target in sorted(seqs):
        seq = seqs[target]
        if seq < 1:
            continue
        entry = len(encode_entry(target, seq))
        if size + entry > limit and chunks[-1]:
            chunks.append({})
            size = _ENVELOPE_BYTES
        chunks[-1][target] = seq
        size += entry
    parts = len(chunks)
    return [
        StateDigest(at=at, seqs=chunk, part=i + 1, parts=parts, events=carried if i == 0 else [])
        for i, chunk in enumerate(chunks)
    ]


def digest_events(
    seqs: Mapping[str, int], events: Sequence[StateChanged], *, limit: int = MAX_DIGEST_EVENT_BYTES
) -> tuple[list[StateChanged], int]:
    """The ``events`` a digest of ``seqs`` carries, oldest first, and the bytes they add.

    The newest :data:`MAX_DIGEST_EVENTS` whose target is in ``seqs`` (with a seq no higher
    than the digest names), as many as fit in ``limit`` bytes.
    """
    out: list[StateChanged] = []
    size = 0
    for event in reversed(events):
        if len(out) >= MAX_DIGEST_EVENTS:
            break
        if not 1 <= event.seq <= seqs.get(event.target, 0):
            continue
        entry = len(msgspec.json.encode(event)) + 1
        if size + entry > limit:
            break
        out.append(event)
        size += entry
    out.reverse()
    return out, (size + len(b',"events":[]') if out else 0)


def encode_entry(target: str, seq: int) -> bytes:
    """The bytes one ``"target":seq,`` entry takes in an encoded digest."""
    return msgspec.json.encode(target) + b":" + str(seq).encode() + b","


class DigestParts:
    """Merges the parts of one StateDigest as they arrive (pure: no I/O).

    :meth:`add` returns the whole digest (one StateDigest, ``parts`` 1) once every part of
    one digest (the same ``at`` and ``parts``) is in; a part of another digest starts over
    with that one (a part was lost, or a newer digest began). ``expected`` is the number of
    parts of the last digest seen (1 before any).
    """

    def __init__(self, expected: int = 1) -> None:
        self.expected = max(1, expected)
        self._key: tuple[datetime, int] | None = None
        self._got: dict[int, dict[str, int]] = {}
        self._events: list[StateChanged] = []

    def add(self, part: StateDigest) -> StateDigest | None:
        """Take one part; the merged digest once complete, else None."""
        self.expected = part.parts
        if part.parts == 1:
            self._key, self._got, self._events = None, {}, []
            return part
        key = (part.at, part.parts)
        if key != self._key:
            self._key, self._got, self._events = key, {}, []
        self._got[part.part] = part.seqs
        self._events.extend(part.events)
        if len(self._got) < part.parts:
            return None
        merged: dict[str, int] = {}
        for number in sorted(self._got):
            merged.update(self._got[number])
        events, self._events = self._events, []
        self._key, self._got = None, {}
        return StateDigest(at=part.at, seqs=merged, v=part.v, events=events)
