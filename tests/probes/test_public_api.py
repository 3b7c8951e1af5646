"""The public surface of healthbus.probes and the WorkerHeartbeat wire message."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

import healthbus.probes
from healthbus.protocol import ProtocolError, WorkerHeartbeat, decode_worker_heartbeat, encode, worker_token


def test_exports_are_importable_and_documented() -> None:
    """Every name in __all__ exists and has a docstring."""
    for name in healthbus.probes.__all__:
        obj = getattr(healthbus.probes, name)
        assert obj.__doc__, name


def test_heartbeat_round_trip() -> None:
    """A WorkerHeartbeat encodes to JSON and decodes back unchanged."""
    beat = WorkerHeartbeat(worker="host-1.example:42", at=datetime(2026, 1, 1, tzinfo=UTC), heartbeat_s=2.0, targets=3)
    data = encode(beat)
    assert msgspec.json.decode(data)["v"] == 1
    assert decode_worker_heartbeat(data) == beat


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"worker": "", "at": "2026-01-01T00:00:00Z", "heartbeat_s": 2}',
        b'{"worker": "w", "at": "2026-01-01T00:00:00", "heartbeat_s": 2}',
        b'{"worker": "w", "at": "2026-01-01T00:00:00Z", "heartbeat_s": 0}',
        b"{" + b" " * 70000 + b"}",
    ],
)
def test_bad_heartbeats_are_rejected(data: bytes) -> None:
    """Invalid, naive-time, zero-period or oversized heartbeats raise ProtocolError."""
    with pytest.raises(ProtocolError):
        decode_worker_heartbeat(data)


def test_worker_token_is_one_nats_token() -> None:
    """A worker id becomes a single subject token."""
    assert worker_token("host-1.example:42") == "host-1_example_42"
    assert worker_token("w1") == "w1"
    assert worker_token("") == "_"
