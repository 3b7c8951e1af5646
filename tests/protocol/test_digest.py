"""StateDigest parts: a digest too large for one message is split, and merged back (docs/contract.md §6c)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from healthbus.protocol import (
    MAX_DIGEST_EVENTS,
    MAX_MESSAGE_BYTES,
    DigestParts,
    ProtocolError,
    StateChanged,
    StateDigest,
    decode_state_digest,
    encode,
    split_digest,
)

AT = datetime(2026, 12, 6, 5, 0, tzinfo=UTC)


def long_names(n: int) -> dict[str, int]:
    """``n`` targets with names of the longest allowed length (64) and large seqs."""
    return {f"{i:06d}-" + "x" * 57: 10_000_000 + i for i in range(n)}


def test_a_small_digest_is_one_message_as_before() -> None:
    """Few targets: one part, 1 of 1, and the wire form an older reader accepts."""
    (part,) = split_digest(AT, {"a": 3, "b": 5, "never": 0})
    assert (part.part, part.parts, part.seqs) == (1, 1, {"a": 3, "b": 5})
    old_reader = decode_state_digest(encode(part))
    assert old_reader == part


def test_fifty_thousand_targets_split_into_parts_that_each_fit() -> None:
    """50,000 targets with 64-character names: every part ≤ 64 KiB and decodable, together all of them."""
    seqs = long_names(50_000)
    parts = split_digest(AT, seqs)
    assert len(parts) > 1
    assert [p.part for p in parts] == list(range(1, len(parts) + 1))
    assert {p.parts for p in parts} == {len(parts)}
    assert {p.at for p in parts} == {AT}
    merged: dict[str, int] = {}
    for part in parts:
        data = encode(part)
        assert len(data) <= MAX_MESSAGE_BYTES
        assert decode_state_digest(data) == part
        assert not merged.keys() & part.seqs.keys()  # disjoint
        merged.update(part.seqs)
    assert merged == seqs
    # Greedy packing: no part but the last could have taken the next part's first target.
    sizes = [len(encode(p)) for p in parts]
    assert min(sizes[:-1]) > MAX_MESSAGE_BYTES - 200


def test_parts_merge_in_any_order_and_only_within_one_digest() -> None:
    """The merge returns the whole digest once every part of one digest is in; another digest's part starts over."""
    seqs = long_names(3_000)
    parts = split_digest(AT, seqs)
    later = split_digest(AT + timedelta(seconds=1), {**seqs, min(seqs): 1})
    assert len(parts) == len(later) >= 3
    merger = DigestParts()
    assert merger.expected == 1
    assert merger.add(parts[1]) is None
    assert merger.expected == len(parts)
    assert merger.add(later[0]) is None  # another digest: starts over with it
    for part in parts[2:] + parts[:1]:
        assert merger.add(part) is None  # later[0] was dropped with the restart, parts[1] too
    assert merger.add(parts[1]) is not None  # reordered, but now every part of `parts` is in
    for part in reversed(later):
        whole = merger.add(part)
    assert whole is not None
    assert (whole.seqs, whole.at, whole.part, whole.parts) == ({**seqs, min(seqs): 1}, AT + timedelta(seconds=1), 1, 1)


def test_a_part_beyond_parts_is_refused() -> None:
    with pytest.raises(ProtocolError, match="part 3 of 2"):
        decode_state_digest(b'{"v":1,"at":"2026-12-06T05:00:00Z","seqs":{},"part":3,"parts":2}')
    with pytest.raises(ProtocolError):
        decode_state_digest(b'{"v":1,"at":"2026-12-06T05:00:00Z","seqs":{},"part":0,"parts":2}')
    with pytest.raises(ValueError, match="expected part <= parts"):
        StateDigest(at=AT, seqs={}, part=2, parts=1)


def _event(target: str, seq: int, reason: str = "probe failed") -> StateChanged:
    return StateChanged(
        target=target, seq=seq, at=AT, previous="healthy", state="unavailable", breaker="open", reason=reason
    )


def test_a_digest_carries_the_newest_stored_events_of_its_targets() -> None:
    """``events``: the newest MAX_DIGEST_EVENTS, oldest first, of targets the digest names with
    a seq no lower; in part 1 only; every part still fits; an older reader ignores them."""
    seqs = {f"t{i:02d}": 5 for i in range(40)}
    events = [_event(f"t{i:02d}", 5) for i in range(40)]
    events += [_event("retired", 3), _event("t00", 6)]  # not configured; newer than the digest says
    (part,) = split_digest(AT, seqs, events=events)
    assert [e.target for e in part.events] == [f"t{i:02d}" for i in range(40 - MAX_DIGEST_EVENTS, 40)]
    assert decode_state_digest(encode(part)) == part
    big = long_names(3_000)
    parts = split_digest(AT, big, events=[_event(name, seq) for name, seq in list(big.items())[-20:]])
    assert len(parts[0].events) == MAX_DIGEST_EVENTS
    assert all(p.events == [] for p in parts[1:])
    assert all(len(encode(p)) <= MAX_MESSAGE_BYTES for p in parts)
    merger = DigestParts()
    for p in parts:
        whole = merger.add(p)
    assert whole is not None
    assert (whole.seqs, whole.events) == (big, parts[0].events)


def test_the_events_a_digest_carries_are_bounded_in_bytes() -> None:
    """Long events: the oldest are left out, so they never take more than a quarter of a message."""
    seqs = {f"t{i}": 1 for i in range(MAX_DIGEST_EVENTS)}
    events = [_event(f"t{i}", 1, reason="r" * 3_000) for i in range(MAX_DIGEST_EVENTS)]
    (part,) = split_digest(AT, seqs, events=events)
    assert 0 < len(part.events) < MAX_DIGEST_EVENTS
    assert part.events == events[-len(part.events) :]
    assert sum(len(encode(e)) + 1 for e in part.events) <= MAX_MESSAGE_BYTES // 4
    assert split_digest(AT, seqs, events=events, limit=1_000)[0].events == []  # none fits a tiny part
